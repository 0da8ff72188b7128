"""Each piece of `diagnose` on hand-written namespace state: route lookup with policy rules,
the reverse-path check (rp_filter = max(all, iface), accept_local), netfilter evaluation,
the per-hop checks, the walker across veth/bridge/tunnel, and the verdict."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bpftools.commands import Command, join, rendered
from bpftools.diagnose import checks as C
from bpftools.diagnose.firewall import Packet, firewall_verdict, parse_iptables_save
from bpftools.diagnose.live import relevant_drops
from bpftools.diagnose.records import Cause, Drop, Hop, HopCounts
from bpftools.diagnose.routing import fib_lookup, route_get, validate_source
from bpftools.diagnose.segment import resolve
from bpftools.diagnose.state import (Addr, Link, NetnsState, Neighbour, Route, Rule, Snapshot, default_rules,
                                     local_routes)
from bpftools.diagnose.verdict import (build_causes, claimable, counted_cutoff, exit_status, story, verdict,
                                      where_it_stops)
from bpftools.diagnose.walk import Walker

LO = Link(1, "lo", mtu=65536)


def ns(name, links, addrs, routes=(), sysctls=None, rules=None, **extra) -> NetnsState:
    """A namespace with the connected and local routes the kernel would derive from addrs."""
    derived = local_routes(addrs)
    for a in addrs:
        if a.prefixlen < 32 and not a.address.startswith("127."):
            net = a.network
            derived.append(Route(dst=str(net.network_address), dst_len=net.prefixlen, oif=a.ifindex,
                                 prefsrc=a.address, scope=253))
    return NetnsState(name, [LO] + list(links), [Addr(1, "127.0.0.1", 8)] + list(addrs),
                      derived + list(routes), rules or default_rules(), sysctls=sysctls or {}, **extra)


def veth(ifindex, name, peer_ns, peer_ifindex, **kw) -> Link:
    return Link(ifindex, name, "veth", peer_netns=peer_ns, peer_ifindex=peer_ifindex, mac=f"02:00:00:00:00:{ifindex:02x}",
                **kw)


# -- routing --------------------------------------------------------------------------------------------

def routed_state(**sysctls):
    return ns("r", [veth(2, "a", "x", 2), veth(3, "b", "y", 2)],
              [Addr(2, "10.0.1.1", 24), Addr(3, "10.0.2.1", 24)],
              [Route(dst="10.9.0.0", dst_len=16, oif=3, gateway="10.0.2.9"),
               Route(dst="10.9.1.0", dst_len=24, oif=2, gateway="10.0.1.9", priority=10),
               Route(dst="10.9.1.0", dst_len=24, oif=3, gateway="10.0.2.9", priority=20)],
              sysctls=sysctls)


def test_longest_prefix_then_lowest_metric():
    state = routed_state()
    assert fib_lookup(state, "10.9.5.5").route.gateway == "10.0.2.9"
    assert fib_lookup(state, "10.9.1.5").route.gateway == "10.0.1.9"
    assert fib_lookup(state, "10.0.1.1").route.type == "local"
    assert not fib_lookup(state, "192.0.2.1").ok


def test_policy_rules_pick_the_table_and_can_refuse():
    state = routed_state()
    state.routes.append(Route(dst="0.0.0.0", dst_len=0, table=100, oif=2, gateway="10.0.1.7"))
    state.rules.append(Rule(100, 100, src="10.0.2.1", src_len=32))
    state.rules.append(Rule(90, 0, action="unreachable", dst="10.66.0.0", dst_len=16))
    assert fib_lookup(state, "192.0.2.1", src="10.0.2.1").route.gateway == "10.0.1.7"
    assert fib_lookup(state, "192.0.2.1", src="10.0.1.1").route is None
    assert fib_lookup(state, "10.66.1.1").type == "unreachable" and not fib_lookup(state, "10.66.1.1").ok
    # the socket's second lookup uses the chosen source, so the rule applies to locally sent pings too
    assert route_get(state, "192.0.2.1", "10.0.2.1").route.table == 100


def test_route_get_selects_the_source_address_of_the_outgoing_interface():
    state = routed_state()
    lookup = route_get(state, "10.9.5.5")
    assert lookup.ok and lookup.route.oif == 3


# -- reverse path: rp_filter, accept_local -----------------------------------------------------------------

@pytest.mark.parametrize("all_, iface, expected", [(0, 0, 0), (1, 0, 1), (0, 1, 1), (2, 1, 2), (1, 2, 2)])
def test_effective_rp_filter_is_the_max_of_all_and_the_interface(all_, iface, expected):
    state = routed_state(**{"net.ipv4.conf.all.rp_filter": all_, "net.ipv4.conf.a.rp_filter": iface})
    assert state.rp_filter("a") == expected


@pytest.mark.parametrize("all_, iface, ok, problem", [
    (0, 0, True, ""),              # off: no reverse lookup at all
    (1, 0, False, "rp_filter"),    # strict from conf/all alone
    (0, 1, False, "rp_filter"),    # strict on the interface
    (2, 0, True, ""),              # loose: a route back exists (via b)
    (1, 2, True, ""),              # max(1, 2) = 2: loose
])
def test_strict_rp_filter_drops_asymmetric_traffic(all_, iface, ok, problem):
    state = routed_state(**{"net.ipv4.conf.all.rp_filter": all_, "net.ipv4.conf.a.rp_filter": iface})
    # 10.9.5.5 arrives on a, but the route back to it leaves by b
    result = validate_source(state, "10.9.5.5", "10.0.1.1", state.link_by_name("a"))
    assert (result.ok, result.problem) == (ok, problem)


def test_rp_filter_with_no_route_back_is_a_missing_return_route():
    state = routed_state(**{"net.ipv4.conf.all.rp_filter": 1})
    result = validate_source(state, "192.0.2.1", "10.0.1.1", state.link_by_name("a"))
    assert result.problem == "no_return_route"
    state = routed_state()
    assert validate_source(state, "192.0.2.1", "10.0.1.1", state.link_by_name("a")).ok  # rp_filter off


def test_local_source_is_martian_unless_accept_local():
    state = routed_state()
    assert validate_source(state, "10.0.2.1", "10.0.1.1", state.link_by_name("a")).problem == "local_source"
    state.sysctls["net.ipv4.conf.a.accept_local"] = 1
    assert validate_source(state, "10.0.2.1", "10.0.1.1", state.link_by_name("a")).ok
    state = routed_state(**{"net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.all.accept_local": 0})
    assert validate_source(state, "10.0.2.1", "10.0.1.1", state.link_by_name("a")).problem == "local_source"


def test_check_source_fix_for_rp_filter_sets_both_all_and_the_interface():
    state = routed_state(**{"net.ipv4.conf.all.rp_filter": 1})
    finding = C.check_source(state, "10.9.5.5", "10.0.1.1", state.link_by_name("a"), "packet")
    assert finding.cause == "rp_filter"
    assert rendered(finding.fix) == ["ip netns exec r sysctl -w net.ipv4.conf.all.rp_filter=2",
                           "ip netns exec r sysctl -w net.ipv4.conf.a.rp_filter=2"]


# -- netfilter ----------------------------------------------------------------------------------------

IPT = """# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP
-A FORWARD -j DOCKER-USER
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i br+ -o br+ -m physdev --physdev-is-bridged -j ACCEPT
-A FORWARD -m mystery --foo bar -j DROP
-A DOCKER-USER -s 10.1.0.0/16 -j RETURN
COMMIT
"""


def test_iptables_save_parsing():
    tables = parse_iptables_save(IPT).tables
    assert tables["filter"].policies == {"INPUT": "ACCEPT", "FORWARD": "DROP", "OUTPUT": "ACCEPT"}
    assert tables["filter"].chains["DOCKER-USER"].policy is None
    assert len(tables["filter"].chains["FORWARD"].rules) == 4


@pytest.mark.parametrize("pkt, dropped, rule", [
    (Packet("input", "10.1.0.1", "10.1.0.2", 8, "eth0"), True, "-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP"),
    (Packet("input", "10.1.0.1", "10.1.0.2", 0, "eth0", ctstate="ESTABLISHED"), False, ""),
    (Packet("output", "10.1.0.2", "10.1.0.1", 8, "", "eth0"), False, ""),
    (Packet("forward", "10.2.0.1", "10.3.0.1", 8, "eth0", "eth1"), True, "policy DROP"),
    (Packet("forward", "10.2.0.1", "10.3.0.1", 0, "eth0", "eth1", "ESTABLISHED"), False, ""),
    (Packet("forward", "10.2.0.1", "10.3.0.1", 8, "br0", "br0", "NEW", "pa", "pb"), False, ""),
    (Packet("forward", "10.2.0.1", "10.3.0.1", 8, "br0", "br0", "NEW"), True, "policy DROP"),
])
def test_iptables_evaluation(pkt, dropped, rule):
    verdict = firewall_verdict(IPT, {}, pkt)
    assert verdict.dropped == dropped
    assert verdict.rule == rule


def test_unknown_matches_are_reported_never_guessed():
    verdict = firewall_verdict(IPT.replace(":FORWARD DROP", ":FORWARD ACCEPT"), {},
                               Packet("forward", "10.2.0.1", "10.3.0.1", 8, "eth0", "eth1"))
    assert not verdict.dropped
    assert verdict.uncertain == ["-A FORWARD -m mystery --foo bar -j DROP"]


def test_fixes_delete_the_rule_or_accept_icmp_before_the_policy():
    verdict = firewall_verdict(IPT, {}, Packet("input", "10.1.0.1", "10.1.0.2", 8, "eth0"))
    assert words(verdict.fix) == ["iptables -t filter -D INPUT -p icmp -m icmp --icmp-type 8 -j DROP"]
    verdict = firewall_verdict(IPT, {}, Packet("forward", "10.2.0.1", "10.3.0.1", 8, "eth0", "eth1"))
    assert words(verdict.fix) == ["iptables -I FORWARD -p icmp -j ACCEPT"]


def nft(*items):
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}] + list(items)}


NFT = nft(
    {"table": {"family": "inet", "name": "fw", "handle": 1}},
    {"chain": {"family": "inet", "table": "fw", "name": "input", "handle": 1, "type": "filter", "hook": "input",
               "prio": 0, "policy": "accept"}},
    {"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 4, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                   "right": {"prefix": {"addr": "10.5.0.0", "len": 16}}}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}}, "right": "echo-request"}},
        {"counter": {"packets": 0, "bytes": 0}}, {"drop": None}]}},
    {"chain": {"family": "inet", "table": "fw", "name": "forward", "handle": 2, "type": "filter",
               "hook": "forward", "prio": 0, "policy": "drop"}},
    {"rule": {"family": "inet", "table": "fw", "chain": "forward", "handle": 5, "expr": [
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
        {"accept": None}]}},
    {"table": {"family": "ip", "name": "filter", "handle": 2}},
    {"chain": {"family": "ip", "table": "filter", "name": "OUTPUT", "handle": 1, "type": "filter", "hook": "output",
               "prio": 0, "policy": "drop"}},
)


def test_nft_rules_and_policies():
    v = firewall_verdict("", NFT, Packet("input", "10.5.1.1", "10.6.0.1", 8, "eth0"))
    assert v.dropped and words(v.fix) == ["nft delete rule inet fw input handle 4"]
    assert not firewall_verdict("", NFT, Packet("input", "10.7.1.1", "10.6.0.1", 8, "eth0")).dropped
    v = firewall_verdict("", NFT, Packet("forward", "10.7.1.1", "10.6.0.1", 8, "a", "b"))
    assert v.dropped and words(v.fix) == ["nft insert rule inet fw forward meta l4proto icmp accept"]
    assert not firewall_verdict("", NFT, Packet("forward", "10.7.1.1", "10.6.0.1", 0, "a", "b",
                                                "ESTABLISHED")).dropped


def test_tables_iptables_nft_manages_are_judged_once_from_iptables_save():
    ipt = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    pkt = Packet("output", "10.6.0.1", "10.7.1.1", 8, "", "eth0")
    assert firewall_verdict("", NFT, pkt).dropped          # native nft table: judged
    assert not firewall_verdict(ipt, NFT, pkt).dropped     # ip filter belongs to iptables-nft


# -- per-hop checks ------------------------------------------------------------------------------------------

def test_forwarding_is_per_incoming_interface():
    state = routed_state(**{"net.ipv4.ip_forward": 1, "net.ipv4.conf.a.forwarding": 0})
    finding = C.check_forwarding(state, state.link_by_name("a"))
    assert finding.cause == "ip_forward_disabled"
    assert rendered(finding.fix) == ["ip netns exec r sysctl -w net.ipv4.ip_forward=1"]
    assert C.check_forwarding(routed_state(**{"net.ipv4.ip_forward": 1}), state.link_by_name("a")).ok


def test_link_and_mtu_checks():
    state = routed_state()
    down = Link(7, "x", "veth", admin_up=False)
    assert rendered(C.check_link(state, down, "veth peer").fix) == ["ip netns exec r ip link set dev x up"]
    small = Link(8, "y", "veth", mtu=68)
    finding = C.check_mtu(state, small, 84, "veth peer", 1500)
    assert finding.cause == "mtu" and rendered(finding.fix) == ["ip netns exec r ip link set dev y mtu 1500"]
    assert C.check_mtu(state, small, 68, "veth peer", 1500).ok


def test_neighbour_checks():
    state = routed_state()
    oif = state.link_by_name("a")
    receiver = Link(2, "eth0", "veth", mac="02:aa:00:00:00:01")
    other = NetnsState("x")
    state.neighbours = [Neighbour(2, "10.0.1.9", "permanent", "02:00:00:00:00:99")]
    wrong = C.check_neighbour(state, oif, "10.0.1.9", receiver, other)
    assert wrong.cause == "neighbor_unreachable" and wrong.confidence == C.CERTAIN
    assert rendered(wrong.fix) == ["ip netns exec r ip neigh del 10.0.1.9 dev a"]
    state.neighbours = [Neighbour(2, "10.0.1.9", "failed")]
    failed = C.check_neighbour(state, oif, "10.0.1.9", receiver, other)
    assert failed.cause == "neighbor_unreachable" and failed.confidence == C.LIKELY
    state.neighbours = [Neighbour(2, "10.0.1.9", "reachable", "02:aa:00:00:00:01")]
    assert C.check_neighbour(state, oif, "10.0.1.9", receiver, other).ok
    noarp = Link(2, "eth0", "veth", noarp=True)
    assert rendered(C.check_neighbour(state, oif, "10.0.1.9", noarp, other).fix) == [
        "ip netns exec x ip link set dev eth0 arp on"]


def test_address_on_a_bridge_port_moves_to_the_bridge():
    state = ns("sw", [Link(2, "br0", "bridge"), veth(3, "pa", "a", 2, master=2)], [Addr(3, "10.1.0.254", 24)])
    finding = C.check_bridge_port_address(state, state.link_by_name("pa"))
    assert finding.cause == "bridge_port_address"
    assert rendered(finding.fix) == ["ip netns exec sw ip addr del 10.1.0.254/24 dev pa",
                           "ip netns exec sw ip addr add 10.1.0.254/24 dev br0"]


def test_commands_for_our_own_namespace_need_no_prefix():
    assert C.in_ns("host", ("sysctl", "-w", "x=1")).render() == "sysctl -w x=1"
    assert C.in_ns("ns 1", ("sysctl", "-w", "x=1")).render() == "ip netns exec 'ns 1' sysctl -w x=1"


# -- the walker ----------------------------------------------------------------------------------------------

def tunnel_end(name, dev, hub_ifindex, local, remote, inner, inner_peer, gateway, remote_net) -> NetnsState:
    """One end of the seed's ipip lab: a veth to the hub and tun1 (ipip local -> remote)."""
    return ns(name, [veth(2, dev, "hub", hub_ifindex),
                     Link(3, "tun1", "ipip", noarp=True, mtu=1480, tunnel_local=local, tunnel_remote=remote)],
              [Addr(2, local, 24), Addr(3, inner, 32, peer=inner_peer)],
              [Route(dst=remote_net, dst_len=24, oif=2, gateway=gateway),
               Route(dst=inner_peer, dst_len=32, oif=3, prefsrc=inner)])


