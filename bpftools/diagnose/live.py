"""The live part of `diagnose ping`: send the pings from the source namespace while drops
are traced in every namespace on the path, and count packets per hop (interface counters).

Drop tracing plugs in through `DropTracer`: a callable taking the namespace names and
returning a context manager whose `events()` gives drop events as dicts with at least
`reason`, `netns`, `ifname` (and optionally `count`, `location`)."""
from __future__ import annotations

import contextlib
import functools
import logging
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, Iterable, List, Optional, Sequence, Tuple

from ..encap_types import PARSER_EXTRA_PORTS, PARSER_UDP_PORTS, tunnel_defines
from ..errors import BpftoolsError, first_line
from .capture import Known, entered
from .records import Drop
from .state import NetnsState
from .tunnel import is_tunnel

log = logging.getLogger(__name__)

DropTracer = Callable[[List[str]], ContextManager]


@dataclass
class LiveResult:
    sent: int = 0
    received: int = 0
    drops: List[dict] = field(default_factory=list)
    counters: Dict[str, Dict[str, Dict[str, int]]] = field(default_factory=dict)
    hop_counts: Optional[Dict[tuple, int]] = None   # (netns, ifindex, rx|tx, icmp(v6) type) -> echo packets
    notes: List[str] = field(default_factory=list)


PING_INTERVAL = 0.05   # seconds between echo requests (root may go below ping's 0.2 s floor)
SETTLE = 0.25          # quiet time after the last request before the per-hop counts are final
POLL = 0.02            # how often the evidence is looked at while the pings run
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def ping(netns: str, dst: str, count: int, timeout: float, payload: int = 56,
         extra: Sequence[str] = (), conclusive: Optional[Callable[[float], bool]] = None,
         interval: float = PING_INTERVAL) -> (int, int, str):
    """(sent, received, output) of a bounded ping from `netns` (`extra`: e.g. ["-I", "veth0"]).
    Requests go out every `interval`; it ends when every reply is in, when ping gives up
    (`timeout` after the last request), or, once every request is out, as soon as
    `conclusive(seconds since the last request)` says the evidence already shows where they stop."""
    wait = max(1, int(round(timeout)))
    cmd = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait), "-s", str(payload), *extra, dst]
    try:
        with entered(netns):  # ping starts in the source namespace (a container's needs no ping binary)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise BpftoolsError(f"cannot run ping: {exc.strerror} (install iputils-ping)") from None
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    last_request = time.monotonic() + (count - 1) * interval
    deadline = last_request + wait + 1.0
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= last_request and conclusive is not None and conclusive(now - last_request):
                proc.send_signal(signal.SIGINT)   # ping prints its summary and exits
                break
            time.sleep(POLL)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=2)
    out = "".join(lines)
    if "exec of \"ping\" failed" in out:
        raise BpftoolsError("cannot run ping in the namespace (install iputils-ping)")
    match = _PING_SUMMARY.search(out)
    if not match:
        return 0, 0, out
    return int(match.group(1)), int(match.group(2)), out


