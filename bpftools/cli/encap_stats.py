"""`bpftools encap-stats`: tunnel traffic per interface, direction and type."""
from __future__ import annotations

import sys
from typing import List, Optional, Tuple

import click

from ..attach import terminate_gracefully
from ..encap_stats import INGRESS_HOOKS, UDP_TYPES, EncapStats, parse_udp_port, udp_port_table
from ..kernel.privileges import require_privileges
from ..rates import human
from ..netlink import resolve_interface, select_netns
from ..runloop import RunLoop
from .output import (announce_ready, checked_ifnames, duration_option, emit_json, interval_option, netns_option, say,
                     table)

CLEAR_SCREEN = "\033[H\033[2J"


@click.command("encap-stats")
@click.argument("ifaces", metavar="IFACE...", nargs=-1, required=True, callback=checked_ifnames)
@netns_option("Namespace of the interfaces")
@click.option("--ingress-hook", type=click.Choice(INGRESS_HOOKS), default="tc", show_default=True,
              help="Count ingress with tc (sees what XDP-less paths see) or XDP.")
@click.option("--udp-port", "udp_ports", multiple=True, metavar="TYPE=PORT",
              help=f"Extra UDP destination port for a type ({', '.join(UDP_TYPES)}); repeatable.")
@click.option("--top", type=click.IntRange(min=0), default=0, metavar="N",
              help="Also show the N busiest outer (src, dst) endpoint pairs per type.")
@interval_option(1.0)
@duration_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (fields: docs/encap-stats.md).")
def encap_stats(ifaces: Tuple[str, ...], netns: Optional[str], ingress_hook: str, udp_ports: Tuple[str, ...],
                top: int, interval: float, duration: Optional[float], as_json: bool) -> None:
    """Count encapsulated packets and bytes (ipip, sit, GRE, VXLAN, GENEVE, ...) on IFACE..."""
    require_privileges()
    ports = udp_port_table(parse_udp_port(spec) for spec in udp_ports)
    where = select_netns(netns)
    interfaces = [resolve_interface(name, where) for name in ifaces]
    report = _print_json if as_json else _print_table
    with terminate_gracefully(), EncapStats(interfaces, ingress_hook, ports, top) as stats:
        with RunLoop(interval, duration) as loop:
            announce_ready(f"counting encapsulated traffic on {', '.join(i.describe() for i in interfaces)} "
                           f"(ingress {ingress_hook}, egress tc)")
            for _now in loop:
                report(stats.snapshot())
            report(stats.snapshot(whole_run=True))  # final totals (rates: the run's average), always


def _print_json(rows: List[dict]) -> None:
    for row in rows:
        emit_json(row)


TOTALS_AND_RATES = ("PACKETS", "BYTES", "PKT/S", "BIT/S")


def _totals_and_rates(row: dict) -> tuple:
    return row["packets"], row["bytes"], human(row["packets_per_second"]), human(row["bits_per_second"])


def _print_table(rows: List[dict]) -> None:
    counters = [r for r in rows if r["type"] == "encap"]
    pairs = [r for r in rows if r["type"] == "top"]
    text = table(["NETNS", "IFACE", "DIR", "ENCAP", *TOTALS_AND_RATES],
                 [(r["netns"], r["ifname"], r["direction"], r["encap"], *_totals_and_rates(r)) for r in counters])
    if pairs:
        text += "\n\n" + table(["ENCAP", "RANK", "SRC", "DST", *TOTALS_AND_RATES],
                               [(r["encap"], r["rank"], r["src"], r["dst"], *_totals_and_rates(r)) for r in pairs])
    if sys.stdout.isatty():
        click.echo(CLEAR_SCREEN, nl=False)
    say(text + ("" if sys.stdout.isatty() else "\n"))


def register(cli: click.Group) -> None:
    cli.add_command(encap_stats)
