"""`bpftools lab`: build common topologies in namespaces, break them, fix them."""
from __future__ import annotations

from typing import Optional

import click

from .output import emit_json, say, table


@click.group()
def lab() -> None:
    """Namespace topologies (bpftlab-*) to break and diagnose: list, up, break, fix, down."""


@lab.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per topology.")
def list_(as_json: bool) -> None:
    """Topologies, their faults, and which are up."""
    from ..lab import status

    rows = status()
    if as_json:
        for row in rows:
            emit_json({"type": "lab", **row})
        return
    say(table(["TOPOLOGY", "STATE", "FAULTS", "PING"],
                     [(r["topology"], ("broken: " + ",".join(r["broken"])) if r["broken"] else
                       ("up" if r["up"] else "down"), " ".join(r["faults"]), r["ping"]) for r in rows]))


@lab.command()
@click.argument("name")
def up(name: str) -> None:
    """Build topology NAME (rebuilt from scratch if it exists) and check its ping works."""
    from ..kernel.privileges import require_privileges
    from ..lab import namespaces_of, up as lab_up

    require_privileges()
    topo = lab_up(name)
    say(f"lab {name} is up: {', '.join(namespaces_of(name))}")
    say(f"  {topo.summary}")
    say(f"  try: {topo.ping_command()}")
    if 6 in topo.families:
        say(f"       {topo.ping_command(family=6)}")
    if topo.starts_broken:
        say(f"  it starts broken, as this setup usually is ({topo.starts_broken}): "
                   f"{topo.diagnose_command()}; "
                   f"`bpftools lab fix {name}` repairs it")
    say(f"  break it: bpftools lab break {name} FAULT   (FAULT: {', '.join(topo.faults)})")


@lab.command("break")
@click.argument("name")
@click.argument("fault")
@click.option("-6", "ipv6", is_flag=True, help="Break the IPv6 path instead (the fault's IPv6 counterpart).")
def break_(name: str, fault: str, ipv6: bool) -> None:
    """Inject FAULT (a diagnose cause name) into topology NAME."""
    from ..kernel.privileges import require_privileges
    from ..lab import break_ as lab_break, topology

    require_privileges()
    family = 6 if ipv6 else 4
    f = lab_break(name, fault, family)
    topo = topology(name)
    say(f"lab {name}: broke it ({fault}{' (IPv6)' if ipv6 else ''}: {f.summary})")
    say(f"  diagnose: {topo.diagnose_command(fault, family)}")


@lab.command()
@click.argument("name")
def fix(name: str) -> None:
    """Undo every fault injected into topology NAME."""
    from ..kernel.privileges import require_privileges
    from ..lab import fix as lab_fix

    require_privileges()
    undone = lab_fix(name)
    say(f"lab {name}: " + (f"undid {', '.join(undone)}" if undone else "nothing to undo"))


@lab.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Every lab topology (every bpftlab-* namespace).")
def down(name: Optional[str], all_: bool) -> None:
    """Remove topology NAME, or everything the lab made with --all."""
    from ..kernel.privileges import require_privileges
    from ..lab import down as lab_down

    require_privileges()
    if not name and not all_:
        raise click.UsageError("name a topology or give --all")
    removed = lab_down(None if all_ else name)
    say(f"removed {len(removed)} namespace(s)" + (f": {', '.join(removed)}" if removed else ""))


def register(cli: click.Group) -> None:
    cli.add_command(lab)
