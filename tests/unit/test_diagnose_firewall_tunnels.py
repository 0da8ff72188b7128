"""firewall: verdicts for a tunnel's outer packets (VXLAN/GENEVE in UDP, GRE, IP-in-IP, IPv6-in-IPv4)
on rulesets that iptables-save, ip6tables-save and `nft -j list ruleset` printed in a scratch
namespace (tests/unit/fixtures/firewall), and the fixes a drop carries, applied to the rules."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpftools.diagnose.apply_fix import apply_argv, edit_iptables_save
from bpftools.diagnose.firewall import (Packet, bridge_family_verdict, firewall_verdict, nft_match_exprs,
                                        protocol_number)
from bpftools.diagnose.state import NetnsState

FIXTURES = Path(__file__).parent / "fixtures" / "firewall"
IPT = (FIXTURES / "iptables-tunnel-node.txt").read_text()
IP6T = (FIXTURES / "ip6tables-tunnel-node.txt").read_text()
NFT = json.loads((FIXTURES / "nft-tunnel-node.json").read_text())
PEER, NODE, OTHER = "10.9.0.2", "10.9.0.1", "10.9.0.3"


def udp(hook: str, src: str, dst: str, dport: int, sport: int = 40000, **kw) -> Packet:
    return Packet(hook, src, dst, 0, proto="udp", dport=dport, sport=sport, **kw)


def outer(hook: str, proto: str, src: str = PEER, dst: str = NODE, **kw) -> Packet:
    return Packet(hook, src, dst, 0, proto=proto, **kw)


def fixed(save: str, verdict) -> str:
    """The iptables-save text once the verdict's fix ran (the tool name stripped off)."""
    for argv in verdict.fix:
        save = edit_iptables_save(save, list(argv[1:]))
    return save


@pytest.mark.parametrize("pkt, rule", [
    (udp("input", PEER, NODE, 4789), "-A INPUT -p udp -m udp --dport 4789 -j DROP"),
    (udp("input", PEER, NODE, 8472), "-A INPUT -p udp -m multiport --dports 6081,8472,7000:7100 -j DROP"),
    (udp("input", PEER, NODE, 7050), "-A INPUT -p udp -m multiport --dports 6081,8472,7000:7100 -j DROP"),
    (udp("input", PEER, NODE, 9999, sport=1500), "-A INPUT -p udp -m udp --sport 1000:2000 -j DROP"),
    (outer("input", "gre"), "-A INPUT -p gre -j DROP"),
    (outer("input", "ipip"), "-A INPUT -p ipencap -j DROP"),
    (Packet("input", PEER, NODE, 8), "-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP"),
    (udp("output", NODE, PEER, 8472), "-A OUTPUT -p udp -m udp ! --dport 4789 -j DROP"),
    (outer("output", "ipv6", NODE, PEER), "-A OUTPUT -p ipv6 -j DROP"),
])
def test_iptables_rules_drop_the_outer_packets_they_name(pkt, rule):
    verdict = firewall_verdict(IPT, {}, pkt)
    assert verdict.dropped and verdict.rule == rule and verdict.where == "iptables filter " + pkt.hook.upper()
    assert verdict.fix == [("iptables", "-t", "filter", "-D") + tuple(rule.split()[1:])]
    assert not firewall_verdict(fixed(IPT, verdict), {}, pkt).dropped or pkt.proto == "ipip"


@pytest.mark.parametrize("pkt", [
    udp("input", OTHER, NODE, 4789),               # the accepted peer
    udp("input", PEER, NODE, 9999),                # no rule names that port
    udp("output", NODE, PEER, 4789),               # `! --dport 4789`
    Packet("output", NODE, PEER, 8),               # UDP rules never match ICMP
    Packet("input", PEER, NODE, 0, ctstate="ESTABLISHED"),
    udp("forward", "10.8.0.1", "10.7.0.1", 9999, sport=5555),   # multiport --ports: either port
])
def test_iptables_passes_what_no_rule_drops(pkt):
    assert not firewall_verdict(IPT, {}, pkt).dropped


