"""diagnose ping: time to verdict over every lab (topology, fault) pair, healthy paths included,
against the plain `ping -c 3 -W 2` a user would run first, in the same run.

For each pair (the lab's namespaces, with a unique prefix, built here and removed at the end):
- ping:     `ip netns exec NS ping -n -q -c 3 -W 2 [-I DEV] DST` (what a user runs first; it only
            says that the ping fails)
- diagnose: `diagnose_ping(DST, NS)` in this process, as the CLI runs it (static walk, one bcc
            compile for drop tracing and per-hop counts, pings 50 ms apart that stop as soon as
            the evidence is conclusive, the second walk, the verdict); the time spent compiling
            is shown apart (it depends on the machine's load more than anything else)
- patient:  the same with the pings of before (0.2 s apart, each failing one waited out), to
            show the verdicts do not change (skip with --no-patient)
The verdict (`reachable` or the first cause) must be the lab's: the fault's name, no cause for
a healthy path; fast and patient verdicts must be equal. Reported: median and worst time to
verdict, and the ratio diagnose / ping per pair and overall.

Run as root: .venv/bin/python benchmarks/bench_diagnose.py [--topology NAME ...] [--no-patient]
Target: median time to verdict under 2 s, with the same verdicts.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("BPFTOOLS_LAB_PREFIX", f"bpftlab-b{uuid.uuid4().hex[:6]}")

from bpftools import lab  # noqa: E402
from bpftools.cli.output import table  # noqa: E402
from bpftools.diagnose import diagnose_ping, live  # noqa: E402
from bpftools.errors import BpftoolsError  # noqa: E402
from bpftools.program import BpfProgram  # noqa: E402

COMPILING = [0.0]   # seconds spent in bcc compiles (the verdict's largest part)
_compile = BpfProgram.compile


def _timed_compile(self):
    start = time.monotonic()
    try:
        return _compile(self)
    finally:
        COMPILING[0] += time.monotonic() - start


BpfProgram.compile = _timed_compile


def user_ping(ns: str, dst: str, args) -> float:
    start = time.monotonic()
    subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "3", "-W", "2", *args, dst],
                   capture_output=True)
    return time.monotonic() - start


def conclude(wrong, heading: str, ok: str) -> int:
    """The exit status: 1 with the verdicts that are not the lab's listed under `heading`."""
    if wrong:
        print(heading + "\n  " + "\n  ".join(wrong))
        return 1
    print(ok)
    return 0


def verdict_of(result) -> str:
    return "reachable" if result.reachable else result.causes[0].cause


def timed_diagnose(ns: str, dst: str, interface, payload: int = 56):
    """(seconds to verdict, of which compiling, verdict)."""
    COMPILING[0] = 0.0
    start = time.monotonic()
    result = diagnose_ping(dst, netns=ns, interface=interface, payload=payload)
    return time.monotonic() - start, COMPILING[0], verdict_of(result)


@contextlib.contextmanager
def patient_pings():
    """The pings as they were before verdicts were fast: 0.2 s apart, never cut short."""
    interval, conclusive = live.PING_INTERVAL, live.Evidence.__call__
    live.PING_INTERVAL = 0.2
    live.ping.__defaults__ = tuple(0.2 if d == interval else d for d in live.ping.__defaults__)
    live.Evidence.__call__ = lambda self, since: False
    try:
        yield
    finally:
        live.PING_INTERVAL = interval
        live.ping.__defaults__ = tuple(interval if d == 0.2 else d for d in live.ping.__defaults__)
        live.Evidence.__call__ = conclusive


def cases(names, topologies=None):
    """(topology, [None (healthy)] + faults) for every lab (of `topologies`: all) that builds on
    this kernel, each brought up."""
    for topo in topologies or lab.TOPOLOGIES.values():
        if names and topo.name not in names:
            continue
        try:
            lab.up(topo.name)
        except BpftoolsError as exc:
            print(f"skipping {topo.name}: {exc}", file=sys.stderr)
            continue
        yield topo, [None] + list(topo.faults)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", action="append", default=[])
    parser.add_argument("--no-patient", action="store_true")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_diagnose: run as root", file=sys.stderr)
        return 2
    rows, fast, pings, compiles, wrong = [], [], [], [], []
    try:
        for topo, faults in cases(opts.topology):
            for fault in faults:
                lab.fix(topo.name)
                if fault:
                    lab.break_(topo.name, fault)
                ns, dst = topo.ping(fault)
                interface = topo.ping_device
                expected = fault or "reachable"
                baseline = user_ping(ns, dst, topo.ping_args())
                seconds, compiling, got = timed_diagnose(ns, dst, interface)
                patient, slow = (None, got)
                if not opts.no_patient:
                    with patient_pings():
                        patient, _, slow = timed_diagnose(ns, dst, interface)
                if got != expected or slow != got:
                    wrong.append(f"{topo.name}/{expected}: fast {got}, patient {slow}")
                fast.append(seconds)
                pings.append(baseline)
                compiles.append(compiling)
                rows.append([topo.name, expected, got, f"{baseline:.2f}", f"{seconds:.2f}", f"{compiling:.2f}",
                             "-" if patient is None else f"{patient:.2f}", f"{seconds / baseline:.2f}"])
                print(" ".join(rows[-1]), file=sys.stderr, flush=True)
            lab.fix(topo.name)
            lab.down(topo.name)
    finally:
        lab.down()
    print(table(["topology", "fault", "verdict", "ping -c3 -W2 s", "diagnose s", "of which compile s", "patient s",
                 "ratio"], rows))
    ratios = [f / p for f, p in zip(fast, pings)]
    print(f"\ntime to verdict over {len(fast)} pairs: median {statistics.median(fast):.2f} s, "
          f"worst {max(fast):.2f} s; ping -c 3 -W 2: median {statistics.median(pings):.2f} s, worst {max(pings):.2f} s; "
          f"ratio diagnose/ping: median {statistics.median(ratios):.2f}, worst {max(ratios):.2f}; "
          f"without the bcc compile: median {statistics.median(f - c for f, c in zip(fast, compiles)):.2f} s")
    return conclude(wrong, "verdicts differ:", "every verdict is the lab's, fast and patient alike")


if __name__ == "__main__":
    sys.exit(main())
