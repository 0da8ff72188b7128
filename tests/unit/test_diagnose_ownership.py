"""Layer-2 ownership: a next hop on a connected subnet goes only to the station on the segment
that owns the address and would answer ARP; when nobody would, the walk stops at that hop with
`neighbor_unreachable` there (issue 11: addresses nobody has used to be "forwarded" back and forth
until "too many hops", with ip_forward_disabled ranked first)."""
from __future__ import annotations

import json
from pathlib import Path

from bpftools.diagnose import replay
from bpftools.diagnose.state import Addr, Link, Route, Snapshot
from bpftools.diagnose.verdict import build_causes
from bpftools.diagnose.walk import Walker

from test_diagnose_checks import ns, veth

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"


def _walk_recording(name: str, target: str):
    data = json.loads((FIXTURES / name).read_text())
    data["target"] = target
    return replay(data)


def _short(netns: str) -> str:
    return netns.rsplit("-", 1)[-1]


def test_unused_address_of_the_clients_own_subnet_stops_at_the_client():
    walk = _walk_recording("routed-healthy.json", "10.72.1.77")
    assert [(_short(h.netns), h.oif, h.action) for h in walk.hops] == [("left", "eth0", "broken")]
    assert "too many hops" not in " ".join(h.note for h in walk.hops)
    causes = build_causes(walk.findings, [])
    assert [(c["cause"], _short(c["netns"]), c["ifname"]) for c in causes] == [("neighbor_unreachable", "left",
                                                                                  "eth0")]
    assert "nobody on the segment of eth0: r-left in bpftlab-routed-router has the address 10.72.1.77" \
        in causes[0]["detail"]
    assert causes[0]["fix"] == []   # nothing to fix but the address itself


def test_unused_address_behind_the_router_stops_at_the_router():
    walk = _walk_recording("routed-healthy.json", "10.72.2.77")
    assert [(_short(h.netns), h.iif, h.oif, h.action) for h in walk.hops] == [
        ("left", None, "eth0", "send"), ("router", "r-left", "r-right", "broken")]
    causes = build_causes(walk.findings, [])
    assert [(c["cause"], _short(c["netns"]), c["ifname"]) for c in causes] == [("neighbor_unreachable", "router",
                                                                                  "r-right")]
    assert not [f for f in walk.findings if _short(f.netns) == "right"]   # never handed to right


def test_unused_address_on_a_bridge_names_every_station_asked():
    walk = _walk_recording("bridge-healthy.json", "10.71.0.77")
    assert [(_short(h.netns), h.action) for h in walk.hops] == [("a", "broken")]
    first = build_causes(walk.findings, [])[0]
    assert first["cause"] == "neighbor_unreachable" and _short(first["netns"]) == "a"
    assert "br0 in bpftlab-bridge-sw" in first["detail"] and "eth0 in bpftlab-bridge-b" in first["detail"]


def _nested(**b_sysctls):
    """a - sw1 (br0) - trunk veth - sw2 (br1) - b: two bridges in a row."""
    a = ns("a", [veth(2, "eth0", "sw1", 2)], [Addr(2, "10.5.0.1", 24)])
    sw1 = ns("sw1", [veth(2, "pa", "a", 2, master=4), veth(3, "trunk1", "sw2", 3, master=4), Link(4, "br0", "bridge")],
             [])
    sw2 = ns("sw2", [veth(2, "pb", "b", 2, master=4), veth(3, "trunk2", "sw1", 3, master=4), Link(4, "br1", "bridge")],
             [])
    b = ns("b", [veth(2, "eth0", "sw2", 2), Link(3, "dummy0", "dummy")], [Addr(2, "10.5.0.2", 24), Addr(3, "10.6.0.1", 32)],
           sysctls=b_sysctls)
    return Snapshot({"a": a, "sw1": sw1, "sw2": sw2, "b": b})


def test_nested_bridges_are_crossed_to_the_owner():
    walk = Walker(_nested()).walk("a", "10.5.0.2")
    assert walk.request_delivered and walk.reply_delivered
    request = [(h.netns, h.iif, h.oif, h.action) for h in walk.hops if h.direction == "request"]
    assert request == [("a", None, "eth0", "send"), ("sw1", "pa", "trunk1", "bridge"),
                       ("sw2", "trunk2", "pb", "bridge"), ("b", "eth0", None, "deliver")]
    assert [f for f in walk.findings if not f.ok] == []


