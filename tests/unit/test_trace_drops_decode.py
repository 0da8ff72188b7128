"""trace-drops decoding and configuration: pure functions, no root, no bcc."""
from __future__ import annotations

import ipaddress
import re
import socket
import struct
from pathlib import Path

import pytest

from bpftools.errors import BpftoolsError
from bpftools.kernel.drop_reasons import parse_format
from bpftools.netlink import Interface
from bpftools.drop_events import (EVENT_LAYOUT, Names, decode_event, decode_raw, family_name, summarize,
                                  summary_json)
from bpftools.trace_drops import DropFilter, cidr_defines, parse_cidr, parse_protocol, program_defines

FIXTURES = Path(__file__).parent / "fixtures"
FMT_618 = parse_format((FIXTURES / "kfree_skb-6.18.format").read_text())
FMT_510 = parse_format((FIXTURES / "kfree_skb-5.10.format").read_text())
NS_INODE = 4026532999
BPF_SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "trace_drops.bpf.c"


def raw_event(**kw) -> bytes:
    """The bytes struct drop_event would carry (defaults: a UDP drop on vb in NS_INODE)."""
    fields = dict(ts_ns=1_000_000_000, location=0xffffffff81000010, netns=NS_INODE, ifindex=3, reason=12,
                  len=36, ethertype=0x0800, family=4, proto=17, sport=40000, dport=53, icmp_type=0, icmp_code=0,
                  has_ports=1, dev_known=1, saddr=socket.inet_aton("10.11.0.1"), daddr=socket.inet_aton("10.11.0.2"),
                  ifname=b"vb", stack_bytes=0, caplen=0, encap=0, encap_has_id=0, encap_dport=0, encap_id=0,
                  **{f"inner_{name}": value for name, value in NO_FLOW.items()})
    fields.update(kw)
    return EVENT_LAYOUT.pack(*fields.values())


NO_FLOW = dict(ethertype=0, family=0, proto=0, sport=0, dport=0, icmp_type=0, icmp_code=0, has_ports=0, user=0,
               saddr=b"", daddr=b"")


@pytest.fixture
def names(monkeypatch):
    monkeypatch.setattr("bpftools.drop_events.named_netns", lambda: {NS_INODE: "bt-b-1"})
    monkeypatch.setattr("bpftools.namespaces.find_inode", lambda inode: None)  # the registry does not know it
    monkeypatch.setattr("bpftools.drop_events.list_interfaces",
                        lambda ns: [Interface(ns, NS_INODE, "vb", 3, "veth", 1), Interface(ns, NS_INODE, "lo", 1, "", 772)])
    return Names(FMT_618, ksym=lambda addr: "nf_hook_slow+0x10")


def test_layout_matches_the_c_struct():
    text = BPF_SOURCE.read_text()
    body = text[text.index("struct drop_event {"):text.index("};", text.index("struct drop_event {"))]
    # 8+8 + 4*4 + flow (2+1+1+2+2+1+1+1+1 + 16+16) + 16 + 2+2 + encap (1+1+2+4) + inner flow (44) + 4 padding
    assert EVENT_LAYOUT.size == 152
    for field in ("ts_ns", "location", "netns", "ifindex", "reason", "len", "tunnel_flow flow", "ifname",
                  "stack_bytes", "caplen", "tunnel_encap encap", "tunnel_flow inner"):
        assert f" {field}" in body, field
    header = (BPF_SOURCE.parent / "include" / "tunnel.h").read_text()
    flow = header[header.index("struct tunnel_flow {"):header.index("};", header.index("struct tunnel_flow {"))]
    for field in ("ethertype", "family", "proto", "sport", "dport", "icmp_type", "icmp_code", "has_ports", "user",
                  "saddr", "daddr"):
        assert f" {field}" in flow, field


def test_decode_udp_event(names):
    event = decode_event(decode_raw(raw_event()), names, clock_offset_ns=1_700_000_000 * 10**9)
    assert event.as_json() == {
        "type": "drop", "ts": 1_700_000_001.0, "netns": "bt-b-1", "netns_inode": NS_INODE, "ifname": "vb", "ifindex": 3,
        "reason": "NETFILTER_DROP", "reason_code": 12, "location": "nf_hook_slow+0x10", "family": "ipv4",
        "proto": "udp", "src": "10.11.0.1", "dst": "10.11.0.2", "sport": 40000, "dport": 53,
        "icmp_type": None, "icmp_code": None, "len": 36, "hint": None, "stack": None, "encap": None, "inner": None}
    assert event.flow() == "udp 10.11.0.1:40000 > 10.11.0.2:53"
    assert " bt-b-1/vb NETFILTER_DROP udp 10.11.0.1:40000 > 10.11.0.2:53 len 36 at nf_hook_slow+0x10" in event.line()


