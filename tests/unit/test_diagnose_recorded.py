"""The path walker and checks on namespace state recorded from every lab (topology, fault),
IPv4 and (in ipv6/) the IPv6 counterparts: the injected fault is the first cause, and a
healthy path fails no check at all. Re-record with tests/unit/fixtures/diagnose/record.sh
(root; `record.sh -6` for IPv6)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpftools.commands import rendered
from bpftools.diagnose import replay
from bpftools.diagnose.verdict import build_causes
from bpftools.lab import TOPOLOGIES

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"
RECORDED = sorted(FIXTURES.glob("*.json")) + sorted(FIXTURES.glob("ipv6/*.json"))


def _id(path: Path) -> str:
    return f"{path.parent.name}-{path.stem}" if path.parent.name == "ipv6" else path.stem




def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_recordings_exist():
    assert len(RECORDED) >= 10


@pytest.mark.parametrize("path", [p for p in RECORDED if p.stem.endswith("-healthy")], ids=_id)
def test_healthy_recording_fails_no_check(path):
    walk = replay(_load(path))
    assert walk.request_delivered and walk.reply_delivered
    assert [f for f in walk.findings if not f.ok] == []
    assert build_causes(walk.findings, []) == []


@pytest.mark.parametrize("path", [p for p in RECORDED if not p.stem.endswith("-healthy")], ids=_id)
def test_recorded_fault_is_the_first_cause(path):
    topology = max((t for t in TOPOLOGIES if path.stem.startswith(f"{t}-")), key=len)
    fault = path.stem[len(topology) + 1:]
    walk = replay(_load(path))
    causes = build_causes(walk.findings, [])
    assert causes, [f.detail for f in walk.findings]
    assert causes[0].cause == fault, [c.cause for c in causes]
    assert causes[0].fix and all(cmd.startswith("ip netns exec bpftlab-") for cmd in rendered(causes[0].fix))


def test_routed_path_crosses_the_router_both_ways():
    walk = replay(_load(FIXTURES / "routed-healthy.json"))
    request = [(h.netns.split("-")[-1], h.iif, h.oif, h.action) for h in walk.hops if h.direction == "request"]
    assert request == [("left", None, "eth0", "send"), ("router", "r-left", "r-right", "forward"),
                       ("right", "eth0", None, "deliver")]
    reply = [(h.netns.split("-")[-1], h.action) for h in walk.hops if h.direction == "reply"]
    assert reply == [("right", "send"), ("router", "forward"), ("left", "deliver")]
    assert walk.src == "10.72.1.2"


def test_bridged_path_goes_through_the_switch_namespace():
    walk = replay(_load(FIXTURES / "bridge-healthy.json"))
    hops = [(h.netns.split("-")[-1], h.iif, h.oif, h.action) for h in walk.hops if h.direction == "request"]
    assert hops == [("a", None, "eth0", "send"), ("sw", "pa", "pb", "bridge"), ("b", "eth0", None, "deliver")]


def test_rp_filter_cause_names_the_interface_and_loose_mode():
    causes = build_causes(replay(_load(FIXTURES / "routed-rp_filter.json")).findings, [])
    first = causes[0]
    assert first.ifname == "eth0" and first.netns.endswith("-right")
    assert "leaves by eth1" in first.detail
    assert any("net.ipv4.conf.all.rp_filter=2" in c for c in rendered(first.fix))
    assert any("net.ipv4.conf.eth0.rp_filter=2" in c for c in rendered(first.fix))


def test_missing_routes_get_a_route_through_the_router():
    causes = build_causes(replay(_load(FIXTURES / "routed-no_route.json")).findings, [])
    assert rendered(causes[0].fix) == \
        ["ip netns exec bpftlab-routed-left ip route add 10.72.2.2 via 10.72.1.1 dev eth0"]
    causes = build_causes(replay(_load(FIXTURES / "routed-no_return_route.json")).findings, [])
    assert rendered(causes[0].fix) == \
        ["ip netns exec bpftlab-routed-right ip route add 10.72.1.2 via 10.72.2.1 dev eth0"]


def test_docker_story_fix_accepts_bridged_traffic():
    causes = build_causes(replay(_load(FIXTURES / "bridge-bridge_netfilter.json")).findings, [])
    assert rendered(causes[0].fix) == \
        ["ip netns exec bpftlab-bridge-sw iptables -I FORWARD -i br0 -o br0 -j ACCEPT"]
    assert "bridge-nf-call-iptables = 1" in causes[0].detail


def test_ipv6_routed_path_and_fixes():
    walk = replay(_load(FIXTURES / "ipv6" / "routed-healthy.json"))
    assert walk.family == 6 and walk.src == "fd00:72:1::2"
    request = [(h.netns.split("-")[-1], h.iif, h.oif, h.action) for h in walk.hops if h.direction == "request"]
    assert request == [("left", None, "eth0", "send"), ("router", "r-left", "r-right", "forward"),
                       ("right", "eth0", None, "deliver")]
    causes = build_causes(replay(_load(FIXTURES / "ipv6" / "routed-no_route.json")).findings, [])
    assert rendered(causes[0].fix) == \
        ["ip netns exec bpftlab-routed-left ip route add fd00:72:2::2 via fd00:72:1::1 dev eth0"]
    causes = build_causes(replay(_load(FIXTURES / "ipv6" / "routed-ip_forward_disabled.json")).findings, [])
    assert rendered(causes[0].fix) == \
        ["ip netns exec bpftlab-routed-router sysctl -w net.ipv6.conf.all.forwarding=1"]
    causes = build_causes(replay(_load(FIXTURES / "ipv6" / "routed-mtu.json")).findings, [])
    assert "packet-too-big" in causes[0].detail and causes[0].netns.endswith("-router")
    causes = build_causes(replay(_load(FIXTURES / "ipv6" / "routed-netfilter_drop.json")).findings, [])
    assert rendered(causes[0].fix) == \
        ["ip netns exec bpftlab-routed-router ip6tables -I FORWARD -p ipv6-icmp -j ACCEPT"]
