"""`bpftools doctor` and `bpftools mount`."""
from __future__ import annotations

import click

from ..doctor import collect_report, format_report
from ..kernel.mounts import ensure_all_mounted
from ..kernel.privileges import require_privileges
from .output import emit_json, say


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--load-modules", is_flag=True,
              help="Also probe tunnel types whose module is not loaded (loading it: tunl0, sit0, gre0 appear).")
@click.option("--fix", is_flag=True, help="Mount what is missing and load tunnel modules to probe them; says what it changed.")
def doctor(as_json: bool, load_modules: bool, fix: bool) -> None:
    """Probe what this kernel supports and what each capability needs; changes nothing unless asked."""
    require_privileges()
    report = collect_report(fix=fix, load_modules=load_modules)
    if as_json:
        emit_json(report)
    else:
        say(format_report(report))


@click.command()
def mount() -> None:
    """Mount tracefs, debugfs, bpffs and securityfs where missing."""
    require_privileges()
    for point, state in ensure_all_mounted().items():
        say(f"{point}: {state}")


def register(cli: click.Group) -> None:
    cli.add_command(doctor)
    cli.add_command(mount)