def tunnel_snapshot(hub_forwarding=1) -> Snapshot:
    ns1 = tunnel_end("ns1", "v1", 2, "10.73.10.2", "10.73.20.2", "10.73.100.1", "10.73.100.2", "10.73.10.1",
                     "10.73.20.0")
    ns2 = tunnel_end("ns2", "v2", 3, "10.73.20.2", "10.73.10.2", "10.73.100.2", "10.73.100.1", "10.73.20.1",
                     "10.73.10.0")
    hub = ns("hub", [veth(2, "v1_p", "ns1", 2), veth(3, "v2_p", "ns2", 2)],
             [Addr(2, "10.73.10.1", 24), Addr(3, "10.73.20.1", 24)], sysctls={"net.ipv4.ip_forward": hub_forwarding})
    return Snapshot({"ns1": ns1, "hub": hub, "ns2": ns2})


def test_walker_follows_an_ipip_tunnel_through_the_underlay():
    walk = Walker(tunnel_snapshot()).walk("ns1", "10.73.100.2")
    assert walk.request_delivered and walk.reply_delivered, [h.to_dict() for h in walk.hops]
    request = [(h.netns, h.action) for h in walk.hops if h.direction == "request"]
    assert request == [("ns1", "send"), ("ns1", "tunnel"), ("ns1", "send"), ("hub", "forward"),
                       ("ns2", "decap"), ("ns2", "deliver")]
    assert [f for f in walk.findings if not f.ok] == []


