"""The live part of `diagnose ping`: send the pings from the source namespace while drops
are traced in every namespace on the path, and count packets per hop (interface counters).

Drop tracing plugs in through `DropTracer`: a callable taking the namespace names and
returning a context manager whose `events()` gives drop events as dicts with at least
`reason`, `netns`, `ifname` (and optionally `count`, `location`)."""
from __future__ import annotations

import contextlib
import re
import subprocess
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, List, Optional, Sequence

from ..errors import BpftoolsError
from .capture import Known, entered

DropTracer = Callable[[List[str]], ContextManager]


@dataclass
class LiveResult:
    sent: int = 0
    received: int = 0
    drops: List[dict] = field(default_factory=list)
    counters: Dict[str, Dict[str, Dict[str, int]]] = field(default_factory=dict)
    hop_counts: Optional[Dict[tuple, int]] = None   # (netns, ifindex, rx|tx, icmp type) -> echo packets
    notes: List[str] = field(default_factory=list)


def ping(netns: str, dst: str, count: int, timeout: float, payload: int = 56,
         extra: Sequence[str] = ()) -> (int, int, str):
    """(sent, received, output) of a bounded ping from `netns` (`extra`: e.g. ["-I", "veth0"])."""
    cmd = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(max(1, int(round(timeout)))),
           "-s", str(payload), *extra, dst]
    try:
        with entered(netns):
            proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise BpftoolsError(f"cannot run ping: {exc.strerror} (install iputils-ping)") from None
    out = proc.stdout + proc.stderr
    if "exec of \"ping\" failed" in out:
        raise BpftoolsError("cannot run ping in the namespace (install iputils-ping)")
    match = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
    if not match:
        return 0, 0, out
    return int(match.group(1)), int(match.group(2)), out


def read_counters(namespaces: List[str], known: Optional[Known] = None) -> Dict[str, Dict[str, Dict[str, int]]]:
    from pyroute2 import IPRoute

    known = known or Known()
    result: Dict[str, Dict[str, Dict[str, int]]] = {}
    for ns in namespaces:
        try:
            with entered(ns, known):
                sock = IPRoute()
            with sock:
                links = list(sock.get_links())
        except Exception:
            continue
        per = result.setdefault(ns, {})
        for msg in links:
            stats = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS")
            if stats:
                per[msg.get_attr("IFLA_IFNAME")] = {"rx": stats["rx_packets"], "tx": stats["tx_packets"],
                                                    "rx_dropped": stats["rx_dropped"],
                                                    "tx_dropped": stats["tx_dropped"]}
    return result


def _delta(before, after):
    out: Dict[str, Dict[str, Dict[str, int]]] = {}
    for ns, links in after.items():
        for name, stats in links.items():
            old = before.get(ns, {}).get(name)
            if old:
                out.setdefault(ns, {})[name] = {k: stats[k] - old.get(k, 0) for k in stats}
    return out


class TraceDropsSession:
    """Adapter from trace-drops (`trace_drops.DropTracer`) to the `DropTracer` seam: traces
    kfree_skb in the given namespaces; `events()` returns the drops seen so far as JSON dicts."""

    def __init__(self, namespaces: List[str]):
        from ..kernel.drop_reasons import kfree_skb_format
        from ..trace_drops import DropFilter, DropTracer

        known = Known()
        self.fmt = kfree_skb_format()
        self.labels = {known.inode(ns): ns for ns in namespaces}  # events are named as the path names them
        self.tracer = DropTracer(DropFilter(netns_inodes=set(self.labels)), fmt=self.fmt)
        self.names = None
        self.clock = 0

    def __enter__(self) -> "TraceDropsSession":
        from ..drop_events import Names, bcc_ksym, wall_clock_offset_ns

        self.tracer.__enter__()
        self.names = Names(self.fmt, bcc_ksym)
        self.clock = wall_clock_offset_ns()
        return self

    def events(self) -> List[dict]:
        from ..drop_events import decode_event

        found: List[dict] = []
        for _ in range(4):
            raws = self.tracer.poll(50)
            for raw in raws:
                event = decode_event(raw, self.names, self.clock)
                found.append(dict(event.as_json(), netns=self.labels.get(event.netns_inode, event.netns),
                                  netns_inode=event.netns_inode))
        return found

    def __exit__(self, *exc) -> None:
        self.tracer.__exit__(*exc)