@pytest.mark.parametrize("kw, expected", [
    (dict(proto=1, has_ports=2, icmp_type=8, icmp_code=0, sport=0, dport=0),
     {"proto": "icmp", "icmp_type": 8, "icmp_code": 0, "sport": None, "dport": None}),
    (dict(family=6, ethertype=0x86DD, proto=58, has_ports=2, icmp_type=128,
          saddr=socket.inet_pton(socket.AF_INET6, "fd00::1"), daddr=socket.inet_pton(socket.AF_INET6, "fd00::2")),
     {"family": "ipv6", "proto": "icmpv6", "src": "fd00::1", "dst": "fd00::2", "icmp_type": 128}),
    (dict(family=0, ethertype=0x0806, proto=0, has_ports=0),
     {"family": "arp", "proto": None, "src": None, "dst": None, "sport": None}),
    (dict(family=0, ethertype=0x88B5, proto=0, has_ports=0), {"family": "0x88b5", "proto": None}),
    (dict(proto=47, has_ports=0), {"proto": "gre", "sport": None}),
    (dict(proto=253, has_ports=0), {"proto": "253"}),
    (dict(reason=16), {"reason": "IP_RPFILTER", "reason_code": 16}),
    (dict(reason=999), {"reason": "REASON_999"}),
    (dict(location=0), {"location": None}),
])
def test_decode_variants(names, kw, expected):
    got = decode_event(decode_raw(raw_event(**kw)), names, 0).as_json()
    assert {k: got[k] for k in expected} == expected


def test_interface_name_from_the_namespace_when_the_skb_had_no_device(names):
    event = decode_event(decode_raw(raw_event(dev_known=0, ifname=b"", ifindex=1)), names, 0)
    assert event.ifname == "lo"
    unknown = decode_event(decode_raw(raw_event(dev_known=0, ifname=b"", ifindex=0, netns=1234)), names, 0)
    assert (unknown.ifname, unknown.netns) == (None, "inode:1234")


def test_kernel_without_reason_reports_unknown():
    names = Names(FMT_510, ksym=None)
    event = decode_event(decode_raw(raw_event(reason=0, location=0xffffffff81000000)), names, 0)
    assert event.reason == "unknown" and event.location == "0xffffffff81000000"


@pytest.mark.parametrize("text, number", [("icmp", 1), ("TCP", 6), ("udp", 17), ("icmpv6", 58), ("132", 132)])
def test_parse_protocol(text, number):
    assert parse_protocol(text) == number


@pytest.mark.parametrize("text", ["bogus", "256", "-1", ""])
def test_parse_protocol_rejects(text):
    with pytest.raises(BpftoolsError):
        parse_protocol(text)


def test_cidr_defines_match_packet_words():
    defines = cidr_defines("SRC", ipaddress.ip_network("10.11.0.0/16"))
    word = struct.unpack("=I", socket.inet_aton("10.11.0.0"))[0]
    mask = struct.unpack("=I", socket.inet_aton("255.255.0.0"))[0]
    assert defines["FILTER_SRC_FAMILY"] == 4
    assert (defines["FILTER_SRC_W0"], defines["FILTER_SRC_M0"]) == (f"{word}U", f"{mask}U")
    assert defines["FILTER_SRC_M1"] == defines["FILTER_SRC_W3"] == "0U"
    # a packet address in the prefix matches word-wise the way the BPF code compares
    packet = struct.unpack("=4I", socket.inet_aton("10.11.7.9") + b"\0" * 12)
    assert packet[0] & mask == word
    v6 = cidr_defines("DST", parse_cidr("fd00:1::/32"))
    assert v6["FILTER_DST_FAMILY"] == 6 and v6["FILTER_DST_M1"] == "0U" and v6["FILTER_DST_M0"] == "4294967295U"


def test_parse_cidr_rejects_garbage():
    with pytest.raises(BpftoolsError, match="not an address or CIDR"):
        parse_cidr("10.1.1")


def test_program_defines():
    iface = Interface("ns", NS_INODE, "vb", 3, "veth", 1)
    d = program_defines(DropFilter(ifaces=[iface], proto=17, reasons={12}), FMT_618, summary=True)
    assert d["FILTER_IFACES"] and not d["FILTER_NETNS"] and d["FILTER_REASONS"] and d["SUMMARY_ONLY"]
    assert d["FILTER_PROTO"] == 17 and d["HAVE_DROP_REASON"]
    assert (d["TP_OFF_SKBADDR"], d["TP_OFF_LOCATION"], d["TP_OFF_REASON"]) == (8, 16, 36)
    ns_only = program_defines(DropFilter(netns_inodes={NS_INODE}), FMT_510, summary=False)
    assert ns_only["FILTER_NETNS"] and not ns_only["FILTER_IFACES"] and not ns_only["HAVE_DROP_REASON"]
    assert "FILTER_PROTO" not in ns_only and "FILTER_SRC_FAMILY" not in ns_only
    everything = program_defines(DropFilter(all_netns=True), FMT_618, summary=False)
    assert not everything["FILTER_NETNS"] and not everything["FILTER_IFACES"]


def test_every_define_is_used_by_the_bpf_source():
    text = BPF_SOURCE.read_text()
    iface = Interface("ns", NS_INODE, "vb", 3, "veth", 1)
    flt = DropFilter(ifaces=[iface], proto=6, reasons={3}, src=parse_cidr("10.0.0.0/8"), dst=parse_cidr("fd00::/8"))
    for name in program_defines(flt, FMT_618, summary=True):
        assert name in text, name


