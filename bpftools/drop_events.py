"""Drop events: the kernel's raw record, decoded into names (namespace, interface, reason,
kernel symbol, protocol) and rendered as a human line or the stable --json schema.

Pure functions and small caches; no BPF here (unit-tested without root or bcc).
"""
from __future__ import annotations

import dataclasses
import logging
import struct
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .encap_types import ENCAP_TYPES
from .errors import survive
from .kernel.drop_reasons import TracepointFormat
from .addresses import format_address
from . import namespaces
from .netlink import NetnsHandle, host_netns_inode, list_interfaces, named_netns, netns_inode

log = logging.getLogger(__name__)

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132, "gre": 47, "esp": 50, "ah": 51,
             "ipip": 4, "ipv6": 41, "ipv6-frag": 44, "udplite": 136, "ospf": 89, "vrrp": 112}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
ETHERTYPE_NAMES = {0x0806: "arp", 0x8035: "rarp", 0x88CC: "lldp", 0x8100: "vlan", 0x88A8: "qinq",
                   0x8847: "mpls", 0x8863: "pppoe-discovery", 0x8864: "pppoe", 0x88E5: "macsec"}

# struct tunnel_flow and struct tunnel_encap of bpf/include/tunnel.h.
FLOW_FORMAT, ENCAP_FORMAT = "HBBHHBBBB16s16s", "BBHI"
# Mirrors struct drop_event in bpf/trace_drops.bpf.c (its flow, the device name, sizes, then the
# tunnel and the inner flow; padded to 8 bytes); struct drop_record appends STACK_DEPTH u64
# return addresses, then SNAPLEN packet bytes.
EVENT_LAYOUT = struct.Struct(f"<QQIIII{FLOW_FORMAT}16sHH{ENCAP_FORMAT}{FLOW_FORMAT}4x")
HAS_PORTS, HAS_ICMP = 1, 2
ENCAP_NONE = 0
ETHERTYPE_ARP = 0x0806
UDP_ENCAPS = ("vxlan", "geneve")
KEYED_ENCAPS = ("gre", "gretap")


@dataclass(frozen=True)
class RawDrop:
    """One event exactly as the kernel sent it (numbers, not names)."""
    ts_ns: int
    location: int
    netns: int
    ifindex: int
    reason: int
    len: int
    ethertype: int
    family: int
    proto: int
    sport: int
    dport: int
    icmp_type: int
    icmp_code: int
    has_ports: int
    dev_known: int
    saddr: bytes
    daddr: bytes
    ifname: bytes
    stack_bytes: int = 0
    caplen: int = 0
    encap: int = ENCAP_NONE   # struct tunnel_encap: kind, has_id, dport, id
    encap_has_id: int = 0
    encap_dport: int = 0
    encap_id: int = 0
    inner: Tuple = ()  # struct tunnel_flow of the packet inside a tunnel packet, as unpacked
    stack: Optional[Tuple[int, ...]] = None  # kernel return addresses, innermost first (None: not asked)
    packet: bytes = b""  # from the network header, at most SNAPLEN bytes


