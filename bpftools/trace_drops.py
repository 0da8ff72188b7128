"""trace-drops: every packet the kernel drops, with its reason, place, flow and a hint.

The BPF half (bpf/trace_drops.bpf.c) sits on skb:kfree_skb (a raw tracepoint when the
kernel has them, else the perf tracepoint), filters in the kernel, counts every matching
drop in a per-CPU hash keyed (netns inode, ifindex, reason) and, unless only a summary is
wanted, sends one event per drop through a ring buffer. This module turns options into the
program's -D defines and filter maps, attaches, and runs the read loop; decoding and names
live in drop_events.py, the explanations in drop_causes.py (one entry per reason, shared with diagnose).
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from .addresses import parse_cidr
from .attach import TracepointAttachment
from .drop_events import (PROTOCOLS, CountRow, DropEvent, Names, RawDrop, decode_event, decode_raw, protocol_name,
                          summarize, wall_clock_offset_ns)
from .encap_types import tunnel_defines, tunnel_port_defines
from .errors import BpftoolsError, survive
from .kernel.drop_reasons import TracepointFormat, kfree_skb_format
from .kernel.kallsyms import read_kallsyms
from .netlink import Interface, NetnsHandle, all_netns as every_netns, list_interfaces, netns_inode, resolve_interface
from .runloop import RunLoop

log = logging.getLogger(__name__)

SOURCE = "trace_drops.bpf.c"
RAW_FN, TP_FN = "bpftools_drops", "bpftools_dropt"
RAW_TP, PERF_TP = b"kfree_skb", b"skb:kfree_skb"
# BPFTOOLS_TRACEPOINT=perf uses the perf tracepoint even where raw tracepoints work (tests cover it so).
FORCE_PERF_TRACEPOINT = os.environ.get("BPFTOOLS_TRACEPOINT") == "perf"


def parse_protocol(text: str) -> int:
    """--proto: a name (icmp, tcp, udp, ...) or a number 0-255."""
    value = text.strip().lower()
    if value in PROTOCOLS:
        return PROTOCOLS[value]
    if value.isdigit() and 0 <= int(value) <= 255:
        return int(value)
    raise BpftoolsError(f"unknown protocol {text!r} (icmp, tcp, udp, icmpv6 or a number 0-255)")


def cidr_defines(prefix: str, network) -> Dict[str, int]:
    """FILTER_<prefix>_FAMILY / _W0.._W3 / _M0.._M3: address and mask as the u32 words the
    BPF program loads from packet memory (native byte order of this machine)."""
    addr = network.network_address.packed.ljust(16, b"\0")
    mask = network.netmask.packed.ljust(16, b"\0")
    words = struct.unpack("=4I", addr)
    masks = struct.unpack("=4I", mask)
    defines = {f"FILTER_{prefix}_FAMILY": network.version}
    for i in range(4):
        defines[f"FILTER_{prefix}_W{i}"] = f"{words[i]}U"
        defines[f"FILTER_{prefix}_M{i}"] = f"{masks[i]}U"
    return defines


@dataclass
class DropFilter:
    """What to trace. Empty means everything in the scope."""
    ifaces: List[Interface] = field(default_factory=list)
    netns_inodes: Set[int] = field(default_factory=set)  # empty with all_netns
    all_netns: bool = False
    src: Optional[object] = None  # ipaddress network
    dst: Optional[object] = None
    proto: Optional[int] = None
    reasons: Set[int] = field(default_factory=set)
    exclude_reasons: Set[int] = field(default_factory=set)
    port: Optional[int] = None  # source or destination
    sport: Optional[int] = None
    dport: Optional[int] = None
    tunnel_ports: List[Tuple[str, int]] = field(default_factory=list)  # (vxlan|geneve, UDP port) besides the defaults
    open_tunnels: bool = True   # False: no tunnel on the traced path (diagnose), the outer flow only

    def describe(self, names: Optional[Names] = None) -> str:
        if self.ifaces:
            where = ", ".join(i.describe() for i in self.ifaces)
        elif self.all_netns:
            where = "all network namespaces"
        else:
            labels = sorted(names.netns_label(i) if names else str(i) for i in self.netns_inodes)
            where = "every interface of netns " + ", ".join(labels)
        extra = [f"src {self.src}" if self.src else "", f"dst {self.dst}" if self.dst else "",
                 f"proto {protocol_name(4, self.proto)}" if self.proto is not None else "",
                 f"port {self.port}" if self.port is not None else "",
                 f"sport {self.sport}" if self.sport is not None else "",
                 f"dport {self.dport}" if self.dport is not None else "",
                 " ".join(f"udp-port {kind}={port}" for kind, port in self.tunnel_ports),
                 self._reasons("reason", self.reasons, names), self._reasons("not", self.exclude_reasons, names)]
        return " ".join([where] + [e for e in extra if e])

    @staticmethod
    def _reasons(word: str, codes: Set[int], names: Optional[Names]) -> str:
        """`reason NO_SOCKET,NETFILTER_DROP` (names when known), `not NOT_SPECIFIED`; "" if none."""
        if not codes:
            return ""
        return f"{word} " + ",".join(sorted(names.reason(c) if names else str(c) for c in codes))


# IP protocols whose ports the kernel program reads (parse_packet in trace_drops.bpf.c).
PORT_PROTOCOLS = {PROTOCOLS[name] for name in ("tcp", "udp", "sctp", "udplite")}

# Functions whose kfree_skb() is not a packet drop: `ip route get` builds a dummy skb, routes it
# and frees it (the hints' own route lookups would otherwise show up as drops).
NOT_DROPS = ("inet_rtm_getroute", "inet6_rtm_getroute")


def symbol_ranges(kallsyms: str, names: Sequence[str]) -> List[Tuple[int, int]]:
    """[start, end) of each named text symbol in /proc/kallsyms text (end: the next symbol)."""
    ranges = []
    for name in names:
        at = kallsyms.find(f" {name}\n")
        if at < 0:
            continue
        line_start = kallsyms.rfind("\n", 0, at) + 1
        next_end = kallsyms.find("\n", at + len(name) + 2)
        start = int(kallsyms[line_start:at].split()[0], 16)
        end = int(kallsyms[at + len(name) + 2:next_end].split()[0], 16) if next_end > 0 else 0
        if start and end > start:
            ranges.append((start, end))
    return ranges


@functools.lru_cache(maxsize=1)
def not_drop_ranges() -> Tuple[Tuple[int, int], ...]:
    return tuple(symbol_ranges(read_kallsyms(), NOT_DROPS))


@dataclass(frozen=True)
class DropCapture:
    """What each event carries besides the drop itself: the kernel stack (return addresses)
    and the first bytes of the packet from its network header."""
    stack_depth: int = 0
    snaplen: int = 0


STACK_DEPTH = 32  # frames; deep enough from kfree_skb down to the syscall or softirq entry


def program_defines(flt: DropFilter, fmt: TracepointFormat, summary: bool,
                    ignore: Sequence[Tuple[int, int]] = (), capture: DropCapture = DropCapture()) -> Dict[str, object]:
    """The -D configuration of trace_drops.bpf.c for a filter (pure; unit-tested)."""
    defines: Dict[str, object] = {
        "HAVE_DROP_REASON": fmt.has_reason,
        "TP_OFF_SKBADDR": fmt.fields.get("skbaddr", 8),
        "TP_OFF_LOCATION": fmt.fields.get("location", 16),
        "TP_OFF_REASON": fmt.fields.get("reason", 0),
        "SUMMARY_ONLY": summary,
        "FILTER_IFACES": bool(flt.ifaces),
        "FILTER_NETNS": bool(not flt.ifaces and not flt.all_netns),
        "FILTER_REASONS": bool(flt.reasons),
        "FILTER_EXCLUDE_REASONS": bool(flt.exclude_reasons),
        "STACK_DEPTH": capture.stack_depth,
        "SNAPLEN": capture.snaplen,
    }
    defines.update(tunnel_defines(flt.tunnel_ports, flt.open_tunnels))
    for name, value in (("PROTO", flt.proto), ("PORT", flt.port), ("SPORT", flt.sport), ("DPORT", flt.dport)):
        if value is not None:
            defines[f"FILTER_{name}"] = value
    if flt.src is not None:
        defines.update(cidr_defines("SRC", flt.src))
    if flt.dst is not None:
        defines.update(cidr_defines("DST", flt.dst))
    for i, (start, end) in enumerate(ignore[:2]):
        defines[f"IGNORE_LOC{i}_START"] = f"{start}ULL"
        defines[f"IGNORE_LOC{i}_END"] = f"{end}ULL"
    return defines


def reason_codes(names: Sequence[str], fmt: TracepointFormat, option: str) -> Set[int]:
    """Reason names (with or without SKB_DROP_REASON_) -> this kernel's codes."""
    if not fmt.has_reason:
        raise BpftoolsError(f"this kernel's skb:kfree_skb has no drop reason (before 5.17): {option} unavailable")
    codes = set()
    for name in names:
        code = fmt.reason_code(name)
        if code is None:
            raise BpftoolsError(f"unknown drop reason {name!r} on this kernel (e.g. NETFILTER_DROP, NO_SOCKET)")
        codes.add(code)
    return codes