def test_the_owner_that_would_not_answer_is_named_with_its_setting():
    snap = _nested(**{"net.ipv4.conf.all.arp_ignore": 1})
    a = snap.ns("a")
    a.routes.append(Route(dst="10.6.0.1", dst_len=32, oif=2))   # "10.6.0.1 dev eth0": on-link, owned by b's dummy0
    walk = Walker(snap).walk("a", "10.6.0.1")
    assert not walk.request_delivered and [h.action for h in walk.hops] == ["broken"]
    first = build_causes(walk.findings, [])[0]
    assert (first["cause"], first["netns"], first["ifname"]) == ("neighbor_unreachable", "b", "eth0")
    assert "arp_ignore = 1" in first["detail"]
    assert first["fix"] == ["ip netns exec b sysctl -w net.ipv4.conf.all.arp_ignore=0",
                            "ip netns exec b sysctl -w net.ipv4.conf.eth0.arp_ignore=0"]


def test_a_port_that_is_down_stops_the_walk_at_the_bridge_with_link_down():
    snap = _nested()
    snap.ns("sw2").link_by_name("pb").admin_up = False
    walk = Walker(snap).walk("a", "10.5.0.2")
    assert not walk.request_delivered
    first = build_causes(walk.findings, [])[0]
    assert (first["cause"], first["netns"], first["ifname"]) == ("link_down", "sw2", "pb")
    assert first["fix"] == ["ip netns exec sw2 ip link set dev pb up"]


# -- the seeds' veth pair with both ends in one namespace (ping -I veth0 192.168.4.2) ----------------------

def _veth_pair(**sysctls):
    return Snapshot({"h": ns("h", [veth(2, "veth0", "h", 3), veth(3, "veth1", "h", 2)],
                             [Addr(2, "192.168.4.3", 24), Addr(3, "192.168.4.2", 24)], sysctls=sysctls)})


def test_unbound_ping_of_the_other_end_never_leaves_lo():
    walk = Walker(_veth_pair()).walk("h", "192.168.4.2")
    assert [(h.oif, h.action) for h in walk.hops] == [("lo", "deliver"), ("lo", "deliver")]
    assert [f for f in walk.findings if not f.ok] == []


def test_ping_bound_to_veth0_leaves_by_veth0_and_is_a_martian_on_veth1():
    walk = Walker(_veth_pair()).walk("h", "192.168.4.2", device="veth0")
    assert walk.src == "192.168.4.3"
    assert [(h.direction, h.iif, h.oif, h.action) for h in walk.hops] == [
        ("request", None, "veth0", "send"), ("request", "veth1", None, "deliver"), ("reply", None, "lo", "deliver")]
    assert "SO_BINDTODEVICE" in walk.hops[0].note and "skips its local route" in walk.hops[0].note
    assert "table local routes the reply over lo" in walk.hops[2].note
    causes = build_causes(walk.findings, [])
    assert [(c["cause"], c["ifname"]) for c in causes] == [("local_source", "veth1")]
    assert causes[0]["fix"] == ["ip netns exec h sysctl -w net.ipv4.conf.veth1.accept_local=1"]
    assert "came back in on veth1" in causes[0]["detail"]


def test_accept_local_makes_the_bound_ping_healthy_unless_rp_filter_is_strict():
    walk = Walker(_veth_pair(**{"net.ipv4.conf.veth1.accept_local": 1})).walk("h", "192.168.4.2", device="veth0")
    assert walk.request_delivered and walk.reply_delivered and [f for f in walk.findings if not f.ok] == []
    strict = _veth_pair(**{"net.ipv4.conf.veth1.accept_local": 1, "net.ipv4.conf.all.rp_filter": 1})
    causes = build_causes(Walker(strict).walk("h", "192.168.4.2", device="veth0").findings, [])
    assert causes[0]["cause"] == "rp_filter"
    assert causes[0]["fix"] == ["ip netns exec h sysctl -w net.ipv4.conf.all.rp_filter=2",
                                "ip netns exec h sysctl -w net.ipv4.conf.veth1.rp_filter=2"]


def test_a_device_without_a_route_is_assumed_on_link():
    snap = _veth_pair()
    walk = Walker(snap).walk("h", "10.99.0.1", device="veth0")
    assert walk.hops[0].oif == "veth0" and "assumes 10.99.0.1 is on-link" in walk.hops[0].note
