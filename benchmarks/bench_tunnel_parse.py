"""The BPF cost of opening tunnel packets (bpf/include/tunnel.h) against plain packets, two ways:

- parser: BPF_PROG_TEST_RUN of bpf/tunnel_parse.bpf.c (copy the window, parse, store the result)
  on a plain ICMP echo and on the same echo inside VXLAN, GENEVE, ipip and GRE (and IPv6
  variants); programs' own ns per packet as the kernel measures it, best of the rounds,
  interleaved; ratios to the plain packet of the same family.
- tracepoints: the programs trace-drops and diagnose attach (bpftools_drops on skb:kfree_skb,
  bpftools_dgrx/dgtx on netif_receive_skb/net_dev_start_xmit) under a UDP flood that the receiving
  namespace's firewall drops, once as plain packets over a veth pair, once inside VXLAN over
  another pair (the firewall drops the outer UDP packet); run time per program run from bpf_stats
  (`kernel.bpf_stats_enabled` is switched on for the run and restored), rounds alternating.

Run as root: .venv/bin/python benchmarks/bench_tunnel_parse.py [--repeat N] [--rounds N] [--seconds S]
Target: tunnel packets cost at most 1.3x plain packets.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scapy.layers.inet import GRE, ICMP, IP, UDP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from bench_trace_drops import bpf_stats_enabled, prog_stats, tracing_prog_ids  # noqa: E402
from bpftools import bpfsys  # noqa: E402
from bpftools.cli.output import table  # noqa: E402
from bpftools.diagnose.live import HopCounter  # noqa: E402
from bpftools.netlink import netns_inode  # noqa: E402
from bpftools.topology import Topology, run  # noqa: E402
from bpftools.trace_drops import DropFilter, DropTracer  # noqa: E402
from bpftools.traffic import UdpFlood, resolve_neighbour  # noqa: E402
from bpftools.tunnel_parse import TunnelParser  # noqa: E402

PING4 = IP(src="192.168.9.1", dst="192.168.9.2") / ICMP() / (b"x" * 56)
PING6 = IPv6(src="fd00:99::1", dst="fd00:99::2") / ICMPv6EchoRequest() / (b"x" * 56)
OUT4, OUT6 = IP(src="10.46.0.1", dst="10.46.0.2"), IPv6(src="fd00:46::1", dst="fd00:46::2")
GENEVE_HEADER = struct.pack("!BBHI", 2, 0, 0x6558, 77 << 8) + b"\x01\x02\x03\x01" + b"\xaa" * 4  # 8 option bytes
# name -> (frame, the plain packet it is compared with)
PACKETS = {
    "plain ipv4": (Ether() / PING4, "plain ipv4"),
    "vxlan": (Ether() / OUT4 / UDP(sport=41000, dport=4789) / VXLAN(vni=42) / Ether() / PING4, "plain ipv4"),
    "geneve (8 option bytes)": (Ether() / OUT4 / UDP(dport=6081) / Raw(GENEVE_HEADER) / Ether() / PING4, "plain ipv4"),
    "ipip": (Ether() / OUT4 / PING4, "plain ipv4"),
    "gre key": (Ether() / OUT4 / GRE(key_present=1, key=5, proto=0x0800) / PING4, "plain ipv4"),
    "plain ipv6": (Ether() / PING6, "plain ipv6"),
    "vxlan over ipv6, inner ipv6": (Ether() / OUT6 / UDP(dport=4789) / VXLAN(vni=42) / Ether() / PING6, "plain ipv6"),
    "ip6ip6": (Ether() / OUT6 / PING6, "plain ipv6"),
}
TARGET = 1.3


def parser_cost(repeat: int, rounds: int) -> list:
    """(name, program ns, copy-only ns, parsing ns, program ratio, parsing ratio) rows, ratios to the
    packet's plain one; best of `rounds`, packets and programs interleaved."""
    best = {}
    with TunnelParser() as parser, TunnelParser(copy_only=True) as copier:
        for name, (packet, _) in PACKETS.items():
            assert name.startswith("plain") or parser.parse(bytes(packet)).inner, f"{name}: inner flow not found"
        for _ in range(rounds):
            for name, (packet, _) in PACKETS.items():
                for label, program in (("parse", parser), ("copy", copier)):
                    ns = program.run_ns(bytes(packet), repeat)
                    best[(label, name)] = min(best.get((label, name), ns), ns)
    rows = []
    for name, (_, plain) in PACKETS.items():
        total, copy = best[("parse", name)], best[("copy", name)]
        parsing, plain_parsing = max(total - copy, 0), max(best[("parse", plain)] - best[("copy", plain)], 1)
        rows.append((name, total, copy, parsing, total / max(best[("parse", plain)], 1), parsing / plain_parsing))
    return rows