def build_filter(ifnames: Sequence[str], netns: NetnsHandle, all_netns: bool, src: Optional[str] = None,
                 dst: Optional[str] = None, proto: Optional[str] = None, reasons: Sequence[str] = (),
                 fmt: Optional[TracepointFormat] = None, *, exclude_reasons: Sequence[str] = (),
                 port: Optional[int] = None, sport: Optional[int] = None,
                 dport: Optional[int] = None, tunnel_ports: Sequence[Tuple[str, int]] = ()) -> DropFilter:
    """Options -> DropFilter; unknown interface/namespace/reason is a one-line BpftoolsError."""
    if netns and all_netns:
        raise BpftoolsError("--netns and --all-netns exclude each other")
    flt = DropFilter(all_netns=all_netns)
    if ifnames:
        if all_netns:
            for ns in every_netns():
                with survive(log, "listing the interfaces of %s", ns):  # a namespace may vanish meanwhile
                    by_name = {i.ifname: i for i in list_interfaces(ns)}
                    flt.ifaces += [by_name[n] for n in ifnames if n in by_name]
            missing = set(ifnames) - {i.ifname for i in flt.ifaces}
            if missing:
                raise BpftoolsError(f"interface {sorted(missing)[0]!r} not found in any network namespace")
        else:
            flt.ifaces = [resolve_interface(name, netns) for name in ifnames]
    elif not all_netns:
        flt.netns_inodes = {netns_inode(netns)}
    flt.src = parse_cidr(src, "--src") if src else None
    flt.dst = parse_cidr(dst, "--dst") if dst else None
    flt.proto = parse_protocol(proto) if proto else None
    flt.port, flt.sport, flt.dport = port, sport, dport
    flt.tunnel_ports = list(tunnel_ports)
    tunnel_port_defines(flt.tunnel_ports)  # too many, or a type the parser does not open: said now
    if (port, sport, dport) != (None, None, None) and flt.proto is not None and flt.proto not in PORT_PROTOCOLS:
        raise BpftoolsError(f"--proto {proto} has no ports: --port/--sport/--dport need tcp, udp, sctp or udplite")
    if reasons or exclude_reasons:
        fmt = fmt or kfree_skb_format()
    if reasons:
        flt.reasons = reason_codes(reasons, fmt, "--reason")
    if exclude_reasons:
        excluded = reason_codes(exclude_reasons, fmt, "--exclude-reason")
        if flt.reasons:  # both: the wanted set minus the excluded, one map lookup in the kernel
            flt.reasons -= excluded
            if not flt.reasons:
                raise BpftoolsError("--exclude-reason removes every --reason given: nothing left to trace")
        else:
            flt.exclude_reasons = excluded
    return flt


