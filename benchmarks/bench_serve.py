"""Scrape latency (p50/p99) of `bpftools serve` with 1,000+ series, and its CPU at a 1 s
scrape interval by a real Prometheus.

The exporter runs in this process with `--drops` on a throwaway namespace holding 10 veth
interfaces; its in-kernel drop-count map is then filled with one entry per (interface,
drop reason) of the running kernel (10 x ~126 = 1,260 series), so every scrape reads a
real BPF map, resolves real interface names and renders 1,000+ series.

    .venv/bin/python benchmarks/bench_serve.py [--seconds 30]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from bpftools.netlink import list_interfaces, netns_inode  # noqa: E402
from bpftools.serve import Exporter  # noqa: E402
from bpftools.serve_config import ServeConfig  # noqa: E402
from bpftools.topology import Topology  # noqa: E402
from prometheus_server import Prometheus, free_port  # noqa: E402


def fill_drop_counts(exporter: Exporter, ns: str) -> int:
    tracer = exporter.collector._sources["drops"].tracer
    table = tracer.program.table("drop_counts")
    inode = netns_inode(ns)
    reasons = sorted(tracer.fmt.reasons)
    ifaces = [i for i in list_interfaces(ns) if i.ifname != "lo"]
    leaf = table.Leaf
    for iface in ifaces:
        for code in reasons:
            values = (leaf * table.total_cpu)()
            for cpu in range(table.total_cpu):
                values[cpu] = leaf(code + cpu)
            table[table.Key(inode, iface.ifindex, code)] = values
    return len(ifaces) * len(reasons)


def scrape_latencies(url: str, count: int) -> list:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
        times.append(time.perf_counter() - start)
    return times


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--scrapes", type=int, default=300)
    args = parser.parse_args()
    with Topology("bench-serve") as topo:
        ns = topo.netns()
        for i in range(5):
            topo.veth(ns, f"x{i}a", ns, f"x{i}b")
        port = free_port()
        config = ServeConfig(listen=f"127.0.0.1:{port}", drops=True, netns=ns).validate()
        with Exporter(config) as exporter:
            entries = fill_drop_counts(exporter, ns)
            url = f"http://127.0.0.1:{port}/metrics"
            body = urllib.request.urlopen(url).read().decode()
            series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
            scrape_latencies(url, 10)  # warm the name caches
            times = sorted(scrape_latencies(url, args.scrapes))
            p50 = statistics.median(times) * 1000
            p99 = times[int(len(times) * 0.99) - 1] * 1000

            with Prometheus([f"127.0.0.1:{port}"], scrape_interval="1s"):
                before_cpu, before = cpu_seconds(), time.monotonic()
                time.sleep(args.seconds)
                cpu = (cpu_seconds() - before_cpu) / (time.monotonic() - before)
    print(f"drop-count map entries: {entries}; series in /metrics: {series}")
    print(f"scrape latency over {args.scrapes} scrapes: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"exporter CPU with Prometheus scraping every 1 s for {args.seconds:.0f} s: {cpu * 100:.2f}% of one core")


if __name__ == "__main__":
    main()
