"""IPv6 in `diagnose ping` on hand-written namespace state: targets as ping takes them
(`fe80::1%eth0`), the IPv6 FIB and source selection, NDP ownership (the receiving interface's
own usable addresses, proxy_ndp), forwarding (conf/all), routers that never fragment, the
echo counter's address words and the drops that belong to an IPv6 ping; the lab's IPv6
fault counterparts."""
from __future__ import annotations

import pytest

from bpftools.commands import join, rendered
from bpftools.diagnose import UsageProblem, parse_target
from bpftools.diagnose.live import filter_words, relevant_drops
from bpftools.diagnose.routing import fib_lookup, route_get, select_source
from bpftools.diagnose.state import Addr, Link, NetnsState, Neighbour, Route, Rule, Snapshot, default_rules, \
    local_routes
from bpftools.diagnose.verdict import build_causes
from bpftools.diagnose.walk import Walker
from bpftools.lab import TOPOLOGIES, fault_label, parse_fault_label
from bpftools.errors import BpftoolsError

LO = Link(1, "lo", mtu=65536)


def ns6(name, links, addrs, routes=(), sysctls=None, **extra) -> NetnsState:
    """A namespace with the IPv6 connected and local routes the kernel derives from addrs."""
    derived = local_routes(addrs)
    for a in addrs:
        if a.prefixlen < 128:
            net = a.network
            derived.append(Route(dst=str(net.network_address), dst_len=net.prefixlen, oif=a.ifindex, priority=256))
    return NetnsState(name, [LO] + list(links), [Addr(1, "::1", 128)] + list(addrs), derived + list(routes),
                      default_rules(4) + default_rules(6), sysctls=sysctls or {}, **extra)


def veth(ifindex, name, peer_ns, peer_ifindex, **kw) -> Link:
    return Link(ifindex, name, "veth", peer_netns=peer_ns, peer_ifindex=peer_ifindex,
                mac=f"02:00:00:00:00:{ifindex:02x}", **kw)


def pair(a_addrs=None, b_addrs=None, b_sysctls=None, **b_extra) -> Snapshot:
    """a(eth0) <-> b(eth0), fd00:1::/64, link-locals fe80::a / fe80::b."""
    a = ns6("a", [veth(2, "eth0", "b", 2)], a_addrs or [Addr(2, "fd00:1::1", 64), Addr(2, "fe80::a", 64)])
    b = ns6("b", [veth(2, "eth0", "a", 2)], b_addrs or [Addr(2, "fd00:1::2", 64), Addr(2, "fe80::b", 64)],
            sysctls=b_sysctls, **b_extra)
    return Snapshot({"a": a, "b": b})


def first_cause(walk):
    causes = build_causes(walk.findings, [])
    return causes[0] if causes else None


def nexthop_problem(walk):
    """The failed ownership check (what the walk does after it is layer-2 ownership's business)."""
    return next(f for f in walk.findings if f.check == "nexthop" and not f.ok)


# -- targets --------------------------------------------------------------------------------------------

def test_targets_as_ping_takes_them():
    assert parse_target("10.0.0.1") == ("10.0.0.1", None)
    assert parse_target("FD00:0:0::0001") == ("fd00::1", None)
    assert parse_target("fe80::1%eth0") == ("fe80::1", "eth0")
    for bad in ("fe80::1", "10.0.0.1%eth0", "nonsense", "fd00::1::2"):
        with pytest.raises(UsageProblem):
            parse_target(bad)


# -- FIB, source selection ---------------------------------------------------------------------------------

def test_rules_and_routes_are_per_family():
    state = pair().ns("a")
    state.rules.append(Rule(10, 0, action="prohibit"))   # an IPv4 rule: IPv6 lookups never see it
    assert fib_lookup(state, "fd00:1::2").ok
    assert not fib_lookup(state, "192.0.2.1").ok and fib_lookup(state, "192.0.2.1").type == "prohibit"
    state.rules.append(Rule(10, 0, action="unreachable", family=6, dst="fd00:9::", dst_len=32))
    assert fib_lookup(state, "fd00:9::1").type == "unreachable" and fib_lookup(state, "fd00:9::1").route.dst_len == 128
    assert fib_lookup(state, "fd00:1::1").route.type == "local"


def test_source_selection_matches_scope_and_skips_tentative_addresses():
    state = pair(a_addrs=[Addr(2, "fd00:1::1", 64, tentative=True), Addr(2, "fd00:1::7", 64),
                          Addr(2, "fe80::a", 64)]).ns("a")
    assert select_source(state, route_get(state, "fd00:1::2").route, "fd00:1::2") == "fd00:1::7"
    link_local = route_get(state, "fe80::b", oif=2)
    assert link_local.ok and link_local.route.oif == 2
    assert select_source(state, link_local.route, "fe80::b") == "fe80::a"


# -- the walk --------------------------------------------------------------------------------------------

def test_healthy_ipv6_walk_and_packet_size():
    walk = Walker(pair(), payload=56).walk("a", "fd00:1::2")
    assert walk.family == 6 and walk.src == "fd00:1::1"
    assert walk.request_delivered and walk.reply_delivered
    assert [f.detail for f in walk.findings if not f.ok] == []
    assert any("NDP entry" in f.detail for f in walk.findings)


def test_link_local_destination_leaves_by_its_scope_interface_and_is_answered_there():
    walk = Walker(pair()).walk("a", "fe80::b", scope="eth0")
    assert walk.src == "fe80::a" and walk.request_delivered and walk.reply_delivered
    assert [(h.netns, h.oif) for h in walk.hops if h.direction == "request"][0] == ("a", "eth0")


def test_ndp_is_answered_only_for_addresses_of_the_receiving_interface():
    snap = pair(b_addrs=[Addr(2, "fe80::b", 64), Addr(1, "fd00:1::2", 128)])
    snap.ns("a").routes.append(Route(dst="fd00:1::2", dst_len=128, oif=2))
    problem = nexthop_problem(Walker(snap).walk("a", "fd00:1::2"))
    assert problem.cause == "neighbor_unreachable" and "receiving interface" in problem.detail


def test_tentative_owner_answers_nothing():
    snap = pair(b_addrs=[Addr(2, "fd00:1::2", 64, tentative=True), Addr(2, "fe80::b", 64)])
    problem = nexthop_problem(Walker(snap).walk("a", "fd00:1::2"))
    assert problem.cause == "neighbor_unreachable" and "tentative" in problem.detail


def test_nobody_owns_the_address_unless_proxy_ndp_answers():
    snap = pair()
    problem = nexthop_problem(Walker(snap).walk("a", "fd00:1::99"))
    assert problem.cause == "neighbor_unreachable" and "NDP goes unanswered" in problem.detail
    proxied = pair(b_sysctls={"net.ipv6.conf.eth0.proxy_ndp": 1, "net.ipv6.conf.eth0.forwarding": 1},
                   ndp_proxies=[Neighbour(2, "fd00:1::99", "proxy")])
    checks = [f for f in Walker(proxied).walk("a", "fd00:1::99").findings if f.check == "nexthop"]
    assert checks[0].ok and "proxy_ndp" in checks[0].detail


def routed(**router_sysctls) -> Snapshot:
    """left(eth0) <-> (r-left) router (r-right) <-> right(eth0)."""
    left = ns6("left", [veth(2, "eth0", "router", 2)], [Addr(2, "fd00:1::2", 64)],
               [Route(dst="::", dst_len=0, oif=2, gateway="fd00:1::1", priority=1024)])
    router = ns6("router", [veth(2, "r-left", "left", 2), veth(3, "r-right", "right", 2, mtu=1280)],
                 [Addr(2, "fd00:1::1", 64), Addr(3, "fd00:2::1", 64)], sysctls=router_sysctls)
    right = ns6("right", [veth(2, "eth0", "router", 3)], [Addr(2, "fd00:2::2", 64)],
                [Route(dst="::", dst_len=0, oif=2, gateway="fd00:2::1", priority=1024)])
    return Snapshot({"left": left, "router": router, "right": right})


def test_ipv6_forwarding_is_conf_all_not_the_interface():
    walk = Walker(routed(**{"net.ipv6.conf.r-left.forwarding": 1})).walk("left", "fd00:2::2")
    cause = first_cause(walk)
    assert cause.cause == "ip_forward_disabled" and cause.netns == "router"
    assert rendered(cause.fix) == ["ip netns exec router sysctl -w net.ipv6.conf.all.forwarding=1"]
    healthy = Walker(routed(**{"net.ipv6.conf.all.forwarding": 1})).walk("left", "fd00:2::2")
    assert healthy.request_delivered and healthy.reply_delivered and first_cause(healthy) is None


def test_routers_never_fragment_ipv6_either_way():
    snap = routed(**{"net.ipv6.conf.all.forwarding": 1})
    assert first_cause(Walker(snap, payload=1200).walk("left", "fd00:2::2")) is None
    walk = Walker(snap, payload=1300).walk("left", "fd00:2::2")
    mtu = [f for f in walk.findings if f.cause == "mtu" and not f.ok]
    assert (mtu[0].direction, mtu[0].netns, mtu[0].ifname) == ("request", "router", "r-right")
    assert "1348-byte" in mtu[0].detail and "packet-too-big" in mtu[0].detail
    assert rendered(first_cause(walk).fix) == ["ip netns exec router ip link set dev r-right mtu 1500"]


def test_stray_copy_of_the_source_keeps_the_reply():
    snap = pair(b_addrs=[Addr(2, "fd00:1::2", 64), Addr(1, "fd00:1::1", 128)])
    cause = first_cause(Walker(snap).walk("a", "fd00:1::2"))
    assert cause.cause == "local_source" and rendered(cause.fix) == ["ip netns exec b ip addr del fd00:1::1/128 dev lo"]


# -- live evidence -------------------------------------------------------------------------------------------

def test_counter_address_words():
    assert filter_words("1.2.3.4") == [f"{0x04030201}U", "0U", "0U", "0U"]
    assert filter_words("fd00::1") == [f"{0xfd}U", "0U", "0U", f"{0x01000000}U"]


def test_relevant_drops_keep_icmpv6_echo_and_ndp():
    events = [
        {"netns": "r", "reason": "PKT_TOO_BIG", "proto": "icmpv6", "src": "fd00:1::2", "dst": "fd00:2::2",
         "icmp_type": 128, "family": "ipv6"},
        {"netns": "r", "reason": "NOT_SPECIFIED", "proto": "icmpv6", "src": "fd00:1::2", "dst": "ff02::1:ff00:fe",
         "icmp_type": 135, "family": "ipv6"},
        {"netns": "r", "reason": "NO_SOCKET", "proto": "udp", "src": "fd00:1::2", "dst": "fd00:2::2", "family": "ipv6"},
    ]
    kept = relevant_drops(events, "fd00:1::2", "fd00:2::2")
    assert [e.reason for e in kept] == ["PKT_TOO_BIG", "NOT_SPECIFIED"]


# -- lab ------------------------------------------------------------------------------------------------------

def test_lab_topologies_are_dual_stack_with_ipv6_counterparts():
    routed_lab = TOPOLOGIES["routed"]
    assert routed_lab.families == (4, 6) and routed_lab.ping(family=6)[1] == "fd00:72:2::2"
    mtu6 = routed_lab.fault("mtu", 6)
    assert mtu6.size == 1300 and routed_lab.ping_size("mtu", 6) == 1300 and routed_lab.ping_size("mtu") == 56
    assert routed_lab.fault("link_down", 6).steps == routed_lab.fault("link_down").steps
    with pytest.raises(BpftoolsError):
        routed_lab.fault("rp_filter", 6)   # IPv6 has no rp_filter
    bridge = TOPOLOGIES["bridge"]
    assert bridge.ping("bridge_port_address", 6) == (bridge.ns("sw"), "fd00:71::1")
    assert parse_fault_label(fault_label("mtu", 6)) == ("mtu", 6) and fault_label("mtu") == "mtu"


# -- firewall -------------------------------------------------------------------------------------------------

IP6TABLES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
[3:312] -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j DROP
COMMIT
"""


def test_ip6tables_rules_judge_icmpv6_echo():
    from bpftools.diagnose.firewall import Packet, firewall_verdict

    request = Packet("input", "fd00:1::1", "fd00:1::2", 128, "eth0")
    verdict = firewall_verdict(IP6TABLES, {}, request)
    assert verdict.dropped and verdict.where == "ip6tables filter INPUT"
    assert [join(a) for a in verdict.fix] == [
        "ip6tables -t filter -D INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j DROP"]
    assert not firewall_verdict(IP6TABLES, {}, Packet("input", "fd00:1::1", "fd00:1::2", 129, "eth0")).dropped
    forward = firewall_verdict(IP6TABLES, {}, Packet("forward", "fd00:1::1", "fd00:2::2", 128, "a", "b"))
    assert forward.dropped and [join(a) for a in forward.fix] == ["ip6tables -I FORWARD -p ipv6-icmp -j ACCEPT"]
    # IPv4 rules never judge an IPv6 packet: the IPv4 text is not what the checks pass for it
    assert not firewall_verdict("", {}, request).dropped


def nft(family, hook, policy, *rules):
    items = [{"table": {"family": family, "name": "fw"}},
             {"chain": {"family": family, "table": "fw", "name": hook, "hook": hook, "prio": 0, "policy": policy}}]
    items += [{"rule": {"family": family, "table": "fw", "chain": hook, "handle": i + 2, "expr": expr}}
              for i, expr in enumerate(rules)]
    return {"nftables": items}


def test_nft_ip6_and_inet_rules_judge_icmpv6_and_ip_rules_do_not():
    from bpftools.diagnose.firewall import Packet, firewall_verdict

    request = Packet("input", "fd00:1::1", "fd00:1::2", 128, "eth0")
    echo6 = [{"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                        "right": "echo-request"}}, {"drop": None}]
    dropped = firewall_verdict("", nft("inet", "input", "accept", echo6), request)
    assert dropped.dropped and [join(a) for a in dropped.fix] == ["nft delete rule inet fw input handle 2"]
    assert firewall_verdict("", nft("ip6", "input", "accept", echo6), request).dropped
    assert not firewall_verdict("", nft("ip", "input", "drop"), request).dropped   # an ip table: IPv4 only
    icmp4 = [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "icmp"}}, {"drop": None}]
    assert not firewall_verdict("", nft("inet", "input", "accept", icmp4), request).dropped
    policy = firewall_verdict("", nft("inet", "input", "drop"), request)
    assert policy.dropped
    assert [join(a) for a in policy.fix] == ["nft insert rule inet fw input meta l4proto ipv6-icmp accept"]


def test_bridged_ipv6_goes_through_ip6tables_with_bridge_nf_call_ip6tables():
    from bpftools.diagnose import checks as C
    from bpftools.diagnose.firewall import Packet

    state = ns6("sw", [Link(4, "br0", "bridge")], [], sysctls={"net.bridge.bridge-nf-call-iptables": 1},
                ip6tables_save=IP6TABLES)
    pkt = Packet("forward", "fd00:1::1", "fd00:1::2", 128, "br0", "br0", "NEW", "pa", "pb")
    assert C.check_bridge_netfilter(state, state.link(4), pkt).ok   # only the IPv4 switch is on
    state.sysctls["net.bridge.bridge-nf-call-ip6tables"] = 1
    finding = C.check_bridge_netfilter(state, state.link(4), pkt)
    assert not finding.ok and finding.cause == "bridge_netfilter"
    assert rendered(finding.fix) == ["ip netns exec sw ip6tables -I FORWARD -i br0 -o br0 -j ACCEPT"]


@pytest.mark.parametrize("args, message", [(("fe80::1",), "is link-local: name the interface"),
                                           (("10.0.0.1%eth0",), "only IPv6 addresses take a %interface"),
                                           (("fd00::1", "--source", "10.0.0.1"), "is not an IPv6 address"),
                                           (("fe80::1%bpftno0dev",), "no interface bpftno0dev")])
def test_bad_ipv6_targets_are_one_line_errors(args, message):
    from bpftools_proc import cli

    proc = cli("diagnose", "ping", *args)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_tentative_or_dadfailed_source_cannot_be_bound():
    from bpftools.diagnose import binding_for

    snap = pair(a_addrs=[Addr(2, "fd00:1::1", 64, tentative=True), Addr(2, "fd00:1::7", 64, dadfailed=True),
                         Addr(2, "fd00:1::8", 64)])
    assert binding_for(snap, "a", None, "fd00:1::8", 6).source == "fd00:1::8"
    assert binding_for(snap, "a", "fd00:1::8", None, 6).source == "fd00:1::8"   # -I ADDR
    with pytest.raises(UsageProblem, match="tentative"):
        binding_for(snap, "a", None, "fd00:1::1", 6)
    with pytest.raises(UsageProblem, match="duplicate address detection"):
        binding_for(snap, "a", None, "fd00:1::7", 6)
    with pytest.raises(UsageProblem, match="not an IPv4 address"):
        binding_for(snap, "a", None, "fd00:1::8", 4)