def test_walker_blames_the_underlay_hub_that_does_not_forward():
    walk = Walker(tunnel_snapshot(hub_forwarding=0)).walk("ns1", "10.73.100.2")
    causes = build_causes(walk.findings, [])
    assert (causes[0].cause, causes[0].netns) == ("ip_forward_disabled", "hub")


def test_a_path_that_leaves_the_machine_says_so():
    host = ns("host", [Link(2, "eth0", "", mac="02:00:00:00:00:01")], [Addr(2, "192.0.2.2", 24)],
              [Route(oif=2, gateway="192.0.2.1")])
    walk = Walker(Snapshot({"host": host})).walk("host", "198.51.100.7")
    assert walk.left_machine == "eth0 in host" and not walk.request_delivered
    result = verdict("198.51.100.7", "host", walk, 3, 0, [])
    assert [c.cause for c in result.causes] == ["unknown"]
    assert exit_status(result) == 2
    assert "leaves the machine" in " ".join(result.causes[0].evidence)


def test_unknown_peer_namespace_ends_the_walk_cleanly():
    a = ns("a", [veth(2, "eth0", "gone", 5)], [Addr(2, "10.1.0.1", 24)])
    walk = Walker(Snapshot({"a": a})).walk("a", "10.1.0.2")
    assert walk.hops[-1].action == "leave"


