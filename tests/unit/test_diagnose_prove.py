"""prove: every fix printed is applied to the recorded namespaces and the walk re-run both ways;
a candidate that leaves the path broken is dropped for the next, one the model cannot apply is
advice, and no printed fix is a template."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from bpftools.commands import Command, rendered
from bpftools.diagnose import prover_for, replay
from bpftools.diagnose.apply_fix import Unmodelled, applied
from bpftools.diagnose.records import Cause, Ranking, Result
from bpftools.diagnose.state import Snapshot
from bpftools.diagnose.verdict import build_causes, story, verdict
from bpftools.lab import TOPOLOGIES

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"
RECORDED = sorted(FIXTURES.glob("*.json")) + sorted(FIXTURES.glob("ipv6/*.json"))
FAULTS = [p for p in RECORDED if not p.stem.endswith("-healthy")]
SOURCES = Path(__file__).parents[2] / "bpftools"


def _id(path: Path) -> str:
    return f"{path.parent.name}-{path.stem}" if path.parent.name == "ipv6" else path.stem


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _proven_causes(data: dict):
    return build_causes(replay(data).findings, [], prover_for(data))


@pytest.mark.parametrize("path", FAULTS, ids=_id)
def test_every_recorded_faults_fix_is_proven(path):
    causes = _proven_causes(_load(path))
    first = causes[0]
    assert first.proven is True and first.fix, first.evidence
    assert all(c.proven == bool(c.fix) for c in causes)
    assert [Command.from_json(c).render() for c in first.to_json()["fix_argv"]] == first.to_json()["fix"]


def _topology(path: Path) -> str:
    return max((t for t in TOPOLOGIES if path.stem.startswith(f"{t}-")), key=len)


@pytest.mark.parametrize("healthy", [p for p in RECORDED if p.stem.endswith("-healthy")], ids=_id)
def test_proven_fixes_applied_to_the_healthy_recording_break_nothing(healthy):
    """On the model, as the lab matrix does on the kernel: every proven fix of the topology's
    faults (same family) run on the healthy namespaces; those that cannot run there (nothing to
    delete) are skipped, as their failing command would be."""
    data = _load(healthy)
    model = Snapshot.from_dict(data["namespaces"])
    home = data.get("home", "host")
    family_dir = healthy.parent
    for fault in (p for p in FAULTS if p.parent == family_dir and _topology(p) == _topology(healthy)):
        for cause in _proven_causes(_load(fault)):
            for command in cause.fix:
                if model.has(command.netns or home):
                    try:
                        model = applied(model, [command], home)
                    except Unmodelled:
                        continue
    walk = prover_for(data).walk(model)
    assert walk.request_delivered and walk.reply_delivered
    assert [f.detail for f in walk.findings if not f.ok] == []


def _routed_no_route():
    data = _load(FIXTURES / "routed-no_route.json")
    left = next(n for n in data["namespaces"] if n.endswith("-left"))
    return data, left


def _no_route(left: str, *candidates) -> Cause:
    return Cause("no_route", left, "eth0", "d", ranking=Ranking(0, candidates=list(candidates)))


def _unreachable(left: str, cause: Cause) -> Result:
    return Result("10.72.2.2", left, False, 1, 0, None, [], [cause], [], [])


def test_a_candidate_that_does_not_repair_the_path_is_dropped_for_the_next():
    data, left = _routed_no_route()
    wrong = [Command(("ip", "route", "add", "10.72.2.2", "dev", "eth0"), left)]   # on-link: nobody answers ARP
    right = [Command(("ip", "route", "add", "10.72.2.2", "via", "10.72.1.1", "dev", "eth0"), left)]
    cause = _no_route(left, wrong, right)
    prover_for(data)([cause])
    assert cause.proven is True and cause.fix == right
    assert any(e.startswith("not proven: ") and "10.72.2.2 dev eth0" in e for e in cause.evidence)


def test_no_candidate_surviving_prints_no_fix_and_says_so():
    data, left = _routed_no_route()
    wrong = [Command(("ip", "route", "add", "10.72.2.2", "dev", "eth0"), left)]
    cause = _no_route(left, wrong)
    prover_for(data)([cause])
    assert (cause.proven, cause.fix, cause.advice) == (False, [], [])
    assert "the path still breaks" in cause.evidence[-1]
    cause.evidence.insert(0, "check x")
    text = story(_unreachable(left, cause))
    assert "no fix: no candidate repairs the path on the model" in text and "  fix:" not in text
    assert "evidence: not proven: ip netns exec" in text


def test_a_fix_the_model_cannot_apply_is_advice_not_a_fix():
    data, left = _routed_no_route()
    advice = [Command(("docker", "network", "connect", "net", "web"), left)]
    cause = _no_route(left, advice)
    prover_for(data)([cause])
    assert cause.fix == [] and cause.proven is False
    assert cause.advice == advice and cause.to_json()["advice_argv"] == [advice[0].to_json()]
    text = story(_unreachable(left, cause))
    assert "advice (not proven" in text and "docker network connect net web" in text and "  fix:" not in text


def test_verdict_proves_with_the_prover_it_is_given():
    data = _load(FIXTURES / "routed-no_return_route.json")
    result = verdict(data["target"], data["netns"], replay(data), 1, 0, [], prover_for(data))
    assert result.causes[0].proven is True and "  fix:" in story(result)


@pytest.mark.parametrize("path", FAULTS, ids=_id)
def test_no_recorded_fix_is_a_template(path):
    for cause in _proven_causes(_load(path)):
        for command in rendered(cause.fix) + rendered(cause.advice):
            assert "<" not in command and ">" not in command, command


def test_no_command_template_in_the_sources_has_a_placeholder():
    """argv_of templates are words with {} holes: a `<gateway>` would be printed as is."""
    found = []
    for source in SOURCES.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "argv_of" and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                    and any(ch in node.args[0].value for ch in "<>"):
                found.append(f"{source.name}:{node.lineno}: {node.args[0].value}")
    assert found == []


def test_a_re_walk_that_fails_proves_nothing_and_is_logged(monkeypatch, caplog):
    data, left = _routed_no_route()
    prover = prover_for(data)
    monkeypatch.setattr(type(prover), "walk", lambda self, snapshot: 1 / 0)
    right = [Command(("ip", "route", "add", "10.72.2.2", "via", "10.72.1.1", "dev", "eth0"), left)]
    cause = _no_route(left, right)
    prover([cause])
    assert cause.proven is False and cause.fix == []
    assert "re-walking the model" in caplog.text


def test_a_fix_the_kernel_would_refuse_is_neither_fix_nor_advice():
    data, left = _routed_no_route()
    exists = [Command(("ip", "route", "add", "10.72.1.0/24", "dev", "eth0"), left)]   # the connected route
    cause = _no_route(left, exists)
    prover_for(data)([cause])
    assert (cause.proven, cause.fix, cause.advice) == (False, [], [])
    assert "the kernel would refuse it: " in cause.evidence[-1] and "File exists" in cause.evidence[-1]
