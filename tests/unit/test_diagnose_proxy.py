"""Proxy ARP and proxy NDP as the kernel answers (arp_process: arp_fwd_proxy, arp_fwd_pvlan,
proxy entries; ndisc_recv_ns: proxy_ndp), routed pods (Calico: /32 addresses, a link-local
gateway nobody owns answered by the node's veth) and routing loops, on hand-made state and on
the recorded routed-pods and two-routers labs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpftools.commands import rendered
from bpftools.diagnose import prover_for, replay
from bpftools.diagnose.segment import Station, answer, proxy_arp_reason, proxy_switched_off
from bpftools.diagnose.state import Addr, Neighbour, Route
from bpftools.diagnose.verdict import build_causes

from test_diagnose_checks import ns, veth

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"


def _node(**sysctls):
    """A node: cali-a (2) and cali-b (3) without addresses, an uplink (4), pod routes and a default."""
    base = {"net.ipv4.ip_forward": 1, "net.ipv4.conf.cali-a.forwarding": 1}
    return ns("node", [veth(2, "cali-a", "a", 2), veth(3, "cali-b", "b", 2), veth(4, "uplink", "up", 2)],
              [Addr(4, "10.74.0.2", 24)],
              [Route("10.74.10.2", 32, oif=2, scope=253), Route("10.74.10.3", 32, oif=3, scope=253),
               Route(oif=4, gateway="10.74.0.1")], sysctls={**base, **sysctls})


def _asked(state, ifname="cali-a", target="169.254.1.1", sender="10.74.10.2"):
    return answer(Station(state, state.link_by_name(ifname)), target, sender)


def test_proxy_arp_answers_for_a_gateway_routed_out_of_another_interface():
    found = _asked(_node(**{"net.ipv4.conf.cali-a.proxy_arp": 1}))
    assert found.ok and found.proxy and "proxy_arp: it routes 169.254.1.1 out of uplink" in found.detail


@pytest.mark.parametrize("sysctls,why", [
    ({}, "proxy_arp off"),
    ({"net.ipv4.conf.cali-a.proxy_arp": 1, "net.ipv4.conf.cali-a.medium_id": -1}, "medium_id -1 never proxies"),
    ({"net.ipv4.conf.cali-a.proxy_arp": 1, "net.ipv4.conf.cali-a.medium_id": 5,
      "net.ipv4.conf.uplink.medium_id": 5}, "the same medium on both sides"),
])
def test_no_proxy_answer(sysctls, why):
    assert _asked(_node(**sysctls)) is None, why


def test_arp_ignore_does_not_apply_to_proxied_answers():
    state = _node(**{"net.ipv4.conf.cali-a.proxy_arp": 1, "net.ipv4.conf.all.arp_ignore": 8})
    assert _asked(state).ok


def test_a_target_routed_back_out_of_the_asking_interface_needs_proxy_arp_pvlan():
    state = _node(**{"net.ipv4.conf.cali-a.proxy_arp": 1})
    assert _asked(state, target="10.74.10.9", sender="10.74.10.2") is not None   # out of uplink
    assert proxy_arp_reason(state, state.link_by_name("cali-a"), "10.74.10.2", "10.74.10.7") is None
    state.sysctls["net.ipv4.conf.cali-a.proxy_arp_pvlan"] = 1
    assert proxy_arp_reason(state, state.link_by_name("cali-a"), "10.74.10.2", "10.74.10.7") == "proxy_arp_pvlan"


def test_a_proxy_entry_answers_without_proxy_arp():
    state = _node()
    state.ndp_proxies.append(Neighbour(2, "169.254.1.1", "proxy"))
    assert _asked(state).ok and "a proxy entry" in _asked(state).detail


def test_a_proxy_that_does_not_forward_is_told_to():
    state = _node(**{"net.ipv4.conf.cali-a.proxy_arp": 1, "net.ipv4.conf.cali-a.forwarding": 0})
    found = _asked(state)
    assert not found.ok and found.fix == [("sysctl", "-w", "net.ipv4.conf.cali-a.forwarding=1")]


def test_proxy_delay_is_shown():
    state = _node(**{"net.ipv4.conf.cali-a.proxy_arp": 1, "net.ipv4.neigh.cali-a.proxy_delay": 80})
    assert "after up to 800 ms (proxy_delay)" in _asked(state).detail


def test_a_router_that_would_proxy_is_named_with_the_sysctl():
    state = _node()
    found = proxy_switched_off(Station(state, state.link_by_name("cali-b")), "169.254.1.1", "10.74.10.3")
    assert not found.ok and found.station.link.ifname == "cali-b"
    assert found.fix == [("sysctl", "-w", "net.ipv4.conf.cali-b.proxy_arp=1")]
    assert "proxy_arp is off on cali-b" in found.detail


# -- recorded labs -------------------------------------------------------------------------------------

def _recorded(name: str):
    data = json.loads((FIXTURES / name).read_text())
    walk = replay(data)
    return walk, build_causes(walk.findings, [], prover_for(data))


def _short(netns: str) -> str:
    return netns.split("-routed-pods-")[-1].split("-two-routers-")[-1]


@pytest.mark.parametrize("name", ["routed-pods-healthy.json", "ipv6/routed-pods-healthy.json"])
def test_routed_pods_are_healthy_over_the_gateway_nobody_owns(name):
    walk, causes = _recorded(name)
    assert walk.request_delivered and walk.reply_delivered and causes == []
    assert [(_short(h.netns), h.iif, h.oif) for h in walk.hops if h.direction == "request"] == [
        ("a", None, "eth0"), ("node", "cali-a", "cali-b"), ("b", "eth0", None)]
    by_proxy = [f.detail for f in walk.findings if f.check == "nexthop" and "proxy" in f.detail]
    assert by_proxy, [f.detail for f in walk.findings if f.check == "nexthop"]


@pytest.mark.parametrize("name,fix", [
    ("routed-pods-neighbor_unreachable.json", "sysctl -w net.ipv4.conf.cali-b.proxy_arp=1"),
    ("ipv6/routed-pods-neighbor_unreachable.json", "sysctl -w net.ipv6.conf.cali-b.proxy_ndp=1"),
])
def test_proxying_off_is_located_on_the_nodes_interface(name, fix):
    _, causes = _recorded(name)
    first = causes[0]
    assert (first.cause, _short(first.netns), first.ifname) == ("neighbor_unreachable", "node", "cali-b")
    assert first.proven and rendered(first.fix) == [f"ip netns exec {first.netns} {fix}"]


@pytest.mark.parametrize("name,dst", [("routed-pods-routing_loop.json", "10.74.10.3"),
                                      ("ipv6/routed-pods-routing_loop.json", "fd00:74:10::3")])
def test_the_nodes_missing_pod_route_is_a_loop_fixed_on_the_node(name, dst):
    _, causes = _recorded(name)
    first = causes[0]
    assert (first.cause, _short(first.netns), first.ifname) == ("routing_loop", "node", "cali-b")
    assert "node -> " in first.detail and "-up -> " in first.detail and "dev uplink" in first.detail
    assert first.proven and rendered(first.fix) == [f"ip netns exec {first.netns} ip route add {dst} dev cali-b"]
    assert not any("-up " in cmd for cmd in rendered(first.fix))   # never a route on the uplink pointing back


@pytest.mark.parametrize("name,fix", [("routed-pods-no_route.json", "ip route add 10.74.10.3 dev eth0"),
                                      ("ipv6/routed-pods-no_route.json",
                                       "ip route add fd00:74:10::3 via fe80::1 dev eth0")])
def test_a_pod_without_its_gateway_route_gets_a_route_that_runs(name, fix):
    _, causes = _recorded(name)
    first = causes[0]
    assert (first.cause, _short(first.netns)) == ("no_route", "a")
    assert first.proven and rendered(first.fix) == [f"ip netns exec {first.netns} {fix}"]


@pytest.mark.parametrize("name", ["two-routers-routing_loop.json", "ipv6/two-routers-routing_loop.json"])
def test_two_routers_routing_to_each_other_are_a_loop_fixed_where_it_points_back(name):
    walk, causes = _recorded(name)
    first = causes[0]
    assert (first.cause, _short(first.netns), first.ifname) == ("routing_loop", "r2", "r2-s")
    assert first.detail.count("-two-routers-r1") >= 2 and "via" in first.detail
    assert first.proven and "dev r2-s" in rendered(first.fix)[0]
    assert walk.hops[-1].action == "broken" and "routing loop" in walk.hops[-1].note


def _point_to_point(family: int):
    """x and y joined by a veth, each with one address and the other's as its peer (`ip addr add A
    peer B`): no shared subnet, the peer route is the way."""
    from bpftools.diagnose.state import Snapshot, default_rules
    from bpftools.diagnose.walk import Walker

    mine, theirs = ("10.9.0.1", "10.9.0.2") if family == 4 else ("fd00:9::1", "fd00:9::2")
    host = 32 if family == 4 else 128
    rules = default_rules(4) + default_rules(6)
    x = ns("x", [veth(2, "eth0", "y", 2)], [Addr(2, mine, host, peer=theirs)],
           [Route(theirs, host, oif=2, scope=253)], rules=rules)
    y = ns("y", [veth(2, "eth0", "x", 2)], [Addr(2, theirs, host, peer=mine)], [Route(mine, host, oif=2, scope=253)],
           rules=rules)
    return Walker(Snapshot({"x": x, "y": y})).walk("x", theirs)


@pytest.mark.parametrize("family", [4, 6])
def test_peer_addresses_reach_each_other(family):
    walk = _point_to_point(family)
    assert walk.request_delivered and walk.reply_delivered, [h.note for h in walk.hops]
    assert [f.detail for f in walk.findings if not f.ok] == []
