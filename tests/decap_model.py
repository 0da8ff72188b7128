"""Reference model of bpf/xdp_decap.bpf.c, written from the rules (not from the C), for the
differential test: for one input frame it gives the XDP verdict, the output bytes and the
counters the program must increment.

Rules, in the order they are applied:
  Ethernet type neither IPv4 nor IPv6 (ARP, VLAN tags...)        -> passed_not_tunnel
  outer IP header truncated (< 20 / < 40 bytes)                  -> malformed
  outer protocol not 4 / 41 (IPv6: directly, or behind a fragment header) -> passed_not_tunnel
  bad version / IHL / total or payload length / IPv4 header checksum -> malformed
  outer fragment                                                 -> fragment
  source not in the allow-list or destination not local          -> rejected_remote
  inner packet truncated or inconsistent, or inner Not-ECT under outer CE (RFC 6040) -> malformed
  else decapsulated: outer header removed, Ethernet type = inner family, outer CE copied in
  (IPv4 checksum updated per RFC 1624), then with redirect: TTL/hop limit <= 1 or no neighbour
  -> redirect_failed (passed), else MACs rewritten, TTL decremented, XDP_REDIRECT + redirected.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
PROTO_IPIP, PROTO_IPV6, PROTO_FRAGMENT = 4, 41, 44
ECN_CE = 3


@dataclass
class ModelConfig:
    allow: List[object]  # ipaddress networks
    local: List[object]  # ipaddress addresses
    redirect: bool = False
    src_mac: bytes = b"\0" * 6
    dst_mac: Optional[bytes] = None  # fixed --dst-mac
    neighbours: Dict[object, bytes] = field(default_factory=dict)  # inner destination -> MAC


@dataclass
class Outcome:
    verdict: int
    data: bytes
    counters: Tuple[str, ...]


def _be16(b: bytes, off: int) -> int:
    return struct.unpack_from("!H", b, off)[0]


def _le16(b: bytes, off: int) -> int:
    return struct.unpack_from("<H", b, off)[0]


def ones_complement_sum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def csum_replace2(check: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 on 16-bit words as stored: HC' = ~(~HC + ~m + m')."""
    s = (~check & 0xFFFF) + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _allowed(src, dst, config: ModelConfig) -> bool:
    if dst not in config.local:
        return False
    return any(src.version == net.version and src in net for net in config.allow)


def _inner_valid(inner: bytes, proto: int, outer_ecn: int) -> bool:
    if proto == PROTO_IPIP:
        if len(inner) < 20:
            return False
        version, ihl, tot = inner[0] >> 4, inner[0] & 15, _be16(inner, 2)
        if version != 4 or ihl < 5 or tot < ihl * 4 or tot > len(inner):
            return False
        inner_ecn = inner[1] & 3
    else:
        if len(inner) < 40:
            return False
        if inner[0] >> 4 != 6 or 40 + _be16(inner, 4) > len(inner):
            return False
        inner_ecn = (inner[1] >> 4) & 3
    return not (outer_ecn == ECN_CE and inner_ecn == 0)


def _mark_ce(packet: bytearray, v4: bool) -> None:
    ip = 14
    if v4:
        if packet[ip + 1] & 3 == ECN_CE:
            return
        old = _le16(packet, ip)
        packet[ip + 1] |= ECN_CE
        check = csum_replace2(_le16(packet, ip + 10), old, _le16(packet, ip))
        struct.pack_into("<H", packet, ip + 10, check)
    else:
        packet[ip + 1] |= ECN_CE << 4


def _forward(packet: bytearray, v4: bool, config: ModelConfig) -> Outcome:
    ip = 14
    hops = packet[ip + 8] if v4 else packet[ip + 7]
    if hops <= 1:
        return Outcome(XDP_PASS, bytes(packet), ("decapsulated", "redirect_failed"))
    if config.dst_mac is not None:
        dst_mac = config.dst_mac
    else:
        dst = ipaddress.ip_address(bytes(packet[ip + 16:ip + 20] if v4 else packet[ip + 24:ip + 40]))
        dst_mac = config.neighbours.get(dst)
        if dst_mac is None:
            return Outcome(XDP_PASS, bytes(packet), ("decapsulated", "redirect_failed"))
    packet[0:6], packet[6:12] = dst_mac, config.src_mac
    if v4:
        check = _le16(packet, ip + 10) + 0x0001  # += htons(0x0100) on a little-endian host
        struct.pack_into("<H", packet, ip + 10, (check + (check >= 0xFFFF)) & 0xFFFF)
        packet[ip + 8] -= 1
    else:
        packet[ip + 7] -= 1
    return Outcome(XDP_REDIRECT, bytes(packet), ("decapsulated", "redirected"))


def _decapsulate(frame: bytes, outer_len: int, proto: int, outer_ecn: int, config: ModelConfig) -> Outcome:
    v4 = proto == PROTO_IPIP
    packet = bytearray(frame[:12] + struct.pack("!H", ETH_IPV4 if v4 else ETH_IPV6) + frame[14 + outer_len:])
    if outer_ecn == ECN_CE:
        _mark_ce(packet, v4)
    if config.redirect:
        return _forward(packet, v4, config)
    return Outcome(XDP_PASS, bytes(packet), ("decapsulated",))