class Evidence:
    """Decides, while the pings run, whether what is traced and counted already shows where the
    echo requests (or replies) stop: a drop of this ping was traced, or the per-hop counts have
    not moved for SETTLE since the last request went out. A path that leaves the machine is never
    cut short: replies from afar take their time."""

    def __init__(self, tracing, counter, src: Optional[str], dst: str, local: bool):
        self.tracing, self.counter = tracing, counter
        self.src, self.dst, self.local = src, dst, local
        self.drops: List[dict] = []
        self._counts: Optional[Dict[tuple, int]] = None
        self._moved_at = time.monotonic()

    def poll(self) -> None:
        if self.tracing is not None:
            self.drops += self.tracing.events(wait_ms=0)
        if self.counter is not None:
            counts = self.counter.counts()
            if counts != self._counts:
                self._counts, self._moved_at = counts, time.monotonic()

    def __call__(self, since_last_request: float) -> bool:
        if not self.local:
            return False
        try:
            self.poll()
        except Exception as exc:   # evidence is optional: without it, ping runs to its end
            log.debug("reading the drops during the pings failed: %s", first_line(exc))
            self.local = False
            return False
        if relevant_drops(self.drops, self.src, self.dst):
            return True
        quiet = time.monotonic() - self._moved_at
        return bool(self._counts) and min(quiet, since_last_request) >= SETTLE


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
        except Exception as exc:  # a namespace that went away has no counters
            log.debug("interface counters of %s: %s", ns, first_line(exc))
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

    def __init__(self, namespaces: List[str], program=None, tunnel_ports: Sequence[Tuple[str, int]] = (),
                 open_tunnels: bool = True):
        from ..kernel.drop_reasons import kfree_skb_format
        from ..trace_drops import DropFilter, DropTracer

        known = Known()
        self.fmt = kfree_skb_format()
        self.labels = {known.inode(ns): ns for ns in namespaces}  # events are named as the path names them
        self.tracer = DropTracer(DropFilter(netns_inodes=set(self.labels), tunnel_ports=list(tunnel_ports),
                                            open_tunnels=open_tunnels),
                                 fmt=self.fmt, program=program)
        self.names = None
        self.clock = 0

    def __enter__(self) -> "TraceDropsSession":
        from ..drop_events import Names, bcc_ksym, wall_clock_offset_ns

        self.tracer.__enter__()
        self.names = Names(self.fmt, bcc_ksym)
        self.clock = wall_clock_offset_ns()
        return self

    def events(self, wait_ms: int = 200) -> List[dict]:
        """The drops seen since the last call (waiting up to `wait_ms` for late ones)."""
        from ..drop_events import decode_event

        found: List[dict] = []
        for _ in range(max(1, wait_ms // 50)):
            raws = self.tracer.poll(min(50, wait_ms))
            for raw in raws:
                event = decode_event(raw, self.names, self.clock)
                found.append(dict(event.as_json(), netns=self.labels.get(event.netns_inode, event.netns),
                                  netns_inode=event.netns_inode))
        return found

    def __exit__(self, *exc) -> None:
        self.tracer.__exit__(*exc)


def filter_words(address: str) -> List[str]:
    """An address as bpf/diagnose.bpf.c compares it: four u32 words as loaded from memory
    (IPv4: the address, then zeros)."""
    import ipaddress
    import struct

    packed = ipaddress.ip_address(address).packed.ljust(16, b"\0")
    return [f"{word}U" for word in struct.unpack("<4I", packed)]


class HopCounter:
    """Counts the ping's echo requests and replies (ICMP or ICMPv6) per (namespace, interface,
    direction) with bpf/diagnose.bpf.c on the netif_receive_skb / net_dev_start_xmit raw tracepoints.
    `program`: one already compiled with `defines()` (LIVE_SOURCES), else it compiles diagnose.bpf.c."""

    def __init__(self, namespaces: List[str], a: str, b: str, program=None,
                 tunnel_ports: Sequence[Tuple[str, int]] = (), open_tunnels: bool = True):
        self.namespaces = namespaces
        self.a, self.b = a, b
        self.tunnel_ports = list(tunnel_ports)   # (vxlan|geneve, UDP port) besides the parser's defaults
        self.open_tunnels = open_tunnels         # False: no tunnel on the path, the outer flow only
        self._stack = contextlib.ExitStack()
        self.program = program
        self.inodes: Dict[int, str] = {}

    def defines(self) -> Dict[str, str]:
        defines = {"FILTER_FAMILY": "6" if ":" in self.b else "4",
                   **tunnel_defines(self.tunnel_ports, self.open_tunnels)}
        for name, address in (("A", self.a), ("B", self.b)):
            for i, word in enumerate(filter_words(address)):
                defines[f"FILTER_{name}{i}"] = word
        return defines

    def __enter__(self) -> "HopCounter":
        import ctypes

        from bcc import BPF

        from ..attach import TracepointAttachment
        from ..program import BpfProgram

        known = Known()
        try:
            if self.program is None:
                self.program = self._stack.enter_context(BpfProgram("diagnose.bpf.c", self.defines()))
            table = self.program.table("hop_netns")
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
        """(netns label, ifindex, "rx"|"tx", ICMP or ICMPv6 type) -> packets."""
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
    except Exception as exc:
        log.debug("drop tracing unavailable: %s", first_line(exc))
        return None
    return TraceDropsSession


NEIGHBOUR_DISCOVERY = (135, 136)   # neighbour solicitation and advertisement: the ARP of IPv6


def relevant_drops(events: List[dict], a: Optional[str], b: str) -> List[Drop]:
    """The drops of this ping (ICMP/ICMPv6 between the two ends, and ARP/NDP) among the tracer's
    events, merged per place and reason; a tunnel packet counts when the flow inside it is the
    ping's (the Drop keeps its ports, `encap` and `inner`)."""
    merged: Dict[tuple, Drop] = {}
    for event in events:
        inner = event.get("inner") if event.get("encap") else None
        if not (_ping_flow(event, a, b) or (inner and _ping_flow(inner, a, b))):
            continue
        key = (event.get("netns"), event.get("ifname"), event.get("reason"), event.get("src"), event.get("dst"))
        if key in merged:
            merged[key].count += 1
            continue
        merged[key] = Drop.from_json(event if inner else {k: v for k, v in event.items() if k != "encap"})
        merged[key].count = 1
    return list(merged.values())


def _ping_flow(flow: dict, a: Optional[str], b: str) -> bool:
    """A flow (a drop event, or the flow inside a tunnel packet) of this ping: its echo, or address
    resolution of the ping's family only (an IPv4 ping's path also carries the namespaces' own IPv6
    chatter, router solicitations, which says nothing about the ping)."""
    if ":" in b:
        arp = flow.get("proto") == "icmpv6" and flow.get("icmp_type") in NEIGHBOUR_DISCOVERY
    else:
        arp = flow.get("family") == "arp"
    return arp or (flow.get("proto") in ("icmp", "icmpv6") and flow.get("src") in {a, b} and flow.get("dst") in {a, b})


def run_live(src_ns: str, target: str, count: int, timeout: float, payload: int, namespaces: List[str],
             tracer: Optional[DropTracer] = None, src: Optional[str] = None,
             ping_args: Sequence[str] = (), local: bool = True, dst: Optional[str] = None,
             tunnel_ports: Sequence[Tuple[str, int]] = (), open_tunnels: bool = True) -> LiveResult:
    """Ping `target` (as ping takes it: `fe80::1%eth0`) while counting per hop and tracing drops;
    counting and tracing are evidence, not requirements: when they cannot start, `notes` says why
    and the pings still run. `local`: the whole path is on this machine, so settled counts may end
    the pings early (Evidence). `dst`: the target's address (default: `target`). `tunnel_ports`: UDP
    tunnels on the path the BPF parser must open besides its default ports (tunnel_ports_of);
    `open_tunnels` False: no tunnel device on the path (has_tunnels), so the parser reads outer
    flows only, which the verifier loads in milliseconds instead of about a second."""
    result = LiveResult()
    dst = dst or target
    with contextlib.ExitStack() as stack:
        if tracer is TraceDropsSession:
            shared = _one_compile(stack, namespaces, src, dst, tunnel_ports, open_tunnels)
            tracer = functools.partial(TraceDropsSession, tunnel_ports=tunnel_ports, open_tunnels=open_tunnels)
        else:
            shared = None
        counter = _optional(stack, result, "per-hop ICMP counting",
                            lambda: HopCounter(namespaces, src, dst, shared, tunnel_ports, open_tunnels) if src else None)
        tracing = _optional(stack, result, "drop tracing",
                            lambda: (tracer(namespaces, shared) if shared else tracer(namespaces)) if tracer else None)
        before = read_counters(namespaces)
        evidence = Evidence(tracing, counter, src, dst, local)
        result.sent, result.received, out = ping(src_ns, target, count, timeout, payload, ping_args, evidence)
        if not result.sent and out.strip():
            last = out.strip().splitlines()[-1]
            result.notes.append(last if last.startswith("ping:") else f"ping: {last}")
        try:
            result.drops = evidence.drops + (list(tracing.events()) if tracing is not None else [])
            result.hop_counts = counter.counts() if counter is not None else None
        except Exception as exc:
            result.notes.append(f"reading the traces failed: {_short(exc)}")
        result.counters = _delta(before, read_counters(namespaces))
    return result


LIVE_SOURCES = ("trace_drops.bpf.c", "diagnose.bpf.c")   # compiled as one module


def _one_compile(stack: contextlib.ExitStack, namespaces: List[str], src: Optional[str], dst: str,
                 tunnel_ports: Sequence[Tuple[str, int]] = (), open_tunnels: bool = True):
    """Drop tracing and per-hop counting from one bcc compile (a compile is most of the time a
    verdict takes); None when that fails: each then compiles its own source."""
    if not src:
        return None
    from ..program import BpfProgram

    try:
        defines = {**TraceDropsSession(namespaces, tunnel_ports=tunnel_ports, open_tunnels=open_tunnels).tracer.defines(),
                   **HopCounter(namespaces, src, dst, tunnel_ports=tunnel_ports, open_tunnels=open_tunnels).defines()}
        return stack.enter_context(BpfProgram(LIVE_SOURCES, defines))
    except Exception as exc:
        log.debug("one compile for the live evidence failed, compiling each: %s", exc)
        return None


def has_tunnels(states: Iterable[NetnsState]) -> bool:
    """A tunnel device in these namespaces: the ping's packets may be encapsulated on the path."""
    return any(is_tunnel(link) for state in states for link in state.links)


def tunnel_ports_of(states: Iterable[NetnsState]) -> List[Tuple[str, int]]:
    """(vxlan|geneve, dstport) of the UDP tunnel devices in these namespaces that the BPF parser
    does not know by default, as many of each type as it takes (the rest are logged, not opened)."""
    found: List[Tuple[str, int]] = []
    for state in states:
        for link in state.links:
            pair = (link.kind, link.dstport)
            if link.kind in PARSER_EXTRA_PORTS and link.dstport and PARSER_UDP_PORTS.get(link.dstport) != link.kind \
                    and pair not in found:
                if sum(kind == link.kind for kind, _ in found) < PARSER_EXTRA_PORTS[link.kind]:
                    found.append(pair)
                else:
                    log.debug("%s port %s on %s/%s: the parser takes no more; its packets are not opened",
                              link.kind, link.dstport, state.name, link.ifname)
    return found


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
