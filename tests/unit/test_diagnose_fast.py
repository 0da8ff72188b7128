"""Fast verdicts (issue 11, item 7): the pings stop as soon as the evidence is conclusive, and
the live evidence is one bcc compile. Pure parts; the timing itself is benchmarks/bench_diagnose.py."""
from __future__ import annotations

from bpftools.diagnose import live
from bpftools.program import BpfProgram


class FakeTracer:
    def __init__(self, batches):
        self.batches = list(batches)

    def events(self, wait_ms=200):
        return self.batches.pop(0) if self.batches else []


class FakeCounter:
    def __init__(self, series):
        self.series = list(series)

    def counts(self):
        return self.series.pop(0) if len(self.series) > 1 else self.series[0]


DROP = {"netns": "b", "ifname": "eth0", "reason": "NETFILTER_DROP", "proto": "icmp", "src": "10.0.0.1",
        "dst": "10.0.0.2"}


def test_a_traced_drop_of_this_ping_is_conclusive():
    evidence = live.Evidence(FakeTracer([[], [dict(DROP, src="10.9.9.9")], [DROP]]), None, "10.0.0.1", "10.0.0.2", True)
    assert not evidence(0.0)
    assert not evidence(0.0)   # someone else's drop
    assert evidence(0.0) and evidence.drops[-1] == DROP


def test_settled_counts_are_conclusive_after_the_last_request(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: now[0])
    counts = {("a", 2, "tx", 8): 3, ("b", 2, "rx", 8): 3}
    evidence = live.Evidence(None, FakeCounter([{}, counts]), "10.0.0.1", "10.0.0.2", True)
    assert not evidence(0.0)          # nothing counted yet
    assert not evidence(0.01)         # the counts just moved
    now[0] += live.SETTLE
    assert evidence(live.SETTLE)      # quiet for SETTLE since the last request


def test_a_path_that_leaves_the_machine_is_never_cut_short():
    evidence = live.Evidence(FakeTracer([[DROP]]), None, "10.0.0.1", "10.0.0.2", local=False)
    assert not evidence(10.0)


def test_broken_evidence_lets_ping_run_to_its_end():
    class Broken:
        def counts(self):
            raise RuntimeError("map gone")
    evidence = live.Evidence(None, Broken(), "10.0.0.1", "10.0.0.2", True)
    assert not evidence(1.0) and not evidence(1.0)


def test_several_sources_compile_as_one_module():
    program = BpfProgram(live.LIVE_SOURCES, {})
    text = program._bcc_source()["text"].decode()
    assert [line for line in text.splitlines() if line.startswith("#line 1")] == \
        [f'#line 1 "{p}"' for p in program.sources]
    assert "bpftools_drops" in text and "bpftools_dgrx" in text
    assert program.name == "trace_drops.bpf.c + diagnose.bpf.c"
    assert BpfProgram("diagnose.bpf.c")._bcc_source() == {"src_file": str(program.sources[1]).encode()}
