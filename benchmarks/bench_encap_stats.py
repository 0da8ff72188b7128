"""encap-stats cost: the classifier per packet (BPF_PROG_TEST_RUN, against an empty XDP_PASS program in
the same run) and iperf3 TCP throughput across a veth pair with and without the counters attached.

Run as root: .venv/bin/python benchmarks/bench_encap_stats.py [--repeat N] [--rounds N] [--seconds S]
Targets: classifier < 2x the empty program; throughput loss < 5%.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bcc import BPF  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402

from bpftools import bpfsys  # noqa: E402
from bpftools.cli.output import table  # noqa: E402
from bpftools.encap_stats import PROG_XDP, EncapStats, load_classifier, read_counters, udp_port_table  # noqa: E402
from bpftools.netlink import resolve_interface  # noqa: E402
from bpftools.program import BpfProgram  # noqa: E402
from bpftools.topology import Topology, run  # noqa: E402

INNER = IP(src="192.168.9.1", dst="192.168.9.2") / ICMP() / (b"x" * 56)
OUTER = Ether() / IP(src="10.46.0.1", dst="10.46.0.2")
PACKETS = {
    "plain": bytes(OUTER / TCP(sport=40000, dport=80) / (b"x" * 64)),
    "vxlan": bytes(OUTER / UDP(sport=41000, dport=4789) / VXLAN(vni=42) / Ether() / INNER),
    "ipip": bytes(OUTER / INNER),
}


def classifier_cost(repeat: int, rounds: int) -> list:
    """(name, ns per packet, ratio to empty) rows; best of `rounds`, programs interleaved."""
    lo = socket.if_nametoindex("lo")  # test runs see XDP on `lo` of our namespace
    with BpfProgram("probe.bpf.c") as probe, load_classifier([lo], [False], udp_port_table()) as classifier:
        empty_fd = probe.load("bpftools_xdp", BPF.XDP)
        encap_fd = classifier.load(PROG_XDP, BPF.XDP)
        best = {}
        for _ in range(rounds):
            for name, packet in PACKETS.items():
                for label, fd in (("empty", empty_fd), (name, encap_fd)):
                    key = (label, name)
                    ns = bpfsys.prog_test_run(fd, packet, repeat=repeat).duration_ns
                    best[key] = min(best.get(key, ns), ns)
    return [(name, best[("empty", name)], best[(name, name)], best[(name, name)] / max(best[("empty", name)], 1))
            for name in PACKETS]


def iperf_throughput(seconds: float, rounds: int) -> dict:
    """Gbit/s per run without/with the counters on the receiving veth; ABBA order so drift cancels."""
    results = {"without": [], "with": [], "segments": 0}
    with Topology("bench") as topo:
        ns_a, ns_b = topo.netns("ea"), topo.netns("eb")
        topo.veth(ns_a, "va", ns_b, "vb", "10.46.0.1/24", "10.46.0.2/24")
        server = subprocess.Popen(["ip", "netns", "exec", ns_b, "iperf3", "-s"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            iface = resolve_interface("vb", ns_b)
            for round_ in range(rounds):
                for attached in ((False, True) if round_ % 2 == 0 else (True, False)):
                    if attached:
                        with EncapStats([iface]) as stats:
                            results["with"].append(_iperf(ns_a, seconds))
                            results["segments"] += sum(r.packets for r in read_counters(stats.program, ["vb"]))
                    else:
                        results["without"].append(_iperf(ns_a, seconds))
        finally:
            server.terminate()
            server.wait(timeout=10)
    return results


def _iperf(ns: str, seconds: float) -> float:
    out = run("iperf3", "-c", "10.46.0.2", "-t", str(seconds), "-J", netns=ns).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1_000_000, help="BPF_PROG_TEST_RUN repetitions per run")
    parser.add_argument("--rounds", type=int, default=3, help="test-run rounds (best of)")
    parser.add_argument("--iperf-rounds", type=int, default=4, help="iperf3 without/with pairs")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one iperf3 run")
    args = parser.parse_args()

    rows = classifier_cost(args.repeat, args.rounds)
    print(f"classifier per packet (BPF_PROG_TEST_RUN, XDP, repeat {args.repeat}, best of {args.rounds}):")
    print(table(["PACKET", "EMPTY ns", "ENCAP ns", "RATIO"], [(n, e, c, f"{r:.2f}x") for n, e, c, r in rows]))

    results = iperf_throughput(args.seconds, args.iperf_rounds)
    without, with_ = statistics.median(results["without"]), statistics.median(results["with"])
    runs = args.iperf_rounds
    print(f"\niperf3 TCP across a veth pair ({runs} + {runs} runs of {args.seconds:g} s, ABBA order, median):")
    print(table(["COUNTERS", "Gbit/s", "RUNS"],
                [("without", f"{without:.2f}", " ".join(f"{v:.2f}" for v in results["without"])),
                 ("with (tc in+eg on vb)", f"{with_:.2f}", " ".join(f"{v:.2f}" for v in results["with"]))]))
    pairwise = statistics.median(w / wo for w, wo in zip(results["with"], results["without"]))
    print(f"throughput loss: {100 * (1 - with_ / without):.1f}% (medians), "
          f"{100 * (1 - pairwise):.1f}% (median of per-round ratios)")
    # Noise-free upper bound: segments counted x the classifier's cost per run (a GSO packet of many
    # segments runs the program once, so the real cost is lower).
    per_second = results["segments"] / (runs * args.seconds)
    cost = max(c for _, _, c, _ in rows)
    print(f"upper bound: {per_second:,.0f} segments/s counted x {cost} ns = "
          f"{100 * per_second * cost / 1e9:.2f}% of one CPU")


if __name__ == "__main__":
    main()