class DropTracer(contextlib.AbstractContextManager):
    """`with DropTracer(flt, summary) as t:` compiles, fills the filter maps and attaches to
    skb:kfree_skb; `poll()` hands decoded raw events to `on_event`; `counts()` and
    `events_lost()` read the kernel's counters. Leaving the block detaches and unloads."""

    def __init__(self, flt: DropFilter, summary: bool = False, fmt: Optional[TracepointFormat] = None,
                 capture: DropCapture = DropCapture(), program=None):
        if summary and (capture.stack_depth or capture.snaplen):
            raise BpftoolsError("stacks and packet bytes travel with per-drop events: not with a summary")
        self.flt = flt
        self.summary = summary
        self.capture = capture
        self.fmt = fmt or kfree_skb_format()
        self.program = program   # compiled with defines() by the caller, who unloads it (diagnose)
        self.attachment: Optional[TracepointAttachment] = None
        self._pending: List[bytes] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "DropTracer":
        from .program import BpfProgram

        try:
            if self.program is None:
                self.program = self._stack.enter_context(BpfProgram(SOURCE, self.defines()))
            self._fill_maps()
            self.attachment = self._stack.enter_context(self._attach())
            if not self.summary:
                self.program.table("events").open_ring_buffer(self._on_ring_event)
        except BaseException:
            self._stack.close()
            raise
        return self

    def defines(self) -> Dict[str, object]:
        """The -D configuration this tracer's program is compiled with."""
        return program_defines(self.flt, self.fmt, self.summary, not_drop_ranges(), self.capture)

    def _attach(self) -> TracepointAttachment:
        from bcc import BPF

        try:
            if FORCE_PERF_TRACEPOINT:
                raise BpftoolsError("perf tracepoint forced")
            self.program.load(RAW_FN, BPF.RAW_TRACEPOINT)
            return TracepointAttachment(self.program.bpf, RAW_TP, RAW_FN.encode(), raw=True).attach()
        except BpftoolsError:
            # No raw tracepoints (or not for this one): the perf tracepoint does the same job.
            self.program.load(TP_FN, BPF.TRACEPOINT)
            return TracepointAttachment(self.program.bpf, PERF_TP, TP_FN.encode()).attach()

    def _fill_maps(self) -> None:
        u8, u32 = ctypes.c_uint8, ctypes.c_uint32
        if self.flt.ifaces:
            table = self.program.table("iface_filter")
            for iface in self.flt.ifaces:
                key = table.Key(iface.netns_inode, iface.ifindex)
                table[key] = u8(1)
        if not self.flt.ifaces and not self.flt.all_netns:
            table = self.program.table("netns_filter")
            for inode in self.flt.netns_inodes:
                table[u32(inode)] = u8(1)
        for name, codes in (("reason_filter", self.flt.reasons), ("reason_exclude", self.flt.exclude_reasons)):
            table = self.program.table(name)
            for code in codes:
                table[u32(code)] = u8(1)

    @property
    def method(self) -> str:
        """`raw_tracepoint skb:kfree_skb` or `tracepoint skb:kfree_skb`."""
        if not self.attachment:
            return ""
        return ("raw_tracepoint" if self.attachment.raw else "tracepoint") + " skb:kfree_skb"

    def _on_ring_event(self, _ctx, data, size) -> int:
        self._pending.append(ctypes.string_at(data, size))
        return 0

    def poll(self, timeout_ms: int) -> List[RawDrop]:
        """Wait up to timeout_ms for events; the decoded raw events (none in summary mode)."""
        if self.summary:
            return []
        self.program.bpf.ring_buffer_poll(timeout_ms)
        pending, self._pending = self._pending, []
        return [decode_raw(item, self.capture.stack_depth) for item in pending]

    def detach(self) -> None:
        """Stop tracing but keep maps and ring buffer readable (for the final counts)."""
        if self.attachment is not None and self.attachment.attached:
            self.attachment.detach()
            time.sleep(0.02)  # let program runs already under way on other CPUs finish

    def drain(self) -> List[RawDrop]:
        """Whatever is still in the ring buffer, without waiting (at the end of a run)."""
        if self.summary:
            return []
        self.program.bpf.ring_buffer_consume()
        pending, self._pending = self._pending, []
        return [decode_raw(item, self.capture.stack_depth) for item in pending]

    def counts(self) -> Dict[Tuple[int, int, int], int]:
        table = self.program.table("drop_counts")
        return {(k.netns, k.ifindex, k.reason): sum(v) for k, v in table.items()}

    def events_lost(self) -> int:
        table = self.program.table("lost_events")
        return sum(table[ctypes.c_int(0)])

    def __exit__(self, *exc) -> None:
        self._stack.close()


