"""The shared tunnel parser (bpf/include/tunnel.h) through BPF_PROG_TEST_RUN, on crafted packets of
every tunnel type, including those this kernel has no device for (GENEVE, ipip, sit, ip6ip6,
ip4in6, GRE, gretap): the inner flow of each is decoded as trace-drops and diagnose would see it."""
import struct

import pytest
from scapy.layers.inet import GRE, ICMP, IP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from bpftools.drop_events import Encap, Flow
from bpftools.tunnel_parse import TunnelParser

OUT4 = dict(src="10.44.0.1", dst="10.44.0.2")
OUT6 = dict(src="fd00:44::1", dst="fd00:44::2")
PING4 = IP(src="192.168.8.1", dst="192.168.8.2") / ICMP(type=8)
PING6 = IPv6(src="fd00:88::1", dst="fd00:88::2") / ICMPv6EchoRequest()
ECHO4 = Flow("ipv4", "icmp", "192.168.8.1", "192.168.8.2", icmp_type=8, icmp_code=0)
ECHO6 = Flow("ipv6", "icmpv6", "fd00:88::1", "fd00:88::2", icmp_type=128, icmp_code=0)
ARP_FLOW = Flow("arp", None, None, None)


def geneve(vni: int, proto: int, options: bytes = b"") -> bytes:
    """A GENEVE header (version 0; options length in 4-byte words) and its options."""
    return struct.pack("!BBHI", len(options) // 4, 0, proto, vni << 8) + options


def frame(outer) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / outer)


CASES = [
    ("vxlan, outer IPv4",
     IP(**OUT4) / UDP(sport=40000, dport=4789) / VXLAN(vni=42) / Ether() / PING4,
     Encap("vxlan", vni=42, dport=4789), ECHO4),
    ("vxlan, outer IPv6, inner IPv6",
     IPv6(**OUT6) / UDP(sport=40000, dport=4789) / VXLAN(vni=7) / Ether() / PING6,
     Encap("vxlan", vni=7, dport=4789), ECHO6),
    ("vxlan on Linux's old port, inner ARP",
     IP(**OUT4) / UDP(dport=8472) / VXLAN(vni=1) / Ether() / ARP(psrc="192.168.8.1", pdst="192.168.8.2"),
     Encap("vxlan", vni=1, dport=8472), ARP_FLOW),
    ("vxlan on a configured port, inner VLAN-tagged",
     IP(**OUT4) / UDP(dport=4790) / VXLAN(vni=9) / Ether() / Dot1Q(vlan=5) / PING4,
     Encap("vxlan", vni=9, dport=4790), ECHO4),
    ("vxlan, outer IPv6 with a hop-by-hop header",
     IPv6(**OUT6) / IPv6ExtHdrHopByHop() / UDP(dport=4789) / VXLAN(vni=3) / Ether() / PING4,
     Encap("vxlan", vni=3, dport=4789), ECHO4),
    ("vxlan, outer IPv4 with options",
     IP(options=[IPOption_Router_Alert()], **OUT4) / UDP(dport=4789) / VXLAN(vni=3) / Ether() / PING4,
     Encap("vxlan", vni=3, dport=4789), ECHO4),
    ("geneve with options, inner Ethernet",
     IP(**OUT4) / UDP(dport=6081) / Raw(geneve(77, 0x6558, b"\x01\x02\x03\x01" + b"\xaa" * 4)) / Ether() / PING4,
     Encap("geneve", vni=77, dport=6081), ECHO4),
    ("geneve carrying IPv6 directly, neighbour solicitation",
     IPv6(**OUT6) / UDP(dport=6081) / Raw(geneve(5, 0x86DD)) / IPv6(src="fd00:88::1", dst="ff02::1:ff00:2")
     / ICMPv6ND_NS(tgt="fd00:88::2"),
     Encap("geneve", vni=5, dport=6081),
     Flow("ipv6", "icmpv6", "fd00:88::1", "ff02::1:ff00:2", icmp_type=135, icmp_code=0)),
    ("ipip", IP(**OUT4) / PING4, Encap("ipip"), ECHO4),
    ("sit", IP(**OUT4) / PING6, Encap("sit"), ECHO6),
    ("ip6ip6", IPv6(**OUT6) / PING6, Encap("ip6ip6"), ECHO6),
    ("ip4in6", IPv6(**OUT6) / PING4, Encap("ip4in6"), ECHO4),
    ("gre with checksum, key and sequence number",
     IP(**OUT4) / GRE(chksum_present=1, key_present=1, seqnum_present=1, key=1234, sequence_number=9, proto=0x0800)
     / PING4,
     Encap("gre", key=1234), ECHO4),
    ("gre over IPv6 without key, echo reply",
     IPv6(**OUT6) / GRE(proto=0x86DD) / IPv6(src="fd00:88::2", dst="fd00:88::1") / ICMPv6EchoReply(),
     Encap("gre"), Flow("ipv6", "icmpv6", "fd00:88::2", "fd00:88::1", icmp_type=129, icmp_code=0)),
    ("gretap with key",
     IP(**OUT4) / GRE(key_present=1, key=5, proto=0x6558) / Ether() / PING4, Encap("gretap", key=5), ECHO4),
    ("gretap, inner ARP",
     IP(**OUT4) / GRE(proto=0x6558) / Ether() / ARP(), Encap("gretap"), ARP_FLOW),
]


@pytest.fixture(scope="module")
def parser():
    with TunnelParser([("vxlan", 4790)]) as p:
        yield p


@pytest.mark.feature("prog_test_run")
@pytest.mark.parametrize("name, outer, encap, inner", CASES, ids=[c[0] for c in CASES])
def test_each_tunnel_type_is_opened(parser, name, outer, encap, inner):
    parsed = parser.parse(frame(outer))
    assert parsed.encap == encap
    assert parsed.inner == inner
    assert parsed.outer.family == ("ipv6" if outer.haslayer(IPv6) and isinstance(outer, IPv6) else "ipv4")


@pytest.mark.feature("prog_test_run")
def test_what_is_not_a_tunnel_stays_plain(parser):
    plain = parser.parse(frame(IP(**OUT4) / ICMP(type=8)))
    assert plain.encap is None and plain.outer == Flow("ipv4", "icmp", "10.44.0.1", "10.44.0.2", icmp_type=8,
                                                         icmp_code=0)
    other_port = parser.parse(frame(IP(**OUT4) / UDP(sport=1, dport=4791) / VXLAN(vni=1) / Ether() / PING4))
    assert other_port.encap is None and other_port.outer.dport == 4791
    fragment = parser.parse(frame(IP(frag=10, **OUT4) / UDP(dport=4789) / VXLAN() / Ether() / PING4))
    assert fragment.encap is None  # a later fragment has no UDP header to look at


@pytest.mark.feature("prog_test_run")
def test_a_cut_or_unreachable_inner_header_leaves_the_inner_flow_unknown(parser):
    cut = bytes(IP(**OUT4) / UDP(dport=4789) / VXLAN(vni=8) / Ether() / PING4)[:20 + 8 + 8 + 14 + 10]
    parsed = parser.parse(frame(IP(cut)))
    assert parsed.encap == Encap("vxlan", vni=8, dport=4789) and parsed.inner is None
    far = IP(**OUT4) / UDP(dport=6081) / Raw(geneve(1, 0x6558, b"\x00" * 248)) / Ether() / PING4  # beyond 256 bytes
    parsed = parser.parse(frame(far))
    assert parsed.encap == Encap("geneve", vni=1, dport=6081) and parsed.inner is None
