"""The overlay labs on the real kernel, plain `ping` through `ip netns exec` (what `diagnose` says
about them is the lab matrix's, test_diagnose_lab.py): healthy, the pods ping each other in both
families; each fault breaks its ping and only what it should; `lab fix` repairs it; `lab down`
leaves nothing. Topologies whose tunnel module is missing skip with the reason."""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from bpftools_proc import cli
from bpftools.lab import STATE_DIR, TOPOLOGIES, namespaces_of
from bpftools.lab_overlays import TOPOLOGIES as OVERLAYS
from waiting import wait_until

CASES = [(t.name, f.name, family) for t in OVERLAYS for f in t.faults.values() for family in f.families]


def _feature(topology: str):
    return [pytest.mark.feature(TOPOLOGIES[topology].requires)]


def _ping(ns: str, dst: str, size: int = 56) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1",
                           "-s", str(size), dst], capture_output=True).returncode == 0


def _pings_work(topology: str, pings) -> None:
    for ns, dst, size in pings:
        wait_until(lambda: _ping(ns, dst, size), f"{topology}: ping -s {size} {dst} from {ns}", timeout=20,
                   interval=0.2)


def _healthy_pings(topology: str):
    """Every (namespace, address, size) the topology's pings use, in both families."""
    topo = TOPOLOGIES[topology]
    found = {topo.ping(family=family) + (56,) for family in topo.families}
    found |= {topo.ping(f.name, family) + (topo.ping_size(f.name, family),)
              for f in topo.faults.values() for family in f.families}
    return sorted(found)


def _untouched(topology: str, fault: str, family: int):
    """The pings `fault` must leave working: the small ones when it is about size (MTU), and the
    other family's when its steps are per family (Flannel's two devices; IPv4's rp_filter)."""
    topo, f = TOPOLOGIES[topology], TOPOLOGIES[topology].faults[fault]
    if topo.ping_size(fault, family) != 56:
        return [topo.ping(family=other) + (56,) for other in topo.families]
    if f.ipv6 is None or f.ipv6.steps is not None:
        return [topo.ping(family=other) + (56,) for other in topo.families if other != family]
    return []


@pytest.fixture(scope="module")
def lab_prefix():
    """bpftlab-<unique>-<topology>-<role> for this module's labs (the `bpftools lab` processes
    inherit it): a user's lab and parallel runs never meet."""
    previous = os.environ.get("BPFTOOLS_LAB_PREFIX")
    os.environ["BPFTOOLS_LAB_PREFIX"] = f"bpftlab-o{uuid.uuid4().hex[:8]}"
    yield os.environ["BPFTOOLS_LAB_PREFIX"]
    if previous is None:
        os.environ.pop("BPFTOOLS_LAB_PREFIX")
    else:
        os.environ["BPFTOOLS_LAB_PREFIX"] = previous


@pytest.fixture(scope="module")
def labs(lab_prefix):
    """One lab of each overlay for the module, brought up on first use; all down at the end."""
    made = []

    def up(topology: str) -> None:
        if topology not in made:
            made.append(topology)
            proc = cli("lab", "up", topology, timeout=120)
            assert proc.returncode == 0, proc.stderr

    yield up
    for topology in made:
        cli("lab", "down", topology)


@pytest.mark.parametrize("topology", [pytest.param(t.name, marks=_feature(t.name)) for t in OVERLAYS])
def test_healthy_overlay_pings_in_both_families(topology, labs):
    labs(topology)
    assert TOPOLOGIES[topology].families == (4, 6)
    _pings_work(topology, _healthy_pings(topology))


@pytest.mark.parametrize("topology,fault,family", [pytest.param(t, f, fam, marks=_feature(t), id=f"{t}-{f}-ipv{fam}")
                                                   for t, f, fam in CASES])
def test_fault_breaks_its_ping_and_lab_fix_repairs_it(topology, fault, family, labs):
    labs(topology)
    topo = TOPOLOGIES[topology]
    ns, dst = topo.ping(fault, family)
    size = topo.ping_size(fault, family)
    _pings_work(topology, [(ns, dst, size)])
    proc = cli("lab", "break", topology, fault, *(["-6"] if family == 6 else []))
    try:
        assert proc.returncode == 0, proc.stderr
        assert not _ping(ns, dst, size), f"{topology} {fault}: the ping still works"
        _pings_work(topology, _untouched(topology, fault, family))
    finally:
        fixed = cli("lab", "fix", topology)
    assert fixed.returncode == 0 and fault in fixed.stdout, fixed.stdout + fixed.stderr
    _pings_work(topology, _healthy_pings(topology))


@pytest.mark.feature("vxlan_module")
def test_lab_down_leaves_nothing(monkeypatch):
    lab_prefix = f"bpftlab-d{uuid.uuid4().hex[:8]}"   # not the other tests' labs
    monkeypatch.setenv("BPFTOOLS_LAB_PREFIX", lab_prefix)
    try:
        for topology in ("overlay-l2", "overlay-flannel"):
            assert cli("lab", "up", topology, timeout=120).returncode == 0
        assert cli("lab", "break", "overlay-l2", "tunnel_remote_not_local").returncode == 0
        assert cli("lab", "break", "overlay-flannel", "rp_filter").returncode == 0
        listed = {r["topology"]: r["broken"] for r in map(json.loads, cli("lab", "list", "--json").stdout.splitlines())
                  if r["up"]}
        assert listed == {"overlay-l2": ["tunnel_remote_not_local"], "overlay-flannel": ["rp_filter"]}, listed
    finally:
        removed = [cli("lab", "down", topology) for topology in ("overlay-l2", "overlay-flannel")]
    assert all(proc.returncode == 0 for proc in removed)
    assert namespaces_of() == []
    assert not [f for f in (os.listdir(STATE_DIR) if os.path.isdir(STATE_DIR) else []) if f.startswith(lab_prefix)]
