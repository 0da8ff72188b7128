"""Tunnels in the evidence, without root or bcc: the parser's UDP port configuration, the UDP
tunnels of a path, diagnose keeping drops whose inner flow is the ping's, and their evidence text."""
import pytest

from bpftools.diagnose.live import relevant_drops, tunnel_ports_of
from bpftools.diagnose.state import Link, NetnsState
from bpftools.diagnose.verdict import _drop_text
from bpftools.drop_events import Encap, Flow
from bpftools.encap_types import tunnel_port_defines
from bpftools.errors import BpftoolsError
from bpftools.trace_drops import build_filter

VXLAN = {"kind": "vxlan", "vni": 42, "key": None, "dport": 4789}
ECHO = {"family": "ipv4", "proto": "icmp", "src": "10.62.0.1", "dst": "10.62.0.2", "sport": None, "dport": None,
        "icmp_type": 8, "icmp_code": 0}


def outer_drop(inner, encap=VXLAN, reason="NETFILTER_DROP"):
    return {"netns": "node-b", "ifname": "ul-b", "reason": reason, "location": "nft_do_chain+0x46f",
            "family": "ipv4", "proto": "udp", "src": "10.61.0.1", "dst": "10.61.0.2", "sport": 40000,
            "dport": 4789, "icmp_type": None, "encap": encap, "inner": inner}


def test_known_ports_need_no_define_and_extra_ones_are_numbered():
    assert tunnel_port_defines([("vxlan", 4789), ("vxlan", 8472), ("geneve", 6081)]) == {}
    assert tunnel_port_defines([("vxlan", 4790), ("geneve", 6082), ("vxlan", 4790), ("vxlan", 4791)]) == {
        "TUNNEL_VXLAN_PORT0": 4790, "TUNNEL_VXLAN_PORT1": 4791, "TUNNEL_GENEVE_PORT0": 6082}


@pytest.mark.parametrize("ports, message", [
    ([("fou", 5555)], "opens vxlan and geneve packets, not fou"),
    ([("geneve", p) for p in (7000, 7001, 7002)], "at most 2 extra geneve UDP ports"),
])
def test_ports_the_parser_cannot_take_are_one_line_errors(ports, message):
    with pytest.raises(BpftoolsError, match=message):
        tunnel_port_defines(ports)
    with pytest.raises(BpftoolsError, match=message):
        build_filter([], None, True, tunnel_ports=ports)


def test_udp_tunnels_of_the_path_beyond_the_defaults():
    states = [NetnsState("a", links=[Link(2, "vx0", "vxlan", dstport=4789), Link(3, "flannel.1", "vxlan", dstport=8472),
                                     Link(4, "vx1", "vxlan", dstport=4790), Link(5, "gnv0", "geneve", dstport=6081),
                                     Link(6, "eth0", "veth")]),
              NetnsState("b", links=[Link(2, "vx1", "vxlan", dstport=4790), Link(3, "gnv1", "geneve", dstport=7000)]
                         + [Link(10 + i, f"vx{10 + i}", "vxlan", dstport=5000 + i) for i in range(5)])]
    assert tunnel_ports_of(states) == [("vxlan", 4790), ("geneve", 7000), ("vxlan", 5000), ("vxlan", 5001),
                                       ("vxlan", 5002)]


def test_a_tunnel_packet_carrying_the_ping_is_a_drop_of_the_ping():
    other = dict(ECHO, dst="10.62.0.9")
    events = [outer_drop(ECHO)] * 2 + [outer_drop(other), outer_drop(None), outer_drop({"family": "arp"})]
    kept = relevant_drops(events, "10.62.0.1", "10.62.0.2")
    assert [(d.reason, d.count, d.inner) for d in kept] == [("NETFILTER_DROP", 3, Flow(**ECHO))]  # ARP one merged
    assert kept[0].encap == Encap(**VXLAN) and (kept[0].src, kept[0].dport) == ("10.61.0.1", 4789)


def test_ndp_inside_a_tunnel_counts_for_an_ipv6_ping():
    ns = {"family": "ipv6", "proto": "icmpv6", "src": "fd00:62::1", "dst": "ff02::1:ff00:2", "icmp_type": 135}
    kept = relevant_drops([outer_drop(ns, {"kind": "geneve", "vni": 7, "key": None, "dport": 6081})],
                          "fd00:62::1", "fd00:62::2")
    assert len(kept) == 1 and kept[0].inner.icmp_type == 135 and kept[0].inner.icmp_code is None


def test_evidence_names_both_flows():
    kept = relevant_drops([outer_drop(ECHO)], "10.62.0.1", "10.62.0.2")
    assert _drop_text(kept[0]) == ("drop NETFILTER_DROP in node-b ul-b at nft_do_chain+0x46f: udp "
                                    "10.61.0.1:40000 > 10.61.0.2:4789 vxlan vni 42 [icmp 10.62.0.1 > 10.62.0.2 "
                                    "echo-request]")
    plain = relevant_drops([dict(ECHO, netns="a", ifname="eth0", reason="X")], "10.62.0.1", "10.62.0.2")
    assert _drop_text(plain[0]) == "drop X in a eth0"


def test_the_parser_opens_tunnels_only_where_one_can_be():
    """diagnose compiles the inner parse only when a tunnel device is on the path: it costs the
    verifier about a second per load, and a path without tunnels has no tunnel packet to open."""
    from bpftools.diagnose.live import has_tunnels
    from bpftools.diagnose.state import Link, NetnsState
    from bpftools.encap_types import tunnel_defines

    plain = NetnsState("a", links=[Link(1, "lo"), Link(2, "eth0", "veth")])
    overlay = NetnsState("b", links=[Link(2, "br0", "bridge"), Link(3, "vxlan0", "vxlan", dstport=4790)])
    assert not has_tunnels([plain]) and has_tunnels([plain, overlay])
    assert tunnel_defines([], open_tunnels=False) == {"TUNNEL_OUTER_ONLY": 1}
    assert tunnel_defines([("vxlan", 4790)]) == {"TUNNEL_VXLAN_PORT0": 4790}