def words(argvs):
    """A firewall verdict's fix commands (argv) as the words they print."""
    return [join(a) for a in argvs]


# -- verdict -------------------------------------------------------------------------------------------------

def _finding(cause, netns="r", confidence=C.CERTAIN, fix=("x",)):
    return C.Finding(netns, "c", False, f"{cause} detail", cause, "eth0", [Command((f,), netns) for f in fix],
                     confidence)


def test_reachable_means_no_causes_even_with_failed_checks():
    walk = Walker(Snapshot({"h": ns("h", [], [])}))
    walk.result.findings = [_finding("mtu")]
    result = verdict("10.0.0.1", "h", walk.result, 3, 3, [])
    assert result.reachable and result.causes == [] and exit_status(result) == 0
    assert result.to_json()["checks"] == [{"netns": "r", "check": "c", "ok": False, "detail": "mtu detail"}]


def test_causes_rank_by_confidence_then_path_order_and_merge_same_fix():
    findings = [_finding("neighbor_unreachable", confidence=C.LIKELY, fix=("a",)), _finding("rp_filter", fix=("b",)),
                _finding("netfilter_drop", fix=("c",)), _finding("netfilter_drop", fix=("c",))]
    causes = build_causes(findings, [])
    # a symptom (LIKELY) is listed after the first cause only when a traced drop confirms it
    assert [c.cause for c in causes] == ["rp_filter", "netfilter_drop"]
    assert len(causes[1].evidence) == 1   # the same check twice is one piece of evidence
    drop = Drop("r", "eth0", "NEIGH_FAILED")
    assert [c.cause for c in build_causes(findings, [drop])] == ["rp_filter", "netfilter_drop",
                                                                     "neighbor_unreachable"]
    assert [c.cause for c in build_causes(findings[:1], [])] == ["neighbor_unreachable"]   # first: always


def test_causes_beyond_where_the_packets_were_counted_to_stop_are_not_claimed():
    path = [_hop("request", "l", None, "eth0", "send", None, 3),
            _hop("request", "r", "a", "b", "forward", 3, 0),
            _hop("request", "x", "eth0", None, "deliver", 0, None),
            _hop("reply", "x", None, "eth0", "send", None, 0),
            _hop("reply", "l", "eth0", None, "deliver", 0, None)]
    causes = [Cause(c, n, None, "", direction=d) for c, n, d in (
        ("netfilter_drop", "r", "request"), ("mtu", "x", "request"), ("no_return_route", "x", "reply"),
        ("xdp_drop", "q", None))]
    # r is where they stop; x (the next hop) is still a suspect; nothing on the reply path is
    assert counted_cutoff(path) == {"request": 2, "reply": -1}
    assert [c.cause for c in claimable(causes, path)] == ["netfilter_drop", "mtu", "xdp_drop"]
    path[1].packets = HopCounts(3, 3, "echo")
    path[2].packets = HopCounts(0, None, "echo")
    assert counted_cutoff(path)["request"] == 2
    frames = [replace(h, packets=HopCounts(0, 0, "frames")) for h in path]
    assert claimable(causes, frames) == causes   # no echo counts: nothing is ruled out


def test_story_shows_each_piece_of_evidence_once():
    findings = [_finding("ip_forward_disabled", fix=("f",))] + [
        C.Finding("r", "ip_forward", False, f"detail {i}", "ip_forward_disabled", fix=[Command(("f",), "r")])
        for i in range(6)]
    walk = Walker(Snapshot({}))
    walk.result.findings = findings
    text = story(verdict("10.0.0.1", "h", walk.result, 3, 0, []))
    assert text.count("agrees") == 1, text


def test_drop_events_confirm_checks_or_become_causes():
    drops = [Drop("r", "eth0", "NETFILTER_DROP", count=2), Drop("q", "veth1", "XDP", count=3),
             Drop("q", "veth2", "TC_INGRESS"), Drop("q", "veth2", "NOT_SPECIFIED")]
    causes = build_causes([_finding("netfilter_drop")], drops)
    assert [c.cause for c in causes] == ["netfilter_drop", "xdp_drop", "tc_drop"]
    assert causes[0].confidence > C.CERTAIN and "drop NETFILTER_DROP in r eth0 x2" in causes[0].evidence
    assert rendered(causes[1].fix) == ["ip netns exec q ip link set dev veth1 xdp off"]
    assert rendered(causes[2].fix) == ["ip netns exec q tc filter del dev veth2 ingress"]


def test_relevant_drops_keep_this_ping_and_arp_merged():
    events = [{"netns": "r", "ifname": "a", "reason": "X", "proto": "icmp", "src": "1.1.1.1", "dst": "2.2.2.2"}] * 3
    events += [{"netns": "r", "ifname": "a", "reason": "Y", "proto": "udp", "src": "1.1.1.1", "dst": "2.2.2.2"},
               {"netns": "r", "ifname": "a", "reason": "Z", "family": "arp"}]
    kept = relevant_drops(events, "2.2.2.2", "1.1.1.1")
    assert [(d.reason, d.count) for d in kept] == [("X", 3), ("Z", 1)]


def test_story_tells_path_break_why_and_fix():
    walk = Walker(tunnel_snapshot(hub_forwarding=0)).walk("ns1", "10.73.100.2")
    result = verdict("10.73.100.2", "ns1", walk, 3, 0, [])
    text = story(result)
    assert "echo request: ns1" in text and "it breaks in hub" in text
    assert "ip netns exec hub sysctl -w net.ipv4.ip_forward=1" in text
    assert exit_status(result) == 1
    json.dumps(result.to_json())  # the --json object is serialisable


def _pair(gateway="10.1.0.2", **peer_sysctls):
    a = ns("a", [veth(2, "eth0", "b", 2)], [Addr(2, "10.1.0.1", 24)],
           [Route(dst="10.9.0.0", dst_len=16, oif=2, gateway=gateway)])
    b = ns("b", [veth(2, "eth0", "a", 2), Link(3, "lo2", "")], [Addr(2, "10.1.0.2", 24), Addr(3, "10.9.0.1", 32)],
           sysctls=peer_sysctls)
    return a, b


