"""A tun device's other end, for real (the lab's `tun` topology and its responder program):
`trace-drops` names a tun device nobody holds in its hint; `diagnose` says where the path went
when the program holding the device never answers (an honest boundary, not a guess)."""
from __future__ import annotations

import json
import re
import sys
import uuid

import pytest

from bpftools.lab import TOPOLOGIES
from bpftools.topology import run
from bpftools_proc import BpftoolsProcess, cli


@pytest.fixture
def tun_lab(monkeypatch):
    """The lab's tun topology under a unique prefix; `lab down` afterwards (ends its responders)."""
    monkeypatch.setenv("BPFTOOLS_LAB_PREFIX", f"bpftlab-t{uuid.uuid4().hex[:8]}")
    try:
        proc = cli("lab", "up", "tun", timeout=120)
        assert proc.returncode == 0, proc.stderr
        yield TOPOLOGIES["tun"].ns("host")
    finally:
        cli("lab", "down", "tun")


def _responder(ns: str, verb: str, *args: str) -> str:
    return run(sys.executable, "-m", "bpftools.lab_tun", verb, "tun0", *args, netns=ns).stdout.strip()


def test_trace_drops_names_a_tun_device_nobody_holds(tun_lab):
    _responder(tun_lab, "stop")
    with BpftoolsProcess("trace-drops", "--json", "--netns", tun_lab, "--reason", "QDISC_DROP") as proc:
        run("ping", "-c", "2", "-i", "0.2", "-W", "0.5", "10.75.0.2", netns=tun_lab, check=False)
        proc.wait_for(lambda _: [e for e in proc.json_lines() if e["type"] == "drop"], "a QDISC_DROP event")
        assert proc.stop() == 0, proc.stderr
    event = next(e for e in proc.json_lines() if e["type"] == "drop")
    assert (event["netns"], event["ifname"]) == (tun_lab, "tun0")
    assert "TUN/TAP device that no program holds (NO-CARRIER)" in event["hint"], event["hint"]
    assert "tun_no_program" in event["hint"]


def test_a_program_that_never_answers_is_where_the_path_ends(tun_lab):
    _responder(tun_lab, "stop")
    pid = _responder(tun_lab, "start", "10.75.0.9")   # holds tun0, answers another address only
    proc = cli("diagnose", "ping", "10.75.0.2", "--netns", tun_lab, "--count", "2", "--timeout", "1", "--json",
               timeout=120)
    result = json.loads(proc.stdout)
    assert proc.returncode == 2 and result["causes"][0]["cause"] == "unknown", result
    assert [h["action"] for h in result["path"]] == ["program"], result["path"]
    evidence = " ".join(result["causes"][0]["evidence"])
    assert re.search(rf"the requests went to PID {pid} \(\S+\) through tun0; nothing came back from it", evidence), \
        evidence