def decode_raw(data: bytes, stack_depth: int = 0) -> RawDrop:
    """One ring buffer record: the event, then `stack_depth` stack slots, then packet bytes."""
    fields = EVENT_LAYOUT.unpack_from(data)
    inner_at = len(fields) - len(FLOW_FIELDS)
    raw = RawDrop(*fields[:inner_at], inner=fields[inner_at:])
    extra = {}
    if stack_depth:
        frames = min(raw.stack_bytes // 8, stack_depth)
        extra["stack"] = struct.unpack_from(f"<{frames}Q", data, EVENT_LAYOUT.size)
    if raw.caplen:
        start = EVENT_LAYOUT.size + 8 * stack_depth
        extra["packet"] = bytes(data[start:start + raw.caplen])
    return dataclasses.replace(raw, **extra) if extra else raw


def family_name(family: int, ethertype: int) -> Optional[str]:
    """"ipv4", "ipv6", a known non-IP ethertype's name ("arp"), else the ethertype in hex."""
    if family == 4:
        return "ipv4"
    if family == 6:
        return "ipv6"
    if ethertype:
        return ETHERTYPE_NAMES.get(ethertype, f"0x{ethertype:04x}")
    return None


def protocol_name(family: int, proto: int) -> Optional[str]:
    if family not in (4, 6):
        return None
    return PROTOCOL_NAMES.get(proto, str(proto))


FLOW_FIELDS = ("ethertype", "family", "proto", "sport", "dport", "icmp_type", "icmp_code", "has_ports", "user",
               "saddr", "daddr")


@dataclass(frozen=True)
class Flow:
    """One flow as the kernel program parsed it, with names: the packet inside a tunnel packet."""
    family: Optional[str]
    proto: Optional[str]
    src: Optional[str]
    dst: Optional[str]
    sport: Optional[int] = None
    dport: Optional[int] = None
    icmp_type: Optional[int] = None
    icmp_code: Optional[int] = None

    def as_json(self) -> dict:
        return dataclasses.asdict(self)

    def text(self) -> str:
        return flow_text(self.family, self.proto, self.src, self.dst, self.sport, self.dport, self.icmp_type,
                         self.icmp_code)


def decode_flow(ethertype: int, family: int, proto: int, sport: int, dport: int, icmp_type: int, icmp_code: int,
                has_ports: int, _user: int, saddr: bytes, daddr: bytes) -> Flow:
    """A struct tunnel_flow (fields in order) -> Flow."""
    has_icmp = has_ports == HAS_ICMP
    has_ports = has_ports == HAS_PORTS
    return Flow(family_name(family, ethertype), protocol_name(family, proto), format_address(family, saddr),
                format_address(family, daddr), sport if has_ports else None, dport if has_ports else None,
                icmp_type if has_icmp else None, icmp_code if has_icmp else None)


def decode_inner(encap: Optional["Encap"], fields: Tuple) -> Optional[Flow]:
    """The inner struct tunnel_flow of a tunnel packet -> Flow; None when it is none, or its
    headers could not be read (beyond the parser's window, cut short)."""
    if encap is None or not fields:
        return None
    ethertype, family = fields[0], fields[1]
    return decode_flow(*fields) if family in (4, 6) or ethertype == ETHERTYPE_ARP else None


@dataclass(frozen=True)
class Encap:
    """How a tunnel packet carries its inner flow: the tunnel type, its VNI (VXLAN, GENEVE) or
    GRE key when the header has one, and the UDP destination port of UDP tunnels."""
    kind: str
    vni: Optional[int] = None
    key: Optional[int] = None
    dport: Optional[int] = None

    def as_json(self) -> dict:
        return dataclasses.asdict(self)

    def text(self) -> str:
        """`vxlan vni 42`, `gre key 7`, `ipip`."""
        ident = f" vni {self.vni}" if self.vni is not None else f" key {self.key}" if self.key is not None else ""
        return self.kind + ident


def decode_encap(kind: int, has_id: int, dport: int, ident: int) -> Optional[Encap]:
    """A struct tunnel_encap -> Encap; None when the packet is no tunnel packet."""
    if kind == ENCAP_NONE or kind >= len(ENCAP_TYPES):
        return None
    name = ENCAP_TYPES[kind]
    return Encap(name, ident if has_id and name in UDP_ENCAPS else None,
                 ident if has_id and name in KEYED_ENCAPS else None, dport if name in UDP_ENCAPS else None)


def flow_text(family: Optional[str], proto: Optional[str], src: Optional[str], dst: Optional[str],
              sport: Optional[int], dport: Optional[int], icmp_type: Optional[int], icmp_code: Optional[int]) -> str:
    """`udp 10.0.0.1:5353 > 10.0.0.2:53`, `icmp 10.0.0.1 > 10.0.0.2 echo-request`, `arp`."""
    if src is None:
        return family or "unknown"
    sep = "." if family == "ipv6" else ":"
    if sport is not None:
        return f"{proto} {src}{sep}{sport} > {dst}{sep}{dport}"
    text = f"{proto} {src} > {dst}"
    if icmp_type is not None:
        text += f" {icmp_name(family, icmp_type, icmp_code)}"
    return text


def tunnel_text(outer: str, encap: Encap, inner: Optional[Flow]) -> str:
    """Both flows of a tunnel packet: `udp 10.0.0.1:4242 > 10.0.0.2:4789 vxlan vni 42 [icmp 10.1.0.1 >
    10.1.0.2 echo-request]`."""
    return f"{outer} {encap.text()} [{inner.text() if inner else 'unknown'}]"


class Names:
    """Numbers -> names for output, cached: netns inode -> label/`ip netns` name,
    (netns, ifindex) -> ifname, location -> kernel symbol, reason code -> name."""

    def __init__(self, fmt: TracepointFormat, ksym: Optional[Callable[[int], str]] = None):
        self.fmt = fmt
        self._ksym = ksym
        self._symbols: Dict[int, str] = {}
        self._ns_names: Dict[int, Optional[str]] = {}
        self._ns_refreshed = 0.0
        self._ifnames: Dict[Tuple[int, int], Optional[str]] = {}
        self.own_inode = netns_inode(None)
        self.host_inode = host_netns_inode()
        self.refresh()

    def refresh(self) -> None:
        self._ns_names = dict(named_netns())
        self._ns_labels: Dict[int, str] = {}
        self._ns_refreshed = time.monotonic()

    def netns_name(self, inode: int) -> Optional[str]:
        """The `ip netns` name (None: our own namespace or an unnamed one)."""
        if inode not in self._ns_names and time.monotonic() - self._ns_refreshed > 1.0:
            self.refresh()
        return self._ns_names.get(inode)

    def netns_label(self, inode: int) -> str:
        """The registry's label (bpftools.namespaces): host, docker:NAME, pid:N (comm)…"""
        if inode == self.host_inode:
            return "host"
        if inode not in self._ns_labels and time.monotonic() - self._ns_refreshed > 1.0:
            self.refresh()
        if inode not in self._ns_labels:  # the registry's first: a pod's CNI file is an `ip netns` name too
            found = namespaces.find_inode(inode)
            self._ns_labels[inode] = found.label if found else self.netns_name(inode) or f"inode:{inode}"
        return self._ns_labels[inode]

    def netns_reachable(self, inode: int) -> Tuple[bool, NetnsHandle]:
        """(can we enter it, a handle: None for our own namespace, the `ip netns` name, a Netns)."""
        if inode == self.own_inode:
            return True, None
        name = self.netns_name(inode)
        if name is not None:
            return True, name
        found = namespaces.find_inode(inode)
        return (True, found) if found is not None and found.path else (False, None)

    def ifname(self, netns: int, ifindex: int) -> Optional[str]:
        key = (netns, ifindex)
        if key not in self._ifnames:
            ok, ns = self.netns_reachable(netns)
            name = None
            if ok and ifindex:
                with survive(log, "listing the interfaces of netns %s", netns):
                    for iface in list_interfaces(ns):
                        self._ifnames[(netns, iface.ifindex)] = iface.ifname
                    name = self._ifnames.get(key)
            self._ifnames[key] = name
        return self._ifnames[key]

    def remember_ifname(self, netns: int, ifindex: int, name: str) -> None:
        self._ifnames[(netns, ifindex)] = name

    def symbol(self, addr: int) -> Optional[str]:
        if not addr:
            return None
        if addr not in self._symbols:
            text = None
            if self._ksym is not None:
                with survive(log, "resolving kernel address 0x%x", addr):
                    text = self._ksym(addr)
            self._symbols[addr] = text if text and not text.startswith("[unknown]") else f"0x{addr:x}"
        return self._symbols[addr]

    def reason(self, code: int) -> str:
        return self.fmt.reason_name(code)

    def stack(self, addresses: Sequence[int]) -> List[str]:
        """Return addresses -> "func+0xoff", innermost first, without the tracing machinery
        that called our program (bpf_trace_run*, perf_trace_*...)."""
        frames = [self.symbol(addr) or "0x0" for addr in addresses]
        while frames and frames[0].startswith(TRACING_FRAMES):
            frames.pop(0)
        return frames


# Frames above kfree_skb that belong to the tracepoint and our program, not to the drop.
TRACING_FRAMES = ("bpf_prog_", "bpf_trace_run", "__bpf_trace_", "perf_trace_", "trace_event_raw_event_",
                  "__traceiter_", "perf_tp_event", "bpf_get_stack")


def bcc_ksym(addr: int) -> str:
    from bcc import BPF

    return BPF.ksym(addr, show_offset=True).decode(errors="replace")


@dataclass
class DropEvent:
    """A decoded drop, with names; `as_json()` is the stable --json schema."""
    ts: float
    netns: str
    netns_inode: int
    netns_name: Optional[str]
    ifname: Optional[str]
    ifindex: int
    reason: str
    reason_code: int
    location: Optional[str]
    family: Optional[str]
    proto: Optional[str]
    src: Optional[str]
    dst: Optional[str]
    sport: Optional[int]
    dport: Optional[int]
    icmp_type: Optional[int]
    icmp_code: Optional[int]
    len: int
    hint: Optional[str] = None
    stack: Optional[List[str]] = None  # with --stack
    encap: Optional[Encap] = None  # a tunnel packet: how it carries `inner`
    inner: Optional[Flow] = None  # None also when the tunnel's payload was not parsed (beyond the window)
    packet: bytes = b""  # with --pcap: bytes from the network header (not in --json)

    def as_json(self) -> dict:
        return {"type": "drop", "ts": round(self.ts, 6), "netns": self.netns, "netns_inode": self.netns_inode,
                "ifname": self.ifname,
                "ifindex": self.ifindex, "reason": self.reason, "reason_code": self.reason_code,
                "location": self.location, "family": self.family, "proto": self.proto, "src": self.src,
                "dst": self.dst, "sport": self.sport, "dport": self.dport, "icmp_type": self.icmp_type,
                "icmp_code": self.icmp_code, "len": self.len, "hint": self.hint, "stack": self.stack,
                "encap": self.encap.as_json() if self.encap else None,
                "inner": self.inner.as_json() if self.inner else None}

    def flow(self) -> str:
        """The packet's flow (flow_text); a tunnel packet's is followed by the tunnel and, in
        brackets, the flow inside it."""
        own = flow_text(self.family, self.proto, self.src, self.dst, self.sport, self.dport, self.icmp_type,
                        self.icmp_code)
        return tunnel_text(own, self.encap, self.inner) if self.encap else own

    def text(self) -> str:
        """The human output for one drop: the line, the hint and the stack under it."""
        text = self.line() + (f"\n    hint: {self.hint}" if self.hint else "")
        if self.stack is not None:
            text += "\n    stack:" + "".join(f"\n      {frame}" for frame in self.stack or ["(not available)"])
        return text

    def line(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.ts)) + f".{int(self.ts * 1e6) % 1000000:06d}"
        where = f"{self.netns}/{self.ifname or f'if{self.ifindex}'}"
        return f"{when} {where} {self.reason} {self.flow()} len {self.len} at {self.location or '?'}"