def _resolve(a, b, target):
    snap = Snapshot({"a": a, "b": b})
    return resolve(snap, a, a.link_by_name("eth0"), target, "10.1.0.1")


def test_a_gateway_nobody_has_gets_the_route_pointed_at_the_peer():
    a, b = _pair(gateway="10.1.0.254")
    b.sysctls["net.ipv4.ip_forward"] = 1
    route = fib_lookup(a, "10.9.0.1").route
    finding = C.check_nexthop_owner(a, a.link_by_name("eth0"), route, "10.1.0.254", _resolve(a, b, "10.1.0.254"))
    assert finding.cause == "neighbor_unreachable" and finding.confidence == C.CERTAIN
    assert rendered(finding.fix) == ["ip netns exec a ip route replace 10.9.0.0/16 via 10.1.0.2 dev eth0"]
    walk = Walker(Snapshot({"a": a, "b": b})).walk("a", "10.9.0.1")
    assert build_causes(walk.findings, [])[0].cause == "neighbor_unreachable"
    assert [h.netns for h in walk.hops] == ["a"] and walk.hops[-1].action == "broken"


def test_arp_ignore_and_proxy_arp_decide_who_answers():
    a, b = _pair(**{"net.ipv4.conf.all.arp_ignore": 1})
    # 10.9.0.1 lives on lo2: with arp_ignore=1 nobody answers for it on eth0
    finding = C.check_nexthop_owner(a, a.link_by_name("eth0"), None, "10.9.0.1", _resolve(a, b, "10.9.0.1"))
    assert finding.netns == "b"
    assert rendered(finding.fix)[0] == "ip netns exec b sysctl -w net.ipv4.conf.all.arp_ignore=0"
    assert C.check_nexthop_owner(a, a.link_by_name("eth0"), None, "10.1.0.2", _resolve(a, b, "10.1.0.2")).ok
    # proxy_arp answers for what the namespace routes through another interface (and forwards)
    a, b = _pair(**{"net.ipv4.conf.eth0.proxy_arp": 1, "net.ipv4.ip_forward": 1})
    b.links.append(veth(4, "eth1", "c", 2))
    b.addrs.append(Addr(4, "10.2.0.1", 24))
    b.routes.append(Route(dst="10.2.0.0", dst_len=24, oif=4, prefsrc="10.2.0.1", scope=253))
    assert C.check_nexthop_owner(a, a.link_by_name("eth0"), None, "10.2.0.77", _resolve(a, b, "10.2.0.77")).ok
    assert not C.check_nexthop_owner(a, a.link_by_name("eth0"), None, "10.1.0.77", _resolve(a, b, "10.1.0.77")).ok


def test_mtu_of_the_receiving_veth_end_counts_fragments_not_the_whole_ping():
    a, b = _pair()
    b.links[1].mtu = 1000
    walk = Walker(Snapshot({"a": a, "b": b}), payload=1400).walk("a", "10.1.0.2")
    assert [f.cause for f in walk.findings if not f.ok] == ["mtu"]  # 1428 > 1000 on b's end
    a.links[1].mtu = 1000   # a fragments to 1000 itself: fits
    walk = Walker(Snapshot({"a": a, "b": b}), payload=1400).walk("a", "10.1.0.2")
    assert [f for f in walk.findings if not f.ok] == []


def _hop(direction, netns, iif, oif, action, inn, out):
    return Hop(direction, netns, iif, oif, action, "", "", packets=HopCounts(inn, out, "echo"))


def test_per_hop_counts_say_where_the_packets_stop():
    forwarded_nowhere = [_hop("request", "l", None, "eth0", "send", None, 3),
                         _hop("request", "r", "a", "b", "forward", 3, 0),
                         _hop("request", "x", "eth0", None, "deliver", 0, None)]
    assert where_it_stops(forwarded_nowhere) == "echo requests: 3 entered r on a, 0 left on b"
    lost_on_the_wire = [_hop("request", "l", None, "eth0", "send", None, 3),
                        _hop("request", "x", "eth0", None, "deliver", 0, None)]
    assert where_it_stops(lost_on_the_wire) == "echo requests: 3 left l (eth0), 0 arrived in x (eth0)"
    fine = [_hop("request", "l", None, "eth0", "send", None, 3), _hop("request", "x", "eth0", None, "deliver", 3, None),
            _hop("reply", "x", None, "eth0", "send", None, 3), _hop("reply", "l", "eth0", None, "deliver", 3, None)]
    assert where_it_stops(fine) is None
    frames = [replace(h, packets=HopCounts(1, 0, "frames")) for h in fine]
    assert where_it_stops(frames) is None


