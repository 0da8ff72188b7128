"""diagnose ping across an overlay: time to verdict over the overlay labs (overlay-l2,
overlay-flannel; overlay-geneve where the kernel has GENEVE), healthy and with each fault, in
each family, against the single-host `veth` lab diagnosed in the same rounds.

For each overlay case (its lab built here, with a unique prefix, and removed at the end):
- overlay:  `diagnose_ping(DST, NS)` from pod1 to pod2, as the CLI runs it (walk, one bcc compile,
            pings, the second walk, the verdict); the compile time is shown apart
- veth:     right after it, the same on the `veth` lab (host -> ns1, one namespace away), healthy
            when the overlay case is healthy, else with its `netfilter_drop` fault: the baseline of
            the same run, under the same load
Reported: each case's verdict (the lab's fault first, `reachable` when healthy: marked `!` when
it is not), the median and worst time to verdict across the overlays, and the ratio of the
overlay median to the veth median. Exit 1 when a verdict is not the lab's.

Run as root: .venv/bin/python benchmarks/bench_overlay.py [--topology NAME ...] [--family 4|6]
Target: median time to verdict under 2 s across an overlay, like the other labs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("BPFTOOLS_LAB_PREFIX", f"bpftlab-v{uuid.uuid4().hex[:6]}")

from bench_diagnose import cases, conclude, timed_diagnose  # noqa: E402  (this directory is on the path)
from bpftools import lab  # noqa: E402
from bpftools.cli.output import table  # noqa: E402
from bpftools.lab_overlays import TOPOLOGIES as OVERLAYS  # noqa: E402

BASELINE, BASELINE_FAULT = "veth", "netfilter_drop"


def overlay_cases(names, families):
    """(topology, fault or None, family) for every overlay that builds on this kernel."""
    for topo, faults in cases(names, OVERLAYS):
        for family in (f for f in topo.families if f in families):
            for fault in faults:
                if fault is None or family in topo.faults[fault].families:
                    yield topo, fault, family
        lab.down(topo.name)


def diagnosed(topo: lab.LabTopology, fault, family: int):
    """(seconds, of which compiling, verdict) of one case, the lab set to it first."""
    lab.fix(topo.name)
    if fault:
        lab.break_(topo.name, fault, family)
    ns, dst = topo.ping(fault, family)
    return timed_diagnose(ns, dst, topo.ping_device, topo.ping_size(fault, family))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", action="append", default=[])
    parser.add_argument("--family", type=int, choices=(4, 6), action="append")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_overlay: run as root", file=sys.stderr)
        return 2
    rows, overlay, single, compiles, wrong = [], [], [], [], []
    baseline = lab.topology(BASELINE)
    try:
        lab.up(BASELINE)
        for topo, fault, family in overlay_cases(opts.topology, opts.family or (4, 6)):
            expected = fault or "reachable"
            seconds, compiling, got = diagnosed(topo, fault, family)
            base, _, base_got = diagnosed(baseline, fault and BASELINE_FAULT, family)
            if got != expected or base_got != (fault and BASELINE_FAULT or "reachable"):
                wrong.append(f"{topo.name}/{expected}/ipv{family}: {got} (veth: {base_got})")
            overlay.append(seconds)
            single.append(base)
            compiles.append(compiling)
            rows.append([topo.name, expected, f"ipv{family}", got + ("" if got == expected else " !"),
                         f"{seconds:.2f}", f"{compiling:.2f}", f"{base:.2f}", f"{seconds / base:.2f}"])
            print(" ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        lab.down()
    if not overlay:
        print("no overlay lab builds here")
        return 2
    print(table(["topology", "fault", "family", "verdict", "diagnose s", "of which compile s", "veth s", "ratio"],
                rows))
    median, base = statistics.median(overlay), statistics.median(single)
    uncompiled = statistics.median(o - c for o, c in zip(overlay, compiles))
    for line in (f"time to verdict across an overlay ({len(overlay)} cases): median {median:.2f} s, "
                 f"worst {max(overlay):.2f} s",
                 f"  without the bcc compile: median {uncompiled:.2f} s",
                 f"single-host veth lab, the same rounds: median {base:.2f} s",
                 f"ratio overlay / veth (medians): {median / base:.2f}"):
        print(line)
    return conclude(wrong, "verdicts that are not the lab's:", "every verdict is the lab's")


if __name__ == "__main__":
    sys.exit(main())