def test_summary_rows_and_json(names):
    rows = summarize({(NS_INODE, 3, 12): 5, (NS_INODE, 1, 3): 9, (NS_INODE, 3, 16): 0}, names)
    assert [(r.netns, r.ifname, r.reason, r.count) for r in rows] == [
        ("bt-b-1", "lo", "NO_SOCKET", 9), ("bt-b-1", "vb", "NETFILTER_DROP", 5)]
    assert summary_json(rows, 2) == {"type": "summary", "events_lost": 2, "drops": [
        {"netns": "bt-b-1", "netns_inode": NS_INODE, "ifname": "lo", "ifindex": 1, "reason": "NO_SOCKET", "count": 9},
        {"netns": "bt-b-1", "netns_inode": NS_INODE, "ifname": "vb", "ifindex": 3, "reason": "NETFILTER_DROP",
         "count": 5}]}


@pytest.mark.parametrize("family, ethertype, name", [(4, 0x800, "ipv4"), (6, 0x86DD, "ipv6"), (0, 0x806, "arp"),
                                                     (0, 0, None), (0, 0x9000, "0x9000")])
def test_family_name(family, ethertype, name):
    assert family_name(family, ethertype) == name


KALLSYMS = """ffffffff81ff3f00 t __pfx_inet_rtm_getroute
ffffffff81ff3fe0 t inet_rtm_getroute
ffffffff81ff4920 T __pfx_ip_route_output_flow
ffffffff820eeb60 t inet6_rtm_getroute
ffffffff820ef220 t __pfx_fib6_ifdown
"""


def test_not_drop_ranges_from_kallsyms():
    from bpftools.trace_drops import NOT_DROPS, symbol_ranges

    assert symbol_ranges(KALLSYMS, NOT_DROPS) == [(0xffffffff81ff3fe0, 0xffffffff81ff4920),
                                                  (0xffffffff820eeb60, 0xffffffff820ef220)]
    hidden = re.sub(r"^[0-9a-f]+", "0" * 16, KALLSYMS, flags=re.M)  # kptr_restrict: all addresses 0
    assert symbol_ranges(hidden, NOT_DROPS) == []
    defines = program_defines(DropFilter(all_netns=True), FMT_618, False, [(10, 20)])
    assert (defines["IGNORE_LOC0_START"], defines["IGNORE_LOC0_END"]) == ("10ULL", "20ULL")


VXLAN_ICMP = dict(dport=4789, len=134, encap=7, encap_has_id=1, encap_dport=4789, encap_id=42,
                  inner_ethertype=0x0800, inner_family=4, inner_proto=1, inner_icmp_type=8, inner_has_ports=2,
                  inner_saddr=socket.inet_aton("10.20.0.1"), inner_daddr=socket.inet_aton("10.20.0.2"))


def test_tunnel_packet_shows_the_flow_inside(names):
    event = decode_event(decode_raw(raw_event(**VXLAN_ICMP)), names, 0)
    got = event.as_json()
    assert got["encap"] == {"kind": "vxlan", "vni": 42, "key": None, "dport": 4789}
    assert got["inner"] == {"family": "ipv4", "proto": "icmp", "src": "10.20.0.1", "dst": "10.20.0.2", "sport": None,
                            "dport": None, "icmp_type": 8, "icmp_code": 0}
    assert (got["proto"], got["dst"], got["dport"]) == ("udp", "10.11.0.2", 4789)  # the outer flow stays where it was
    assert event.flow() == ("udp 10.11.0.1:40000 > 10.11.0.2:4789 vxlan vni 42 "
                            "[icmp 10.20.0.1 > 10.20.0.2 echo-request]")


@pytest.mark.parametrize("kw, encap, text", [
    (dict(proto=47, has_ports=0, encap=5, encap_has_id=1, encap_id=7, inner_ethertype=0x86DD, inner_family=6,
          inner_proto=58, inner_has_ports=2, inner_icmp_type=129, inner_saddr=socket.inet_pton(socket.AF_INET6, "fd00::1"),
          inner_daddr=socket.inet_pton(socket.AF_INET6, "fd00::2")),
     {"kind": "gre", "vni": None, "key": 7, "dport": None}, "gre key 7 [icmpv6 fd00::1 > fd00::2 echo-reply]"),
    (dict(proto=4, has_ports=0, encap=1, inner_ethertype=0x0806),
     {"kind": "ipip", "vni": None, "key": None, "dport": None}, "ipip [arp]"),
    (dict(encap=8, encap_has_id=1, encap_dport=6081, encap_id=5, dport=6081),
     {"kind": "geneve", "vni": 5, "key": None, "dport": 6081}, "geneve vni 5 [unknown]"),
])
def test_tunnel_kinds_decode(names, kw, encap, text):
    event = decode_event(decode_raw(raw_event(**kw)), names, 0)
    assert event.as_json()["encap"] == encap
    assert event.flow().endswith(text), event.flow()