# -- the live seam -------------------------------------------------------------------------------------------

class FakeTrace:
    def __init__(self, namespaces):
        self.namespaces = namespaces
        self.entered = self.exited = False

    def __enter__(self):
        self.entered = True
        return self

    def events(self):
        return [{"netns": self.namespaces[-1], "ifname": "eth0", "reason": "IP_RPFILTER", "proto": "icmp",
                 "src": "10.0.0.1", "dst": "10.0.0.2"}]

    def __exit__(self, *exc):
        self.exited = True


def test_run_live_takes_drops_from_any_tracer_and_survives_a_broken_one(monkeypatch):
    from bpftools.diagnose import live

    monkeypatch.setattr(live, "ping", lambda *a, **k: (3, 0, "3 packets transmitted, 0 received"))
    monkeypatch.setattr(live, "read_counters", lambda namespaces: {})
    made = []

    def tracer(namespaces):
        made.append(FakeTrace(namespaces))
        return made[-1]

    result = live.run_live("a", "10.0.0.2", 3, 1, 56, ["a", "b"], tracer)
    assert (result.sent, result.received) == (3, 0)
    assert result.drops[0]["reason"] == "IP_RPFILTER" and made[0].entered and made[0].exited
    assert result.hop_counts is None

    def broken(namespaces):
        raise RuntimeError("no tracepoint here")

    result = live.run_live("a", "10.0.0.2", 3, 1, 56, ["a", "b"], broken)
    assert result.sent == 3 and result.drops == []
    assert "drop tracing unavailable: no tracepoint here" in result.notes


def test_a_route_through_a_nexthop_object_ends_the_walk_without_a_crash():
    a = ns("a", [veth(2, "eth0", "b", 2)], [Addr(2, "10.1.0.1", 24)], [Route(dst="10.9.0.0", dst_len=16)])
    walk = Walker(Snapshot({"a": a})).walk("a", "10.9.0.1")
    assert walk.hops[-1].action == "leave" and not walk.request_delivered


def test_relevant_drops_of_an_ipv4_ping_leave_out_ipv6_chatter():
    """Namespaces send router solicitations on their own; their drops say nothing about an IPv4 ping."""
    events = [{"netns": "r", "ifname": "a", "reason": "NOT_SPECIFIED", "proto": "icmpv6", "family": "ipv6",
               "src": "fe80::1", "dst": "ff02::2", "icmp_type": 133},
              {"netns": "r", "ifname": "a", "reason": "NOT_SPECIFIED", "proto": "icmpv6", "family": "ipv6",
               "src": "fe80::1", "dst": "ff02::1:ff00:2", "icmp_type": 135},
              {"netns": "r", "ifname": "a", "reason": "Z", "family": "arp"}]
    assert [d.reason for d in relevant_drops(events, "10.0.0.1", "10.0.0.2")] == ["Z"]


def test_a_failed_arp_entry_is_never_a_second_cause():
    """The seed's veth pair: the ARP request is dropped as a martian on veth1, so the sender's entry
    goes FAILED and NEIGH_FAILED drops follow: symptoms of the first cause, not a fault of their own."""
    first = _finding("local_source", "h")
    failed = C.Finding("h", "neighbour", False, "ARP for 192.168.4.2 on veth0 is FAILED", "neighbor_unreachable",
                       "veth0", [Command(("ip", "neigh", "flush", "dev", "veth0", "to", "192.168.4.2"))], C.LIKELY,
                       symptom=True)
    drops = [Drop("h", "veth0", "NEIGH_FAILED", "neigh_invalidate+0x7e", "arp", count=3)]
    assert [c.cause for c in build_causes([first, failed], drops)] == ["local_source"]
    assert [c.cause for c in build_causes([first], drops)] == ["local_source"]
    assert [c.cause for c in build_causes([failed], drops)] == ["neighbor_unreachable"]