@dataclass
class RunResult:
    rows: List[CountRow]
    events_lost: int
    events_seen: int


def run_trace(tracer: DropTracer, names: Names, on_event: Callable[[DropEvent], None],
              on_lost: Callable[[int], None], duration: Optional[float] = None, count: Optional[int] = None,
              poll_ms: Optional[int] = None, on_ready: Optional[Callable[[], None]] = None) -> RunResult:
    """Poll until --duration, --count or Ctrl-C/SIGTERM; then read the kernel's counts.

    Lost events (ring buffer full) are reported through on_lost as they are noticed, never
    silently; the counts stay exact because the kernel counts before it tries to send."""
    clock = wall_clock_offset_ns()
    if poll_ms is None:  # summary mode has nothing to read until the end: wake up rarely
        poll_ms = 1000 if tracer.summary else 100
    backlog: Deque[RawDrop] = collections.deque()
    lost_reported = 0

    def poll(timeout: float) -> None:
        backlog.extend(tracer.poll(max(1, int(timeout * 1000))))

    with RunLoop(poll_ms / 1000, duration, count, wait=None if tracer.summary else poll) as loop:

        def deliver() -> None:
            while backlog and loop.left() != 0:
                on_event(decode_event(backlog[0], names, clock))
                backlog.popleft()
                loop.add()

        if on_ready is not None:  # once a signal can no longer cut the summary short
            on_ready()
        for _now in loop:
            if tracer.summary:
                continue
            deliver()
            lost = tracer.events_lost()
            if lost > lost_reported:
                on_lost(lost - lost_reported)
                lost_reported = lost
        tracer.detach()  # from here on nothing is counted that could not be shown
        backlog.extend(tracer.drain())
        deliver()
    lost = tracer.events_lost()
    if not tracer.summary and lost > lost_reported:
        on_lost(lost - lost_reported)
    return RunResult(summarize(tracer.counts(), names), lost, loop.seen)
