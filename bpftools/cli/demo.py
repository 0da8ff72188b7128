"""`bpftools demo`: a throwaway network where a ping fails, traced live, then removed."""
from __future__ import annotations

import click

from .output import table


@click.command()
def demo() -> None:
    """Why does this ping fail? Build a small namespace network, break it twice (iptables FORWARD
    policy DROP, strict rp_filter with an asymmetric route), show each drop with the kernel's
    reason and a hint, fix it, and remove everything."""
    from ..attach import terminate_gracefully
    from ..demo import run_demo
    from ..kernel.privileges import require_privileges

    require_privileges()
    with terminate_gracefully():
        rows = run_demo(lambda text: click.echo(text))
    click.echo("\ndrops seen (counted in the kernel):")
    click.echo(table(["NETNS", "IFACE", "REASON", "COUNT"],
                     [(r.netns, r.ifname or f"if{r.ifindex}", r.reason, r.count) for r in rows]))
    click.echo("network removed.")


def register(cli: click.Group) -> None:
    cli.add_command(demo)
