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

# Mirrors struct drop_event in bpf/trace_drops.bpf.c; struct drop_record appends
# STACK_DEPTH u64 return addresses, then SNAPLEN packet bytes.
EVENT_LAYOUT = struct.Struct("<QQIIIIHBBHHBBBB16s16s16sHH")
HAS_PORTS, HAS_ICMP = 1, 2


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
    stack: Optional[Tuple[int, ...]] = None  # kernel return addresses, innermost first (None: not asked)
    packet: bytes = b""  # from the network header, at most SNAPLEN bytes


def decode_raw(data: bytes, stack_depth: int = 0) -> RawDrop:
    """One ring buffer record: the event, then `stack_depth` stack slots, then packet bytes."""
    raw = RawDrop(*EVENT_LAYOUT.unpack_from(data))
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
    packet: bytes = b""  # with --pcap: bytes from the network header (not in --json)

    def as_json(self) -> dict:
        return {"type": "drop", "ts": round(self.ts, 6), "netns": self.netns, "netns_inode": self.netns_inode,
                "ifname": self.ifname,
                "ifindex": self.ifindex, "reason": self.reason, "reason_code": self.reason_code,
                "location": self.location, "family": self.family, "proto": self.proto, "src": self.src,
                "dst": self.dst, "sport": self.sport, "dport": self.dport, "icmp_type": self.icmp_type,
                "icmp_code": self.icmp_code, "len": self.len, "hint": self.hint, "stack": self.stack}

    def flow(self) -> str:
        """`udp 10.0.0.1:5353 > 10.0.0.2:53`, `icmp 10.0.0.1 > 10.0.0.2 echo-request`, `arp`."""
        if self.src is None:
            return self.family or "unknown"
        sep = "." if self.family == "ipv6" else ":"
        if self.sport is not None:
            return f"{self.proto} {self.src}{sep}{self.sport} > {self.dst}{sep}{self.dport}"
        text = f"{self.proto} {self.src} > {self.dst}"
        if self.icmp_type is not None:
            text += f" {icmp_name(self.family, self.icmp_type, self.icmp_code)}"
        return text

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
        len=raw.len, stack=names.stack(raw.stack) if raw.stack is not None else None, packet=raw.packet)


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