def test_ipip_is_protocol_94_not_ip_in_ip():
    """/etc/protocols names 94 `ipip`: `-p ipip` never matches the kernel's IP-in-IP (4), as a real
    packet showed (the rule's counter stayed 0 while `-p ipencap` counted it)."""
    assert protocol_number("ipip") == 94 and protocol_number("ipencap") == 4 == protocol_number("4")
    without_ipencap = IPT.replace("-A INPUT -p ipencap -j DROP\n", "")
    verdict = firewall_verdict(without_ipencap, {}, outer("input", "ipip"))
    assert not verdict.dropped


def test_a_forward_policy_drop_is_opened_for_the_tunnel_flow_from_its_sender():
    for pkt, words in [(udp("forward", PEER, "10.8.0.1", 4789), "-s 10.9.0.2/32 -p udp -m udp --dport 4789"),
                       (outer("forward", "gre", dst="10.8.0.1"), "-s 10.9.0.2/32 -p gre"),
                       (outer("forward", "ipip", dst="10.8.0.1"), "-s 10.9.0.2/32 -p 4"),
                       (outer("forward", "ipv6", dst="10.8.0.1"), "-s 10.9.0.2/32 -p 41")]:
        verdict = firewall_verdict(IPT, {}, pkt)
        assert verdict.dropped and verdict.rule == "policy DROP"
        assert [" ".join(a) for a in verdict.fix] == [f"iptables -I FORWARD {words} -j ACCEPT"]
        opened = fixed(IPT, verdict)
        assert not firewall_verdict(opened, {}, pkt).dropped
        assert firewall_verdict(opened, {}, Packet("forward", PEER, "10.8.0.1", 8)).dropped   # only that flow
        assert firewall_verdict(opened, {}, udp("forward", OTHER, "10.8.0.1", 4789, sport=1)).dropped


def test_the_icmp_policy_fix_stays_as_it_was():
    verdict = firewall_verdict(IPT, {}, Packet("forward", PEER, "10.8.0.1", 8))
    assert [" ".join(a) for a in verdict.fix] == ["iptables -I FORWARD -p icmp -j ACCEPT"]


def test_ipv6_input_policy_drop_opens_neighbour_discovery_too():
    """IPv6 endpoints that cannot resolve each other exchange nothing: where the policy also drops
    neighbour solicitations, the fix accepts ICMPv6 as the ping's own fix does."""
    pkt = udp("input", "fd00:9::2", "fd00:9::1", 4789)
    assert firewall_verdict(IP6T, {}, pkt).rule == "-A INPUT -p udp -m udp --dport 4789:4790 -j DROP"
    pkt = udp("input", "fd00:9::2", "fd00:9::1", 6081)
    verdict = firewall_verdict(IP6T, {}, pkt)
    assert verdict.rule == "policy DROP"
    assert [" ".join(a) for a in verdict.fix] == ["ip6tables -I INPUT -p ipv6-icmp -j ACCEPT",
                                                  "ip6tables -I INPUT -s fd00:9::2/128 -p udp -m udp --dport 6081 "
                                                  "-j ACCEPT"]
    assert not firewall_verdict(fixed(IP6T, verdict), {}, pkt).dropped
    opened = IP6T.replace(":INPUT DROP [0:0]\n", ":INPUT DROP [0:0]\n-A INPUT -p ipv6-icmp -j ACCEPT\n")
    assert len(firewall_verdict(opened, {}, pkt).fix) == 1   # neighbour discovery passes already
    assert firewall_verdict(IP6T, {}, outer("output", "ipv6", "fd00:9::1", "fd00:9::2")).rule == \
        "-A OUTPUT -p ipv6 -j DROP"


def nft_rule(verdict) -> dict:
    handle = int(verdict.rule.rsplit(" ", 1)[1])
    return next(i["rule"] for i in NFT["nftables"] if "rule" in i and i["rule"]["handle"] == handle)


@pytest.mark.parametrize("pkt, expr", [
    (udp("input", PEER, NODE, 8472), {"set": [4789, 8472]}),                 # anonymous set
    (udp("input", PEER, NODE, 6081), 6081),                                  # th dport
    (udp("input", PEER, NODE, 9999, sport=1500), {"range": [1000, 2000]}),   # range
    (outer("input", "gre"), "gre"),                                          # ip protocol
    (outer("input", "ipip"), {"set": ["ipencap", "ipv6"]}),                  # meta l4proto set
    (outer("input", "ipv6"), {"set": ["ipencap", "ipv6"]}),
    (outer("forward", "gre", dst="10.8.0.1"), "gre"),
    (udp("output", NODE, PEER, 4789), 4789),
])
def test_nft_rules_drop_the_outer_packets_they_name(pkt, expr):
    verdict = firewall_verdict("", NFT, pkt)
    assert verdict.dropped, verdict
    rule = nft_rule(verdict)
    assert rule["expr"][0]["match"]["right"] == expr
    assert verdict.fix == [("nft", "delete", "rule", "inet", "fw", rule["chain"], "handle", str(rule["handle"]))]


