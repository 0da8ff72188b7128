"""Cost of namespace discovery (`bpftools.namespaces.discover`) with N extra namespaces, as a
ratio against the baseline every command paid before the registry: listing /run/netns and
stat()ing each entry (`named`). Both run in this process, on the same namespaces.

N namespaces are created: half `ip netns` names, half held only by a `sleep` (unshare), so the
process scan and the labelling of pid-held namespaces are exercised. Docker containers
present on the machine are discovered too (one Engine API call per running container); the
script says how many.

    .venv/bin/python benchmarks/bench_namespaces.py [--namespaces 100] [--rounds 20]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from bpftools import docker_engine, namespaces, runtimes  # noqa: E402
from bpftools.topology import Topology  # noqa: E402
from bpftools_proc import end_process  # noqa: E402


def timed(fn, rounds: int) -> float:
    """Median seconds of one call."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    runtimes.install()
    holders = []
    with Topology("bn") as topo:
        for _ in range(args.namespaces // 2):
            topo.netns()
        for _ in range(args.namespaces - args.namespaces // 2):
            holders.append(subprocess.Popen(["unshare", "--net", "sleep", "600"]))
        try:
            deadline = time.monotonic() + 30
            while any(namespaces._comm(p.pid) != "sleep" for p in holders) and time.monotonic() < deadline:
                time.sleep(0.05)
            docker_engine.client()  # import the SDK once, outside the timing (a command pays it once)
            found = namespaces.discover(max_age=0)
            baseline = timed(namespaces.named, args.rounds)
            full = timed(lambda: namespaces.discover(max_age=0), args.rounds)
            cached = timed(namespaces.discover, args.rounds)
            parts = {"process scan": namespaces.process_namespaces, "Docker API": runtimes.docker_namespaces,
                     "nsids (RTM_GETNSID)": lambda: namespaces.nsid_map(found[0], found)}
            containers = sum(1 for ns in found if ns.kind == "docker")
            print(f"namespaces discovered: {len(found)} ({containers} Docker containers, "
                  f"{sum(1 for ns in found if ns.kind == 'pid')} held by a process, "
                  f"{sum(1 for ns in found if ns.kind == 'netns')} ip netns)")
            print(f"listing /run/netns (baseline): {baseline * 1e3:8.2f} ms")
            print(f"discover():                    {full * 1e3:8.2f} ms  ({full / baseline:.0f}x the baseline)")
            print(f"discover() cached:             {cached * 1e6:8.2f} us")
            print(f"per namespace:                 {full / len(found) * 1e6:8.1f} us")
            for name, fn in parts.items():
                print(f"  of which {name + ':':20} {timed(fn, args.rounds) * 1e3:8.2f} ms")
        finally:
            for proc in holders:
                end_process(proc, timeout=5)


if __name__ == "__main__":
    main()