ICMP_TYPES = {0: "echo-reply", 3: "unreachable", 5: "redirect", 8: "echo-request", 11: "time-exceeded"}
ICMPV6_TYPES = {1: "unreachable", 2: "packet-too-big", 3: "time-exceeded", 128: "echo-request",
                129: "echo-reply", 133: "router-solicitation", 134: "router-advertisement",
                135: "neighbor-solicitation", 136: "neighbor-advertisement", 143: "mld2-report"}


def icmp_name(family: Optional[str], icmp_type: int, code: Optional[int]) -> str:
    names = ICMPV6_TYPES if family == "ipv6" else ICMP_TYPES
    name = names.get(icmp_type, f"type {icmp_type}")
    return name if not code else f"{name} code {code}"


def wall_clock_offset_ns() -> int:
    """Add to bpf_ktime_get_ns() (CLOCK_MONOTONIC) to get Unix time in ns."""
    return time.time_ns() - time.monotonic_ns()


def decode_event(raw: RawDrop, names: Names, clock_offset_ns: int) -> DropEvent:
    ifname = raw.ifname.split(b"\0", 1)[0].decode(errors="replace") if raw.dev_known else None
    encap = decode_encap(raw.encap, raw.encap_has_id, raw.encap_dport, raw.encap_id)
    if ifname:
        names.remember_ifname(raw.netns, raw.ifindex, ifname)
    else:
        ifname = names.ifname(raw.netns, raw.ifindex)
    has_ports, has_icmp = raw.has_ports == HAS_PORTS, raw.has_ports == HAS_ICMP
    return DropEvent(
        ts=(raw.ts_ns + clock_offset_ns) / 1e9, netns=names.netns_label(raw.netns), netns_inode=raw.netns,
        netns_name=names.netns_name(raw.netns), ifname=ifname, ifindex=raw.ifindex,
        reason=names.reason(raw.reason), reason_code=raw.reason, location=names.symbol(raw.location),
        family=family_name(raw.family, raw.ethertype), proto=protocol_name(raw.family, raw.proto),
        src=format_address(raw.family, raw.saddr), dst=format_address(raw.family, raw.daddr),
        sport=raw.sport if has_ports else None, dport=raw.dport if has_ports else None,
        icmp_type=raw.icmp_type if has_icmp else None, icmp_code=raw.icmp_code if has_icmp else None,
        len=raw.len, stack=names.stack(raw.stack) if raw.stack is not None else None, packet=raw.packet,
        encap=encap, inner=decode_inner(encap, raw.inner))


@dataclass(frozen=True)
class CountRow:
    netns: str
    ifname: Optional[str]
    ifindex: int
    reason: str
    count: int
    netns_inode: Optional[int] = None

    def as_json(self) -> dict:
        return {"netns": self.netns, "netns_inode": self.netns_inode, "ifname": self.ifname, "ifindex": self.ifindex,
                "reason": self.reason, "count": self.count}


def summarize(counts: Dict[Tuple[int, int, int], int], names: Names) -> List[CountRow]:
    """(netns inode, ifindex, reason code) -> count  into rows, biggest first."""
    rows = [CountRow(names.netns_label(ns), names.ifname(ns, ifindex), ifindex, names.reason(reason), n, ns)
            for (ns, ifindex, reason), n in counts.items() if n]
    return sorted(rows, key=lambda r: (-r.count, r.netns, r.ifindex, r.reason))


def summary_json(rows: Iterable[CountRow], events_lost: int) -> dict:
    return {"type": "summary", "drops": [r.as_json() for r in rows], "events_lost": events_lost}