def build_pairs(topo: Topology) -> dict:
    """Two sender/receiver pairs, each receiver's firewall dropping what it is sent: plain UDP to
    port 9 over one veth pair, the same inside VXLAN over another. role -> (sender ns, target)."""
    pa, pb, oa, ob = (topo.netns(role) for role in ("pa", "pb", "oa", "ob"))
    topo.veth(pa, "pa0", pb, "pb0", "10.73.0.1/24", "10.73.0.2/24")
    topo.veth(oa, "oa0", ob, "ob0", "10.74.0.1/24", "10.74.0.2/24")
    for ns, dev, local, remote, inner in ((oa, "oa0", "10.74.0.1", "10.74.0.2", "10.75.0.1/24"),
                                          (ob, "ob0", "10.74.0.2", "10.74.0.1", "10.75.0.2/24")):
        run("ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local", local, "remote", remote,
            "dstport", "4789", "dev", dev, netns=ns)
        run("ip", "addr", "add", inner, "dev", "vx0", netns=ns)
        run("ip", "link", "set", "vx0", "up", netns=ns)
    mac = json.loads(run("ip", "-j", "link", "show", "vx0", netns=ob).stdout)[0]["address"]
    run("ip", "neigh", "replace", "10.75.0.2", "lladdr", mac, "dev", "vx0", "nud", "permanent", netns=oa)
    resolve_neighbour(pa, "10.73.0.2")
    resolve_neighbour(oa, "10.74.0.2")
    run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP", netns=pb)
    run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "4789", "-j", "DROP", netns=ob)
    return {"plain": (pa, "10.73.0.2"), "vxlan": (oa, "10.75.0.2"), "namespaces": [pa, pb, oa, ob]}


def our_programs() -> dict:
    """name -> id of the tracing programs this process holds."""
    return {bpfsys.prog_info(i).name: i for i in tracing_prog_ids(os.getpid())}


def tracepoint_cost(seconds: float, rounds: int) -> dict:
    """(program, plain|vxlan) -> ns per run per round."""
    results: dict = {}
    with Topology("bench") as topo, bpf_stats_enabled():
        pairs = build_pairs(topo)
        namespaces = pairs["namespaces"]
        flt = DropFilter(netns_inodes={netns_inode(ns) for ns in namespaces}, proto=17)  # a filter: packets parsed
        with DropTracer(flt, summary=True), HopCounter(namespaces, "10.75.0.1", "10.75.0.2"):
            programs = our_programs()
            for _ in range(rounds):
                for kind in ("plain", "vxlan"):
                    before = {name: prog_stats(pid) for name, pid in programs.items()}
                    sender, target = pairs[kind]
                    with UdpFlood(sender, target, 9, seconds, processes=1) as flood:
                        flood.wait()
                    for name, pid in programs.items():
                        run_ns, runs = (after - old for after, old in zip(prog_stats(pid), before[name]))
                        results.setdefault((name, kind), []).append(run_ns / max(runs, 1))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1_000_000, help="BPF_PROG_TEST_RUN repetitions per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (test runs: best of; floods: median of)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one flood")
    args = parser.parse_args()

    rows = parser_cost(args.repeat, args.rounds)
    print(f"parser per packet (BPF_PROG_TEST_RUN, tc, repeat {args.repeat}, best of {args.rounds}; COPY = the same "
          "program copying the window only, PARSE = the difference):")
    print(table(["PACKET", "PROGRAM ns", "COPY ns", "PARSE ns", "PROGRAM RATIO", "PARSE RATIO"],
                [(n, t, c, p, f"{r:.2f}x", f"{pr:.2f}x") for n, t, c, p, r, pr in rows]))
    worst = max(r for *_, r, _ in rows)
    print(f"worst program ratio to plain {worst:.2f}x (target <= {TARGET}x): {'met' if worst <= TARGET else 'NOT met'}")

    results = tracepoint_cost(args.seconds, args.rounds)
    names = sorted({name for name, _ in results})
    lines = []
    for name in names:
        plain, vxlan = (statistics.median(results[(name, kind)]) for kind in ("plain", "vxlan"))
        lines.append((name, f"{plain:.0f}", f"{vxlan:.0f}", f"{vxlan / max(plain, 1):.2f}x"))
    print(f"\ntracepoint programs under a dropped UDP flood ({args.rounds} rounds of {args.seconds:g} s each, "
          "bpf_stats, median ns per run):")
    print(table(["PROGRAM", "PLAIN ns", "VXLAN ns", "RATIO"], lines))


if __name__ == "__main__":
    main()
