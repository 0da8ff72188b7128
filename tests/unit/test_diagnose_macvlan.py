"""macvlan/macvtap on recorded state: a child sends on its parent's wire, a parent and its child
never talk (`macvlan_parent_isolation`, with the shim as its fix), siblings talk only in bridge
mode (`macvlan_mode`)."""
from __future__ import annotations

import pytest

from bpftools.commands import rendered
from bpftools.diagnose.state import Addr, Link, Route, Snapshot
from bpftools.diagnose.verdict import build_causes
from bpftools.diagnose.walk import Walker

from test_diagnose_checks import ns, veth

SHIM_FIX = ["ip link add shim-lan0 link lan0 type macvlan mode bridge", "ip addr add 10.74.0.1/32 dev shim-lan0",
            "ip link set shim-lan0 up", "ip route add 10.74.0.2/32 dev shim-lan0"]


def child(ifindex: int, name: str, mode: str = "bridge", lower_netns: str = "host", lower_ifindex: int = 2,
          kind: str = "macvlan") -> Link:
    return Link(ifindex, name, kind, mac=f"02:00:00:00:01:{ifindex:02x}", lower_netns=lower_netns,
                lower_ifindex=lower_ifindex, mode=mode)


def lan(ctr2_mode: str = "bridge", shim: bool = False, kind: str = "macvlan") -> Snapshot:
    """host lan0 10.74.0.1 -- lan 10.74.0.3; ctr 10.74.0.2 and ctr2 10.74.0.4: children of lan0."""
    host_links = [veth(2, "lan0", "lan", 2, upper_macs=["02:00:00:00:01:02"])]
    host_addrs, host_routes = [Addr(2, "10.74.0.1", 24)], []
    if shim:
        host_links.append(child(3, "shim-lan0", lower_netns="host"))
        host_addrs.append(Addr(3, "10.74.0.1", 32))
        host_routes.append(Route(dst="10.74.0.2", dst_len=32, oif=3, scope=253))
    return Snapshot({
        "host": ns("host", host_links, host_addrs, host_routes),
        "lan": ns("lan", [veth(2, "eth0", "host", 2)], [Addr(2, "10.74.0.3", 24)]),
        "ctr": ns("ctr", [child(2, "eth0", kind=kind)], [Addr(2, "10.74.0.2", 24)]),
        "ctr2": ns("ctr2", [child(2, "eth0", ctr2_mode)], [Addr(2, "10.74.0.4", 24)]),
    })


def _causes(snap: Snapshot, src: str, dst: str):
    walk = Walker(snap).walk(src, dst)
    return walk, build_causes(walk.findings, [])


def test_the_host_cannot_reach_its_child_and_the_shim_is_the_fix():
    walk, causes = _causes(lan(), "host", "10.74.0.2")
    assert not walk.request_delivered
    assert [(c.cause, c.netns, c.ifname) for c in causes][0] == ("macvlan_parent_isolation", "host", "lan0")
    assert rendered(causes[0].fix) == SHIM_FIX
    assert "never exchanges frames with its parent lan0" in causes[0].detail


def test_with_the_shim_the_host_reaches_its_child_and_back():
    walk, causes = _causes(lan(shim=True), "host", "10.74.0.2")
    assert walk.request_delivered and walk.reply_delivered and causes == []
    assert [(h.netns, h.oif or h.iif) for h in walk.hops] == [("host", "shim-lan0"), ("ctr", "eth0"),
                                                             ("ctr", "eth0"), ("host", "shim-lan0")]


def test_a_child_reaches_another_host_on_its_parents_wire():
    walk, causes = _causes(lan(), "ctr", "10.74.0.3")
    assert walk.request_delivered and walk.reply_delivered and causes == []
    assert walk.dst_netns == "lan"


