"""diagnose ping: what proving the fixes costs per verdict, against the same verdict without
proving, in the same run.

For every lab (topology, fault) pair in each family it has (the lab's namespaces, with a unique
prefix, built here and removed at the end), the namespaces are captured live as diagnose does
(static walk), then the causes are built twice from the same walk:
- plain:  build_causes(findings, drops) (the verdict as it was, fixes unproven)
- proven: build_causes(findings, drops, Prover(...)) (every candidate fix applied to a copy of the
          model and the walk re-run both ways; namespaces the re-walks reach are captured live,
          and that capture is counted)
The first cause must be the fault's, and its fix proven. Reported: per pair the time of the
static part (capture + walk), the added time of proving and the ratio; median and worst.
`--recorded` runs over the recordings in tests/unit/fixtures/diagnose instead (no root, no lab).

Run: .venv/bin/python benchmarks/bench_prove.py [--topology NAME ...] [--recorded]
Target: median added time under 100 ms per verdict on the lab.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("BPFTOOLS_LAB_PREFIX", f"bpftlab-p{uuid.uuid4().hex[:6]}")

from bpftools import lab, namespaces  # noqa: E402
from bpftools.cli.output import table  # noqa: E402
from bpftools.diagnose import Binding, parse_target, prover_for, replay, static_walk  # noqa: E402
from bpftools.diagnose.capture import LiveSource, current_label  # noqa: E402
from bpftools.diagnose.prove import Prover  # noqa: E402
from bpftools.diagnose.state import Snapshot  # noqa: E402
from bpftools.diagnose.verdict import build_causes  # noqa: E402
from bench_diagnose import cases  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "unit" / "fixtures" / "diagnose"


def measure(walk_once, prover_of):
    """(static s, plain s, proving s, causes): the walk, then the causes without and with proving."""
    start = time.perf_counter()
    walk, snapshot = walk_once()
    static = time.perf_counter() - start
    start = time.perf_counter()
    build_causes(walk.findings, [])
    plain = time.perf_counter() - start
    start = time.perf_counter()
    causes = build_causes(walk.findings, [], prover_of(snapshot))
    return static, plain, time.perf_counter() - start, causes


def lab_cases(names):
    for topo, faults in cases(names):   # each topology up, as bench_diagnose takes them
        for family in topo.families:
            for fault in (topo.faults[name] for name in faults if name):
                if family not in fault.families:
                    continue
                lab.fix(topo.name)
                lab.break_(topo.name, fault.name, family)
                ns, dst = topo.ping(fault.name, family)
                yield f"{topo.name}/{fault.name}/ipv{family}", fault.name, ns, dst, topo, \
                    topo.ping_size(fault.name, family)
        lab.fix(topo.name)
        lab.down(topo.name)


def live_measure(ns: str, dst: str, topo, size: int):
    namespaces.discover(max_age=0)   # the lab was just rebuilt: no cached discovery of the old namespaces
    home = current_label()
    binding = Binding(topo.ping_device)

    def walk_once():
        snapshot = Snapshot(source=LiveSource())
        return static_walk(ns, dst, size, home, snapshot, binding), snapshot

    def prover_of(snapshot):
        address, scope = parse_target(dst)
        return Prover(snapshot, ns, address, None, binding.device, scope, size, home)

    return measure(walk_once, prover_of)


def recorded_cases():
    for path in sorted(FIXTURES.glob("*.json")) + sorted(FIXTURES.glob("ipv6/*.json")):
        if not path.stem.endswith("-healthy"):
            topology = max((t for t in lab.TOPOLOGIES if path.stem.startswith(f"{t}-")), key=len)
            yield f"{path.parent.name}/{path.stem}", path.stem[len(topology) + 1:], json.loads(path.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", action="append", default=[])
    parser.add_argument("--recorded", action="store_true")
    opts = parser.parse_args()
    if not opts.recorded and os.geteuid() != 0:
        print("bench_prove: run as root (or --recorded)", file=sys.stderr)
        return 2
    rows, added, ratios, wrong = [], [], [], []
    try:
        if opts.recorded:
            runs = ((name, fault, measure(lambda d=data: (replay(d), None), lambda _, d=data: prover_for(d)))
                    for name, fault, data in recorded_cases())
        else:
            runs = ((name, fault, live_measure(ns, dst, topo, size)) for name, fault, ns, dst, topo, size in
                    lab_cases(opts.topology))
        for name, fault, (static, plain, proving, causes) in runs:
            cause, proven = (causes[0].cause, causes[0].proven) if causes else ("reachable", False)
            if cause != fault or not proven:
                wrong.append(f"{name}: {cause}, proven {proven}")
            extra = proving - plain
            added.append(extra)
            ratios.append((static + proving) / (static + plain))
            rows.append([name, cause, str(proven).lower(), f"{static * 1000:.1f}",
                         f"{extra * 1000:.1f}", f"{ratios[-1]:.2f}"])
            print(" ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        if not opts.recorded:
            lab.down()
    print(table(["pair", "first cause", "proven", "capture+walk ms", "proving adds ms", "ratio"], rows))
    if added:
        print(f"\nproving adds per verdict: median {statistics.median(added) * 1000:.1f} ms, worst "
              f"{max(added) * 1000:.1f} ms; ratio (verdict with proving / without): median "
              f"{statistics.median(ratios):.2f}, worst {max(ratios):.2f}")
    for line in wrong:
        print(f"WRONG {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