def test_nft_named_sets_and_intervals_accept_the_known_peers():
    """inet fw accepts them (@vteps, @vxports with an interval); the ip table's policy still drops."""
    assert firewall_verdict("", NFT, udp("input", OTHER, NODE, 6050)).where == "nft ip plain input"
    assert firewall_verdict("", NFT, udp("input", OTHER, NODE, 4789)).where == "nft ip plain input"
    assert firewall_verdict("", NFT, udp("input", PEER, NODE, 4789)).where == "nft inet fw input"   # not in @vteps


def test_nft_icmp_and_udp_rules_keep_to_their_protocol():
    assert not firewall_verdict("", NFT, Packet("forward", PEER, "10.8.0.1", 8)).dropped  # udp < 1024: not ICMP
    assert not firewall_verdict("", NFT, udp("forward", PEER, "10.8.0.1", 8472)).dropped  # != 4789 accepts
    assert not firewall_verdict("", NFT, udp("forward", PEER, "10.8.0.1", 4789)).dropped  # not < 1024
    assert firewall_verdict("", NFT, outer("forward", "gre", dst="10.8.0.1")).dropped
    assert not firewall_verdict("", NFT, Packet("output", NODE, PEER, 8)).dropped       # udp dport 4789: not ICMP


def test_nft_th_dport_cannot_be_judged_on_gre_and_never_drops_alone():
    verdict = firewall_verdict("", NFT, outer("input", "gre"))
    assert any("handle" in u for u in verdict.uncertain)   # `th dport 6081` reads GRE's protocol field


def test_nft_policy_drops_are_opened_for_the_flow_in_every_table_that_drops_it():
    state = NetnsState("node", nft_ruleset=json.loads(json.dumps(NFT)))
    pkt = udp("input", PEER, NODE, 9999)
    verdict = firewall_verdict("", state.nft_ruleset, pkt)
    assert [" ".join(a) for a in verdict.fix] == ["nft insert rule inet fw input ip saddr 10.9.0.2 udp dport 9999 "
                                                  "accept"]
    apply_argv(state, list(verdict.fix[0]))
    verdict = firewall_verdict("", state.nft_ruleset, pkt)       # then the ip table's policy
    assert [" ".join(a) for a in verdict.fix] == ["nft insert rule ip plain input ip saddr 10.9.0.2 udp dport 9999 "
                                                  "accept"]
    apply_argv(state, list(verdict.fix[0]))
    assert not firewall_verdict("", state.nft_ruleset, pkt).dropped


def test_nft_bridge_family_sees_bridged_outer_packets():
    verdict = bridge_family_verdict(NFT, udp("forward", PEER, NODE, 4789, iif="br0", oif="br0"))
    assert verdict.dropped and verdict.where == "nft bridge br forward"
    assert not bridge_family_verdict(NFT, Packet("forward", PEER, NODE, 8, "br0", "br0")).dropped


def test_unknown_protocol_names_are_not_judged():
    save = IPT.replace("-A INPUT -p gre -j DROP", "-A INPUT -p ospf -j DROP")
    verdict = firewall_verdict(save, {}, outer("input", "gre"))
    assert "-A INPUT -p ospf -j DROP" in verdict.uncertain


def test_nft_match_exprs_read_what_fixes_write():
    assert nft_match_exprs("ip saddr 10.0.0.2 udp dport 4789".split()) == [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.0.0.2"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 4789}}]
    assert nft_match_exprs("meta l4proto 4".split())[0]["match"]["right"] == 4
    assert nft_match_exprs("tcp dport 22".split()) is None and nft_match_exprs("ip saddr".split()) is None


def test_describe_names_the_packet():
    assert Packet("input", PEER, NODE, 8).describe() == "ICMP echo-request"
    assert udp("input", PEER, NODE, 4789).describe() == "UDP to port 4789"
    assert outer("input", "ipip").describe() == "IP protocol 4 (IP-in-IP)"
