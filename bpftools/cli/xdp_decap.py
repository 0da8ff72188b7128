"""`bpftools xdp-decap`: ipip / 6in4 decapsulation in XDP, only from allow-listed senders."""
from __future__ import annotations

import math
import shlex
import time
from typing import Optional, Tuple

import click

from ..kernel.privileges import require_privileges
from ..runloop import RunLoop
from .output import announce_ready, checked_ifnames, duration_option, emit_json, interval_option, netns_option, say

NEIGHBOUR_REFRESH = 1.0  # seconds between copies of the neighbour table into the redirect map


def counters_line(counters: dict, netns: Optional[str] = None, ifname: Optional[str] = None) -> str:
    where = [f"netns={shlex.quote(netns)}"] if netns else []
    where += [f"iface={ifname}"] if ifname else []
    return " ".join(where + [f"{name}={value}" for name, value in counters.items()])


@click.command("xdp-decap")
@click.argument("iface", callback=checked_ifnames)
@netns_option()
@click.option("--allow-remote", "allow_remote", multiple=True, metavar="CIDR",
              help="Outer source addresses allowed to tunnel to us (repeatable).")
@click.option("--allow-any", is_flag=True, help="Decapsulate from any sender (open decapsulation, CVE-2020-10136).")
@click.option("--local", "local", multiple=True, metavar="ADDR",
              help="Outer destination addresses to accept (repeatable); default: IFACE's addresses.")
@click.option("--redirect", metavar="IFACE2", callback=checked_ifnames,
              help="Send decapsulated packets out of IFACE2 (same namespace).")
@click.option("--dst-mac", metavar="MAC", help="With --redirect: destination MAC (default: IFACE2's neighbours).")
@click.option("--route", is_flag=True, help="Forward decapsulated packets with the kernel FIB (bpf_fib_lookup).")
@click.option("--mode", type=click.Choice(["native", "generic"]), help="XDP mode (default: the kernel's choice).")
@click.option("--force", is_flag=True, help="Replace an XDP program already attached to IFACE.")
@interval_option(5.0, "counter lines")
@duration_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line; the last holds the totals.")
def xdp_decap(iface: str, netns: Optional[str], allow_remote: Tuple[str, ...], allow_any: bool,
              local: Tuple[str, ...], redirect: Optional[str], dst_mac: Optional[str], route: bool,
              mode: Optional[str], force: bool, interval: float, duration: Optional[float], as_json: bool) -> None:
    """Decapsulate IPv4/IPv6-in-IP packets arriving on IFACE, in XDP.

    Only packets from an --allow-remote sender to one of IFACE's addresses (or --local) are
    decapsulated; the inner packet goes to the stack, out of --redirect IFACE2, or wherever
    --route's FIB lookup says. Everything else passes untouched and is counted.
    """
    from .. import xdp_decap as decap
    from ..attach import terminate_gracefully
    from ..netlink import netns_label, resolve_interface, select_netns

    if redirect and route:
        raise click.UsageError("--redirect and --route exclude each other")
    allow = decap.parse_networks(allow_remote, allow_any)
    local_addrs = decap.parse_addresses(local)
    if dst_mac:
        decap.parse_mac(dst_mac)
    require_privileges()
    target = resolve_interface(iface, select_netns(netns))
    config, redirect_iface = decap.config_for(target, allow, local_addrs, redirect, route, dst_mac)
    label = netns_label(target.netns_inode)

    def report(counters: dict, final: bool) -> None:
        if as_json:
            emit_json({"type": "decap", "ts": round(time.time(), 3), "netns": label,
                       "netns_inode": target.netns_inode, "ifname": target.ifname,
                       **counters, "final": final})
        else:
            say(("total: " if final else "") + counters_line(counters, label, target.ifname))

    with terminate_gracefully(), decap.XdpDecap(target, config, mode, force, redirect_iface) as running:
        for note in running.notes:
            say(f"bpftools: {note}", err=True)
        where = f"out of {redirect}" if redirect else "by FIB lookup" if route else "to the stack"
        # Report every `interval` in steps of at most a second: neighbours learnt meanwhile
        # reach the redirect map within one.
        steps_per_report = math.ceil(interval / NEIGHBOUR_REFRESH)
        with RunLoop(interval / steps_per_report, duration) as loop:
            announce_ready(f"xdp-decap on {target.describe()} via {running.attachment.method}, "
                           f"allow-list pinned at {running.pin_path}, decapsulated packets go {where}")
            for step, _now in enumerate(loop, start=1):
                running.refresh()
                if step % steps_per_report == 0:
                    report(running.counters(), False)
            report(running.counters(), True)  # inside the loop's signal handling: never cut short


@click.command("xdp-decap-allow")
@click.argument("iface", callback=checked_ifnames)
@click.argument("cidrs", nargs=-1, metavar="[CIDR]...")
@netns_option()
@click.option("--remove", is_flag=True, help="Remove the CIDRs instead of adding them.")
def xdp_decap_allow(iface: str, cidrs: Tuple[str, ...], netns: Optional[str], remove: bool) -> None:
    """Change or show the allow-list of a running `bpftools xdp-decap IFACE`.

    Adds (or with --remove removes) tunnel senders; without CIDRs, lists the allow-list.
    """
    from .. import xdp_decap as decap
    from ..netlink import resolve_interface, select_netns

    networks = decap.parse_networks(cidrs, False) if cidrs else []
    require_privileges()
    target = resolve_interface(iface, select_netns(netns))
    if networks:
        decap.change_allow_list(target, networks, remove)
    for network in decap.read_allow_list(target):
        say(str(network))


def register(cli: click.Group) -> None:
    cli.add_command(xdp_decap)
    cli.add_command(xdp_decap_allow)
