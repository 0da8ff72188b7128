"""apply_fix: a fix's argv applied to recorded namespace state, as the kernel would change it;
what it cannot model raises Unmodelled (never a silent no-op)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpftools.commands import Command
from bpftools.diagnose.apply_fix import Refused, Unmodelled, applied, apply_argv, edit_iptables_save
from bpftools.diagnose.firewall import Packet, firewall_verdict
from bpftools.diagnose.routing import fib_lookup
from bpftools.diagnose.state import Addr, Link, NetnsState, Route, Snapshot, default_rules, local_routes

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"


def _state() -> NetnsState:
    links = [Link(1, "lo"), Link(2, "eth0", "veth"), Link(3, "eth1", "veth", admin_up=False)]
    addrs = [Addr(2, "10.0.0.1", 24), Addr(3, "10.0.1.1", 24)]
    routes = local_routes(addrs) + [Route("10.0.0.0", 24, oif=2, prefsrc="10.0.0.1", scope=253)]
    return NetnsState("ns", links, addrs, routes, default_rules(4) + default_rules(6),
                      sysctls={"net.ipv4.ip_forward": 0, "net.ipv4.conf.eth0.forwarding": 0})


def _apply(state: NetnsState, line: str) -> NetnsState:
    apply_argv(state, line.split())
    return state


def test_ip_forward_sets_every_interface_as_the_kernel_does():
    state = _apply(_state(), "sysctl -w net.ipv4.ip_forward=1")
    assert state.forwarding("eth0") and state.forwarding("eth1")
    state = _apply(_state(), "sysctl -w net.ipv6.conf.all.forwarding=1")
    assert state.conf6("eth0", "forwarding") == 1 and state.forwarding("eth0", 6)


def test_route_add_resolves_the_gateways_device_and_del_removes_it():
    state = _apply(_state(), "ip route add 192.168.0.0/16 via 10.0.0.254")
    route = fib_lookup(state, "192.168.1.1").route
    assert (route.gateway, route.oif, route.dst_len) == ("10.0.0.254", 2, 16)
    _apply(state, "ip route del 192.168.0.0/16")
    assert fib_lookup(state, "192.168.1.1").route is None


def test_route_via_a_gateway_off_every_subnet_needs_onlink():
    with pytest.raises(Refused, match="not on-link"):
        _apply(_state(), "ip route add default via 169.254.1.1 dev eth0")
    state = _apply(_state(), "ip route add default via 169.254.1.1 dev eth0 onlink")
    assert fib_lookup(state, "8.8.8.8").route.gateway == "169.254.1.1"


def test_route_add_of_an_existing_route_fails_like_the_kernel():
    with pytest.raises(Refused, match="File exists"):
        _apply(_state(), "ip route add 10.0.0.0/24 dev eth0")
    state = _apply(_state(), "ip route replace 10.0.0.0/24 dev eth1")
    assert fib_lookup(state, "10.0.0.9").route.oif == 3


def test_link_up_brings_back_the_prefix_routes_of_its_addresses():
    state = _apply(_state(), "ip link set dev eth1 up")
    assert state.link_by_name("eth1").admin_up
    assert fib_lookup(state, "10.0.1.9").route.oif == 3


def test_address_add_and_del_carry_their_routes():
    state = _apply(_state(), "ip addr add 10.0.2.1/24 dev eth0")
    assert fib_lookup(state, "10.0.2.1").route.type == "local" and fib_lookup(state, "10.0.2.9").route.oif == 2
    _apply(state, "ip addr del 10.0.2.1/24 dev eth0")
    assert fib_lookup(state, "10.0.2.9").route is None and state.owns("10.0.2.1") is None
    state = _apply(_state(), "ip addr add 10.9.0.1 peer 10.9.0.2 dev eth0")
    assert fib_lookup(state, "10.9.0.2").route.oif == 2


def test_link_changes():
    state = _apply(_state(), "ip link set dev eth0 mtu 9000")
    _apply(state, "ip link set dev eth0 arp off")
    assert state.link_by_name("eth0").mtu == 9000 and state.link_by_name("eth0").noarp


@pytest.mark.parametrize("line", ["docker network connect net web", "ip link set dev eth9 up", "ip route flush all",
                                  "iptables -F", "nft flush ruleset", "sysctl net.ipv4.ip_forward",
                                  "ip route del 10.9.9.0/24", "ip rule del priority 4242"])
def test_what_the_model_cannot_apply_is_unmodelled(line):
    with pytest.raises(Unmodelled):
        _apply(_state(), line)


SAVE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
[3:252] -A INPUT -p icmp -m icmp --icmp-type 8 -j DROP
COMMIT
"""


def test_iptables_delete_finds_the_rule_behind_its_counters_and_insert_goes_first():
    text = edit_iptables_save(SAVE, "-t filter -D INPUT -p icmp -m icmp --icmp-type 8 -j DROP".split())
    assert "-j DROP" not in text
    request = Packet("forward", "10.0.0.2", "10.0.1.2", 8, "eth0", "eth1")
    assert firewall_verdict(SAVE, {}, request).dropped
    opened = edit_iptables_save(SAVE, "-I FORWARD -p icmp -j ACCEPT".split())
    assert not firewall_verdict(opened, {}, request).dropped
    with pytest.raises(Unmodelled):
        edit_iptables_save(SAVE, "-D INPUT -p tcp -j DROP".split())


def test_nft_insert_accept_and_delete_by_handle():
    ruleset = {"nftables": [{"chain": {"family": "inet", "table": "fw", "name": "input", "hook": "input",
                                       "prio": 0, "policy": "drop", "type": "filter"}}]}
    state = NetnsState("ns", nft_ruleset=ruleset)
    request = Packet("input", "10.0.0.2", "10.0.0.1", 8, "eth0")
    assert firewall_verdict("", state.nft_ruleset, request).dropped
    _apply(state, "nft insert rule inet fw input meta l4proto icmp accept")
    assert not firewall_verdict("", state.nft_ruleset, request).dropped
    handle = state.nft_ruleset["nftables"][1]["rule"]["handle"]
    _apply(state, f"nft delete rule inet fw input handle {handle}")
    assert firewall_verdict("", state.nft_ruleset, request).dropped


def test_applied_copies_only_what_changes_and_leaves_the_snapshot_alone():
    data = json.loads((FIXTURES / "routed-ip_forward_disabled.json").read_text())
    snapshot = Snapshot.from_dict(data["namespaces"])
    router = next(n for n in snapshot.names() if n.endswith("-router"))
    model = applied(snapshot, [Command(("sysctl", "-w", "net.ipv4.ip_forward=1"), router)], "host")
    assert model.ns(router).forwarding("r-left") and not snapshot.ns(router).forwarding("r-left")
    other = next(n for n in snapshot.names() if n != router)
    assert model.ns(other) is snapshot.ns(other)


def test_a_first_hop_route_makes_the_gateway_reachable_without_onlink():
    state = _apply(_state(), "ip route add 169.254.1.1 dev eth0 scope link")
    _apply(state, "ip route add default via 169.254.1.1 dev eth0")
    assert fib_lookup(state, "8.8.8.8").route.gateway == "169.254.1.1"


def test_ipv6_routes_get_the_kernels_metric_and_a_link_local_gateway_needs_no_link_route():
    state = _apply(_state(), "ip -6 route add default via fe80::1 dev eth0")
    route = fib_lookup(state, "fd00::9").route
    assert (route.gateway, route.priority, route.oif) == ("fe80::1", 1024, 2)