def test_a_child_cannot_reach_its_parents_address():
    walk, causes = _causes(lan(), "ctr", "10.74.0.1")
    assert not walk.request_delivered
    assert (causes[0].cause, causes[0].netns, causes[0].ifname) == ("macvlan_parent_isolation", "host",
                                                                             "lan0")
    assert rendered(causes[0].fix) == SHIM_FIX   # the route to the asking child


def test_bridge_mode_siblings_talk():
    walk, causes = _causes(lan(), "ctr", "10.74.0.4")
    assert walk.reply_delivered and causes == []


@pytest.mark.parametrize("mode,why", [("private", "private mode never exchanges frames"),
                                      ("vepa", "hairpins")])
def test_siblings_the_mode_keeps_apart(mode, why):
    walk, causes = _causes(lan(ctr2_mode=mode), "ctr", "10.74.0.4")
    assert not walk.request_delivered
    assert (causes[0].cause, causes[0].netns) == ("macvlan_mode", "ctr2")
    assert why in causes[0].detail
    assert rendered(causes[0].fix) == ["ip netns exec ctr2 ip link set dev eth0 type macvlan mode bridge"]


def test_no_shim_fix_for_a_child_a_shim_cannot_reach():
    snap = lan()
    snap.ns("ctr").links[1].mode = "private"
    _, causes = _causes(snap, "host", "10.74.0.2")
    assert causes[0].cause == "macvlan_parent_isolation" and rendered(causes[0].fix) == []


def test_a_recording_without_the_new_fields_still_loads():
    data = lan().to_dict()
    for state in data.values():
        for link in state["links"]:
            for key in ("lower_netns", "lower_ifindex", "mode", "upper_macs"):
                link.pop(key)
    assert Snapshot.from_dict(data).ns("ctr").links[1].lower_netns is None


def test_a_parent_without_childrens_addresses_is_not_searched_for_them():
    snap = lan()
    snap.ns("host").links[1].upper_macs = []
    _, causes = _causes(snap, "host", "10.74.0.2")
    assert causes[0].cause == "neighbor_unreachable"


@pytest.mark.parametrize("mode", ["l2", "l3", "l3s"])
def test_an_ipvlan_child_is_isolated_from_its_parent_too(mode):
    """Recorded state (this kernel has no ipvlan): the isolation is named; no macvlan shim is offered."""
    snap = lan(kind="ipvlan")
    snap.ns("ctr").links[1].mode = mode
    _, causes = _causes(snap, "host", "10.74.0.2")
    assert causes[0].cause == "macvlan_parent_isolation" and rendered(causes[0].fix) == []
    assert "an ipvlan child never exchanges frames with its parent lan0" in causes[0].detail


def test_the_shim_fix_applied_to_the_model_reaches_the_child():
    """What the prover does with the printed fix: apply its argv on a copy, walk again."""
    from bpftools.commands import Command
    from bpftools.diagnose.apply_fix import Refused, applied

    snap = lan()
    _, causes = _causes(snap, "host", "10.74.0.2")
    fixed = applied(snap, causes[0].fix, "host")
    walk = Walker(fixed).walk("host", "10.74.0.2")
    assert walk.request_delivered and walk.reply_delivered and build_causes(walk.findings, []) == []
    assert fixed.ns("host").link_by_name("shim-lan0").mode == "bridge" and snap.ns("host").link_by_name("shim-lan0") is None
    with pytest.raises(Refused):   # the shim exists: the kernel says File exists
        applied(fixed, [Command(("ip", "link", "add", "shim-lan0", "link", "lan0", "type", "macvlan", "mode",
                                 "bridge"), None)], "host")


def test_the_mode_fix_applied_to_the_model():
    from bpftools.commands import Command
    from bpftools.diagnose.apply_fix import applied

    snap = lan(ctr2_mode="private")
    fixed = applied(snap, [Command(("ip", "link", "set", "dev", "eth0", "type", "macvlan", "mode", "bridge"),
                                   "ctr2")], "host")
    walk, causes = _causes(fixed, "ctr", "10.74.0.4")
    assert walk.reply_delivered and causes == []
