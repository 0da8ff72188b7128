"""`bpftools trace-drops`: every dropped packet with the kernel's reason, where, what, and a hint."""
from __future__ import annotations

import contextlib
import sys
from typing import Optional, Tuple

import click

from .output import announce_ready, checked_ifnames, duration_option, emit_json, netns_option, say, table


# --pcap bytes per packet: enough for IP, TCP and a tunnel's inner headers by default; the
# maximum keeps a ring buffer of 1 MiB at hundreds of events.
SNAPLEN_DEFAULT, SNAPLEN_MAX = 256, 1024


@click.command("trace-drops")
@click.argument("ifaces", nargs=-1, metavar="[IFACE]...", callback=checked_ifnames)
@netns_option("Namespace of IFACE, or to watch whole")
@click.option("--all-netns", is_flag=True, help="Every network namespace; each drop names its namespace.")
@click.option("--src", metavar="CIDR", help="Only packets from this address/prefix.")
@click.option("--dst", metavar="CIDR", help="Only packets to this address/prefix.")
@click.option("--proto", metavar="icmp|tcp|udp|N", help="Only this IP protocol.")
@click.option("--port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Only TCP/UDP/SCTP packets from or to this port.")
@click.option("--sport", type=click.IntRange(0, 65535), metavar="PORT", help="Only packets from this port.")
@click.option("--dport", type=click.IntRange(0, 65535), metavar="PORT", help="Only packets to this port.")
@click.option("--udp-port", "udp_ports", multiple=True, metavar="TYPE=PORT",
              help="Also open UDP packets to PORT as tunnel TYPE (vxlan or geneve; 4789, 8472 and 6081 are known).")
@click.option("--reason", "reasons", multiple=True, metavar="NAME",
              help="Only this kernel drop reason (repeatable), e.g. NETFILTER_DROP.")
@click.option("--exclude-reason", "exclude_reasons", multiple=True, metavar="NAME",
              help="Hide this drop reason (repeatable), e.g. NOT_SPECIFIED.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--summary", is_flag=True, help="Count in the kernel (exact, no per-drop output); print totals on exit.")
@click.option("--no-hints", is_flag=True, help="Do not read namespace state to explain drops.")
@click.option("--stack", is_flag=True, help="Show the kernel stack of each drop.")
@click.option("--pcap", "pcap_path", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
              help="Write the dropped packets to FILE (pcapng, from the IP header, drop details as comments).")
@click.option("--snaplen", type=click.IntRange(1, SNAPLEN_MAX), metavar="BYTES",
              help=f"With --pcap: bytes of each packet to keep, from the IP header [default: {SNAPLEN_DEFAULT}].")
@duration_option
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N drops.")
def trace_drops(ifaces: Tuple[str, ...], netns: Optional[str], all_netns: bool, src: Optional[str],
                dst: Optional[str], proto: Optional[str], port: Optional[int], sport: Optional[int],
                dport: Optional[int], udp_ports: Tuple[str, ...], reasons: Tuple[str, ...], exclude_reasons: Tuple[str, ...], as_json: bool,
                summary: bool, no_hints: bool, stack: bool, pcap_path: Optional[str], snaplen: Optional[int],
                duration: Optional[float], count: Optional[int]) -> None:
    """Show each packet the kernel drops: reason, namespace/interface, flow, kernel location, hint.

    With no IFACE, every interface of the namespace (--netns, else the current one)."""
    from ..attach import terminate_gracefully
    from ..kernel.drop_reasons import kfree_skb_format
    from ..kernel.kallsyms import hidden_note
    from ..kernel.privileges import require_privileges
    from ..drop_events import Names, bcc_ksym, summary_json
    from ..encap_stats import parse_udp_port
    from ..netlink import select_netns
    from ..trace_drops import STACK_DEPTH, DropCapture, DropTracer, build_filter, run_trace

    if summary and count:
        raise click.UsageError("--count counts shown drops; with --summary use --duration or Ctrl-C")
    if summary and (stack or pcap_path):
        raise click.UsageError("--stack and --pcap need each drop; --summary only counts them in the kernel")
    if snaplen and not pcap_path:
        raise click.UsageError("--snaplen is the length of packets written with --pcap FILE")
    require_privileges()
    fmt = kfree_skb_format()
    where = netns if all_netns else select_netns(netns)  # (both given: build_filter says they exclude)
    flt = build_filter(ifaces, where, all_netns, src, dst, proto, reasons, fmt, exclude_reasons=exclude_reasons,
                       port=port, sport=sport, dport=dport,
                       tunnel_ports=[parse_udp_port(spec) for spec in udp_ports])
    capture = DropCapture(stack_depth=STACK_DEPTH if stack else 0, snaplen=(snaplen or SNAPLEN_DEFAULT) if pcap_path else 0)
    symbols_note = hidden_note()
    if symbols_note:  # never degrade silently: locations and stacks would be bare addresses
        say(f"bpftools: note: {symbols_note}", err=True)
    pcap = None
    if pcap_path:
        from ..drop_pcap import DropPcap

        pcap = DropPcap(pcap_path)
    hints = None
    if not summary and not no_hints:
        from ..drop_hints import HintEngine

        hints = HintEngine()

    def on_event(event) -> None:
        if hints is not None:
            event.hint = hints.hint(event)
        if pcap is not None:
            pcap.write(event)
        if as_json:
            emit_json(event.as_json())
            return
        say(event.text())
        sys.stdout.flush()

    def on_lost(n: int) -> None:
        if as_json:
            emit_json({"type": "lost", "count": n})
        else:
            say(f"-- {n} drop events lost (ring buffer full); the summary still counts them")

    with terminate_gracefully(), pcap or contextlib.nullcontext(), \
            DropTracer(flt, summary=summary, fmt=fmt, capture=capture) as tracer:
        names = Names(fmt, ksym=bcc_ksym)
        if hints is not None:
            hints.prime(flt, names)
        ready = f"tracing drops on {flt.describe(names)} via {tracer.method}"
        result = run_trace(tracer, names, on_event, on_lost, duration=duration, count=count,
                           on_ready=lambda: announce_ready(ready))
    if pcap is not None:
        say(f"bpftools: {pcap.note()}", err=True)
    if as_json:
        emit_json(summary_json(result.rows, result.events_lost))
        return
    if not result.rows:
        say("no drops seen")
        return
    say(table(["NETNS", "IFACE", "REASON", "COUNT"],
                     [(r.netns, r.ifname or f"if{r.ifindex}", r.reason, r.count) for r in result.rows]))
    if result.events_lost:
        say(f"events lost: {result.events_lost}")


def register(cli: click.Group) -> None:
    cli.add_command(trace_drops)
