"""`bpftools diagnose ping DST`: why does this ping fail, and how to fix it."""
from __future__ import annotations

import sys
from typing import Optional

import click

from ..errors import BpftoolsError
from .output import checked_iface_or_address, emit_json, netns_option, say

EXIT_USAGE = 3


class _Exit3Command(click.Command):
    """Usage errors exit 3 here: 1 and 2 mean "unreachable" to scripts."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except (click.UsageError, BpftoolsError) as exc:  # BpftoolsError: a name no interface can have
            exc.exit_code = EXIT_USAGE
            raise


@click.group()
def diagnose() -> None:
    """Say why a ping fails, and how to fix it."""


@diagnose.command("ping", cls=_Exit3Command)
@click.argument("dst")
@netns_option("Namespace to ping from")
@click.option("--count", default=3, show_default=True, type=int, help="Echo requests to send.")
@click.option("--timeout", default=2.0, show_default=True, type=float, help="Seconds to wait for each reply.")
@click.option("--size", "payload", default=56, show_default=True, type=click.IntRange(0, 65507),
              help="ICMP payload bytes (as ping -s).")
@click.option("-I", "--interface", "interface", metavar="IFACE|ADDR", callback=checked_iface_or_address,
              help="As ping -I: send from this interface (SO_BINDTODEVICE) or this source address.")
@click.option("--source", metavar="ADDR", help="Source address of the echo requests (an address of the namespace).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--record", type=click.Path(dir_okay=False, writable=True),
              help="Also write the namespace state the walk saw to this JSON file (for bug reports).")
def ping(dst: str, netns: Optional[str], count: int, timeout: float, payload: int, interface: Optional[str],
         source: Optional[str], as_json: bool, record: Optional[str]) -> None:
    """Walk the path to DST (both directions) checking every hop, ping it while tracing drops, and
    name the causes with fix commands. Exit 0 reachable, 1 cause found, 2 cause unknown, 3 error."""
    from ..attach import terminate_gracefully
    from ..diagnose import UsageProblem, diagnose_ping, exit_status, story
    from ..kernel.privileges import require_privileges

    try:
        require_privileges()
        with terminate_gracefully():  # SIGTERM/SIGHUP unwind: tracers and counters detach
            result = diagnose_ping(dst, netns, count, timeout, payload, record=record, interface=interface,
                                   source=source)
    except BpftoolsError as exc:
        raise UsageProblem(str(exc)) from None
    if as_json:
        emit_json(result.to_json())
    else:
        say(story(result))
    sys.exit(exit_status(result))


def register(cli: click.Group) -> None:
    cli.add_command(diagnose)