class HopCounter:
    """Counts the ping's echo requests and replies per (namespace, interface, direction) with
    bpf/diagnose.bpf.c on the netif_receive_skb / net_dev_start_xmit raw tracepoints."""

    def __init__(self, namespaces: List[str], a: str, b: str):
        self.namespaces = namespaces
        self.a, self.b = a, b
        self._stack = contextlib.ExitStack()
        self.program = None
        self.inodes: Dict[int, str] = {}

    def __enter__(self) -> "HopCounter":
        import ctypes
        import socket
        import struct

        from bcc import BPF

        from ..attach import TracepointAttachment
        from ..program import BpfProgram

        def word(address: str) -> str:
            return f"{struct.unpack('<I', socket.inet_aton(address))[0]}U"

        known = Known()
        try:
            self.program = self._stack.enter_context(
                BpfProgram("diagnose.bpf.c", {"FILTER_A": word(self.a), "FILTER_B": word(self.b)}))
            table = self.program.table("netns_filter")
            for ns in self.namespaces:
                inode = known.inode(ns)
                self.inodes[inode] = ns
                table[ctypes.c_uint32(inode)] = ctypes.c_uint8(1)
            for fn, tp in (("bpftools_dgrx", b"netif_receive_skb"), ("bpftools_dgtx", b"net_dev_start_xmit")):
                self.program.load(fn, BPF.RAW_TRACEPOINT)
                self._stack.enter_context(TracepointAttachment(self.program.bpf, tp, fn.encode(), raw=True).attach())
        except BaseException:
            self._stack.close()
            raise
        return self

    def counts(self) -> Dict[tuple, int]:
        """(netns label, ifindex, "rx"|"tx", icmp type) -> packets."""
        result: Dict[tuple, int] = {}
        for key, value in self.program.table("hop_counts").items():
            ns = self.inodes.get(key.netns)
            if ns is not None:
                result[(ns, key.ifindex, "tx" if key.dir else "rx", key.icmp_type)] = value.value
        return result

    def __exit__(self, *exc) -> None:
        self._stack.close()


def default_tracer() -> Optional[DropTracer]:
    """The trace-drops machinery, when this installation has it."""
    try:
        from .. import trace_drops  # noqa: F401
    except Exception:
        return None
    return TraceDropsSession


def relevant_drops(events: List[dict], a: Optional[str], b: str) -> List[dict]:
    """The drops of this ping (ICMP between the two ends, and ARP), merged per place and reason."""
    merged: Dict[tuple, dict] = {}
    ends = {a, b}
    for event in events:
        arp = event.get("family") == "arp"
        ours = event.get("proto") == "icmp" and event.get("src") in ends and event.get("dst") in ends
        if not (arp or ours):
            continue
        key = (event.get("netns"), event.get("ifname"), event.get("reason"), event.get("src"), event.get("dst"))
        if key in merged:
            merged[key]["count"] += 1
            continue
        merged[key] = {"netns": event.get("netns"), "ifname": event.get("ifname"), "reason": event.get("reason"),
                       "location": event.get("location"), "family": event.get("family"),
                       "proto": event.get("proto"), "src": event.get("src"), "dst": event.get("dst"),
                       "icmp_type": event.get("icmp_type"), "netns_inode": event.get("netns_inode"), "count": 1}
    return list(merged.values())


def run_live(src_ns: str, dst: str, count: int, timeout: float, payload: int, namespaces: List[str],
             tracer: Optional[DropTracer] = None, src: Optional[str] = None,
             ping_args: Sequence[str] = ()) -> LiveResult:
    """Ping while counting per hop and tracing drops; counting and tracing are evidence, not
    requirements: when they cannot start, `notes` says why and the pings still run."""
    result = LiveResult()
    with contextlib.ExitStack() as stack:
        counter = _optional(stack, result, "per-hop ICMP counting",
                            lambda: HopCounter(namespaces, src, dst) if src else None)
        tracing = _optional(stack, result, "drop tracing", lambda: tracer(namespaces) if tracer else None)
        before = read_counters(namespaces)
        result.sent, result.received, out = ping(src_ns, dst, count, timeout, payload, ping_args)
        if not result.sent and out.strip():
            last = out.strip().splitlines()[-1]
            result.notes.append(last if last.startswith("ping:") else f"ping: {last}")
        try:
            result.drops = list(tracing.events()) if tracing is not None else []
            result.hop_counts = counter.counts() if counter is not None else None
        except Exception as exc:
            result.notes.append(f"reading the traces failed: {_short(exc)}")
        result.counters = _delta(before, read_counters(namespaces))
    return result


def _optional(stack: contextlib.ExitStack, result: LiveResult, what: str, factory):
    try:
        manager = factory()
        if manager is None:
            result.notes.append(f"{what} unavailable")
            return None
        return stack.enter_context(manager)
    except Exception as exc:
        result.notes.append(f"{what} unavailable: {_short(exc)}")
        return None


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