def _untouched(frame: bytes, counter: str) -> Outcome:
    return Outcome(XDP_PASS, frame, (counter,))


def _outer_ipv4(frame: bytes, config: ModelConfig) -> Outcome:
    ip = frame[14:]
    if len(ip) < 20:
        return _untouched(frame, "malformed")
    proto = ip[9]
    if proto not in (PROTO_IPIP, PROTO_IPV6):
        return _untouched(frame, "passed_not_tunnel")
    version, ihl, tot = ip[0] >> 4, ip[0] & 15, _be16(ip, 2)
    hlen = ihl * 4
    if version != 4 or ihl < 5 or tot < hlen or tot > len(ip):
        return _untouched(frame, "malformed")
    if ones_complement_sum(ip[:hlen]) != 0xFFFF:
        return _untouched(frame, "malformed")
    if _be16(ip, 6) & 0x3FFF:
        return _untouched(frame, "fragment")
    if not _allowed(ipaddress.ip_address(ip[12:16]), ipaddress.ip_address(ip[16:20]), config):
        return _untouched(frame, "rejected_remote")
    ecn = ip[1] & 3
    if not _inner_valid(ip[hlen:tot], proto, ecn):
        return _untouched(frame, "malformed")
    return _decapsulate(frame, hlen, proto, ecn, config)


def _outer_ipv6(frame: bytes, config: ModelConfig) -> Outcome:
    ip = frame[14:]
    if len(ip) < 40:
        return _untouched(frame, "malformed")
    proto, fragment = ip[6], False
    if proto == PROTO_FRAGMENT:
        if len(ip) < 41:
            return _untouched(frame, "passed_not_tunnel")
        proto, fragment = ip[40], True
    if proto not in (PROTO_IPIP, PROTO_IPV6):
        return _untouched(frame, "passed_not_tunnel")
    plen = _be16(ip, 4)
    if ip[0] >> 4 != 6 or 40 + plen > len(ip):
        return _untouched(frame, "malformed")
    if fragment:
        return _untouched(frame, "fragment")
    if not _allowed(ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40]), config):
        return _untouched(frame, "rejected_remote")
    ecn = (ip[1] >> 4) & 3
    if not _inner_valid(ip[40:40 + plen], proto, ecn):
        return _untouched(frame, "malformed")
    return _decapsulate(frame, 40, proto, ecn, config)


def decap(frame: bytes, config: ModelConfig) -> Outcome:
    """What bpftools_decap does with `frame`."""
    if len(frame) < 14:
        return _untouched(frame, "malformed")
    ethertype = _be16(frame, 12)
    if ethertype == ETH_IPV4:
        return _outer_ipv4(frame, config)
    if ethertype == ETH_IPV6:
        return _outer_ipv6(frame, config)
    return _untouched(frame, "passed_not_tunnel")


# --- frame builders (tests and the benchmark) -------------------------------------------------

def ipv4_checksum(header: bytes) -> int:
    return ~ones_complement_sum(header[:10] + b"\0\0" + header[12:]) & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, tos: int = 0, ttl: int = 64, options: bytes = b"",
         frag: int = 0, ident: int = 1, version: int = 4, ihl: Optional[int] = None,
         tot_len: Optional[int] = None, checksum: Optional[int] = None) -> bytes:
    """An IPv4 header (options padded to 4 bytes) with a correct checksum unless told otherwise."""
    options = options + b"\0" * (-len(options) % 4)
    ihl = 5 + len(options) // 4 if ihl is None else ihl
    tot_len = 20 + len(options) + len(payload) if tot_len is None else tot_len
    header = struct.pack("!BBHHHBBH4s4s", (version << 4) | (ihl & 15), tos, tot_len & 0xFFFF, ident, frag, ttl,
                         proto, 0, ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed) + options
    check = ipv4_checksum(header) if checksum is None else checksum
    return header[:10] + struct.pack("!H", check) + header[12:] + payload


def ipv6(src: str, dst: str, nexthdr: int, payload: bytes, tclass: int = 0, hop_limit: int = 64,
         version: int = 6, payload_len: Optional[int] = None) -> bytes:
    plen = len(payload) if payload_len is None else payload_len
    first = (version << 28) | (tclass << 20) | 0x12345
    return struct.pack("!IHBB16s16s", first, plen & 0xFFFF, nexthdr, hop_limit, ipaddress.ip_address(src).packed,
                       ipaddress.ip_address(dst).packed) + payload


def icmp_echo(ident: int = 0x4242, seq: int = 1, data: bytes = b"bpftools") -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    if len(body) % 2:
        check = ~ones_complement_sum(body + b"\0") & 0xFFFF
    else:
        check = ~ones_complement_sum(body) & 0xFFFF
    return body[:2] + struct.pack("!H", check) + body[4:]


def ether(payload: bytes, ethertype: int, dst: bytes = b"\x02\0\0\0\0\x02", src: bytes = b"\x02\0\0\0\0\x01") -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload
