"""For every (topology, fault) the lab supports: `diagnose ping` names the fault first and its
fix, applied, makes the ping work. Healthy topologies: reachable, no causes. The lab's
namespaces are made by `lab up`, so every test ends with `lab down` (also on failure)."""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from bpftools_proc import cli
from bpftools.lab import TOPOLOGIES

MATRIX = [(t.name, f) for t in TOPOLOGIES.values() for f in t.faults]


FAULT_NEEDS = {"xdp_drop": "xdp_native", "tc_drop": "tc_clsact"}


def _marks(topology: str, fault: str = ""):
    needs = [n for n in (TOPOLOGIES[topology].requires, FAULT_NEEDS.get(fault)) if n]
    return [pytest.mark.feature(*needs)] if needs else []


@pytest.fixture(autouse=True)
def unique_lab_prefix(monkeypatch):
    """bpftlab-<unique>-<topology>-<role>: parallel runs (and a user's own lab) never meet."""
    monkeypatch.setenv("BPFTOOLS_LAB_PREFIX", f"bpftlab-t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def lab_down_after():
    made = []
    yield made.append
    for name in made:
        cli("lab", "down", name)


def _lab_up(name: str, track) -> None:
    track(name)
    proc = cli("lab", "up", name, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _diagnose(ns: str, dst: str, *ping_args: str) -> (int, dict):
    proc = cli("diagnose", "ping", dst, *ping_args, "--netns", ns, "--count", "2", "--timeout", "1", "--json",
               timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _ping_ok(ns: str, dst: str, *ping_args: str) -> bool:
    for _ in range(5):
        if subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "1", *ping_args, dst],
                          capture_output=True).returncode == 0:
            return True
    return False


def _pings(topology: str):
    """Every (namespace, address) the topology's faults ping: all must work when it is healthy."""
    topo = TOPOLOGIES[topology]
    return sorted({topo.ping()} | {topo.ping(f) for f in topo.faults})


def _lab_up_healthy(topology: str, track) -> None:
    _lab_up(topology, track)
    if TOPOLOGIES[topology].starts_broken:   # built as the seed has it: `lab fix` repairs it
        assert cli("lab", "fix", topology).returncode == 0


@pytest.mark.parametrize("topology", [pytest.param(t, marks=_marks(t)) for t in TOPOLOGIES])
def test_healthy_topology_is_reachable_without_causes(topology, lab_down_after):
    _lab_up_healthy(topology, lab_down_after)
    args = TOPOLOGIES[topology].ping_args()
    ns, dst = TOPOLOGIES[topology].ping()
    rc, result = _diagnose(ns, dst, *args)
    assert rc == 0, result
    assert result["reachable"] is True
    assert result["causes"] == []
    assert result["sent"] == 2 and result["received"] == 2
    assert [h for h in result["path"] if h["action"] == "deliver"], result["path"]
    for f_ns, f_dst in _pings(topology):
        if (f_ns, f_dst) != (ns, dst):
            rc, other = _diagnose(f_ns, f_dst, *args)
            assert rc == 0 and other["causes"] == [], other


@pytest.mark.parametrize("topology,fault", [pytest.param(t, f, marks=_marks(t, f)) for t, f in MATRIX])
def test_diagnose_names_the_injected_fault_and_every_fix_is_safe(topology, fault, lab_down_after):
    """The fault is named first; EVERY fix printed (first cause and the others) applied makes the
    ping work; and the same commands applied to the healthy topology break none of its pings."""
    if fault == "bridge_netfilter" and not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
        pytest.skip("br_netfilter is not loaded on this kernel (no net.bridge.bridge-nf-call-iptables)")
    topo = TOPOLOGIES[topology]
    args = topo.ping_args()
    _lab_up(topology, lab_down_after)
    proc = cli("lab", "break", topology, fault)
    assert proc.returncode == 0, proc.stderr
    ns, dst = topo.ping(fault)
    rc, result = _diagnose(ns, dst, *args)
    assert result["reachable"] is False, result
    assert rc == 1, result
    first = result["causes"][0]
    assert first["cause"] == fault, json.dumps(result["causes"], indent=1)
    assert first["fix"], first
    fixes = [command for cause in result["causes"] for command in cause["fix"]]
    for command in fixes:
        done = subprocess.run(command, shell=True, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    assert _ping_ok(ns, dst, *args), f"still no ping after {fixes}"
    rc, after = _diagnose(ns, dst, *args)
    assert rc == 0 and after["causes"] == [], after
    _lab_up_healthy(topology, lab_down_after)   # rebuilt healthy: the same commands must not break it
    for command in fixes:
        subprocess.run(command, shell=True, capture_output=True)   # may fail (nothing to delete): harmless
    broken = [p for p in _pings(topology) if not _ping_ok(*p, *args)]
    assert broken == [], f"{fixes} broke the healthy {topology}: {broken}"


def test_veth_pair_seed_is_explained_and_fixed(lab_down_after):
    """The seed: veth0 192.168.4.3/24 and veth1 192.168.4.2/24 in one namespace, `ping -I veth0
    192.168.4.2` gets no reply. diagnose explains it, its fix works, and `lab fix` repairs it too."""
    _lab_up("veth-pair", lab_down_after)
    ns, dst = TOPOLOGIES["veth-pair"].ping()
    assert not _ping_ok(ns, dst, "-I", "veth0") and _ping_ok(ns, dst)   # the seed: only the bound ping fails
    proc = cli("diagnose", "ping", dst, "-I", "veth0", "--netns", ns, "--count", "2", "--timeout", "1", timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stdout
    assert f"it breaks in {ns}, veth1: local_source" in text
    assert "SO_BINDTODEVICE" in text and "skips its local route" in text and "over lo" in text
    fix = [line.strip() for line in text.splitlines() if line.startswith("    ip netns exec")]
    assert fix == [f"ip netns exec {ns} sysctl -w net.ipv4.conf.veth1.accept_local=1"], text
    for command in fix:
        assert subprocess.run(command, shell=True, capture_output=True).returncode == 0
    assert _ping_ok(ns, dst, "-I", "veth0")
    rc, result = _diagnose(ns, dst, "-I", "veth0")
    assert rc == 0 and result["device"] == "veth0" and result["source"] == "192.168.4.3", result
    # the seed again, then `lab fix`; and `lab break` brings the seed's fault back
    _lab_up("veth-pair", lab_down_after)
    assert not _ping_ok(ns, dst, "-I", "veth0")
    proc = cli("lab", "fix", "veth-pair")
    assert proc.returncode == 0 and "local_source" in proc.stdout
    assert _ping_ok(ns, dst, "-I", "veth0") and _ping_ok(ns, "192.168.4.3", "-I", "veth1")
    assert cli("lab", "break", "veth-pair", "local_source").returncode == 0
    assert not _ping_ok(ns, dst, "-I", "veth0")


def test_lab_fix_undoes_the_faults(lab_down_after):
    _lab_up("routed", lab_down_after)
    ns, dst = TOPOLOGIES["routed"].ping()
    for fault in ("ip_forward_disabled", "no_return_route"):
        assert cli("lab", "break", "routed", fault).returncode == 0
    assert not _ping_ok(ns, dst)
    proc = cli("lab", "fix", "routed")
    assert proc.returncode == 0 and "no_return_route" in proc.stdout
    assert _ping_ok(ns, dst)


def test_lab_down_all_removes_everything_it_made():
    from bpftools.lab import STATE_DIR, namespaces_of, prefix

    try:
        assert cli("lab", "up", "veth").returncode == 0
        assert cli("lab", "up", "bridge").returncode == 0
        assert cli("lab", "break", "veth", "netfilter_drop").returncode == 0
        assert len(namespaces_of()) == 5
        listed = [json.loads(line) for line in cli("lab", "list", "--json").stdout.splitlines()]
        assert {r["topology"]: r["broken"] for r in listed if r["up"]} == {"veth": ["netfilter_drop"], "bridge": []}
    finally:
        proc = cli("lab", "down", "--all")
    assert proc.returncode == 0 and "removed 5 namespace(s)" in proc.stdout
    assert namespaces_of() == []
    assert not [f for f in (os.listdir(STATE_DIR) if os.path.isdir(STATE_DIR) else []) if f.startswith(prefix())]
