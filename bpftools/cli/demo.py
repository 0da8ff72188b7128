"""`bpftools demo`: failing pings, diagnosed and fixed on throwaway lab namespaces."""
from __future__ import annotations

import sys

import click

from .output import say


@click.command()
def demo() -> None:
    """Why does this ping fail? Build lab networks, break each in a way users often hit (strict
    rp_filter with an asymmetric route; Docker's FORWARD DROP on bridged traffic; a host and its
    macvlan container; a firewall dropping a VXLAN overlay's tunnel port), diagnose it, apply the
    diagnosis' fix, ping again, and remove everything."""
    from ..attach import terminate_gracefully
    from ..demo import run_demo
    from ..kernel.privileges import require_privileges

    require_privileges()
    with terminate_gracefully():
        ok = run_demo(say)
    say("\nlab networks removed.")
    sys.exit(0 if ok else 1)


def register(cli: click.Group) -> None:
    cli.add_command(demo)
