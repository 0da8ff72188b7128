"""The overlay labs' faults as data (no kernel): each says where its cause is, none makes a tunnel
device carry more than its underlay can, and each (topology, fault, family) that builds here has
its recorded namespace state, every namespace of the lab in it (overlay/record.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpftools.lab_overlays import OVERLAY_FLANNEL, OVERLAY_L2, TOPOLOGIES

RECORDED = Path(__file__).parent / "fixtures" / "diagnose" / "overlay"
ROLES = ("node1", "node2", "pod1", "pod2")
# the largest MTU each tunnel device may have: its underlay's 1500 less the encapsulation
TUNNEL_MTU = {"vxlan0": 1450, "geneve0": 1450, "flannel.1": 1450, "flannel-v6.1": 1430}


def _injected():
    for topo in TOPOLOGIES:
        for fault in topo.faults.values():
            for family in fault.families:
                yield topo, topo.fault(fault.name, family), family


@pytest.mark.parametrize("topo,fault,family", list(_injected()),
                         ids=lambda v: getattr(v, "name", None) or f"ipv{v}")
def test_every_fault_is_located_on_a_role_of_its_lab(topo, fault, family):
    assert fault.at in ROLES
    for role, _ in fault.steps + fault.undo:
        assert role in ROLES


@pytest.mark.parametrize("topo,fault,family", list(_injected()),
                         ids=lambda v: getattr(v, "name", None) or f"ipv{v}")
def test_no_step_raises_a_tunnel_above_what_its_underlay_carries(topo, fault, family):
    for _, cmd in fault.steps + fault.undo:
        if cmd[:3] == ["ip", "link", "set"] and "mtu" in cmd and cmd[3] in TUNNEL_MTU:
            assert int(cmd[cmd.index("mtu") + 1]) <= TUNNEL_MTU[cmd[3]], cmd


@pytest.mark.parametrize("topo,fault,family", [(t, f, fam) for t in (OVERLAY_L2, OVERLAY_FLANNEL)
                                               for f in ["healthy"] + list(t.faults)
                                               for fam in t.families if f == "healthy" or fam in t.faults[f].families],
                         ids=lambda v: getattr(v, "name", None) or (f"ipv{v}" if isinstance(v, int) else v))
def test_each_case_is_recorded_with_every_namespace(topo, fault, family):
    path = (RECORDED if family == 4 else RECORDED / "ipv6") / f"{topo.name}-{fault}.json"
    data = json.loads(path.read_text())
    assert sorted(data["namespaces"]) == [f"bpftlab-{topo.name}-{role}" for role in ROLES]
    assert data["netns"] == f"bpftlab-{topo.name}-pod1"
    assert data["target"] == topo.ping(None if fault == "healthy" else fault, family)[1]
