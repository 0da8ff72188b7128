"""encap-stats: count encapsulated traffic per (interface, direction, tunnel type).

bpf/encap_stats.bpf.c classifies every packet seen by tc (ingress, egress) or XDP (ingress)
into the closed set of tunnel types of bpf/include/encap.h and bumps per-CPU counters;
this module builds its configuration, attaches it, and sums and decodes the counters.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .addresses import format_address
from .attach import TcAttachment, XdpAttachment
from .encap_types import ENCAP_TYPES
from .errors import BpftoolsError
from .netlink import Interface, netns_label
from .program import BpfProgram
from .rates import Rate, RateMeter

DIRECTIONS = ("ingress", "egress")  # enum encap_direction
MAX_IFACES = 8  # ENCAP_MAX_IFACES
UDP_PORT_TYPE_BITS, UDP_PORTS_PER_WORD = 4, 16  # the udp_ports map packs a type per port into u64 words
UDP_TYPES = ("vxlan", "geneve", "fou", "gue")  # types recognised by UDP destination port
DEFAULT_UDP_PORTS = {4789: "vxlan", 6081: "geneve"}  # IANA ports; fou/gue have none
INGRESS_HOOKS = ("tc", "xdp")
TOP_PAIRS_SIZE = 4096  # LRU entries behind --top: bounded whatever the traffic
ARPHRD_LOOPBACK = 772  # lo has an (all-zero) Ethernet header too

SOURCE = "encap_stats.bpf.c"
PROG_XDP, PROG_TC_INGRESS, PROG_TC_EGRESS = "bpftools_ec_xdp", "bpftools_ec_in", "bpftools_ec_eg"


def parse_udp_port(spec: str) -> Tuple[str, int]:
    """`TYPE=PORT` from --udp-port, e.g. "vxlan=8472" -> ("vxlan", 8472)."""
    name, sep, port = spec.partition("=")
    name = name.strip().lower()
    if not sep or name not in UDP_TYPES:
        raise BpftoolsError(f"--udp-port {spec!r}: expected TYPE=PORT with TYPE one of {', '.join(UDP_TYPES)}")
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise BpftoolsError(f"--udp-port {spec!r}: port must be a number from 1 to 65535")
    return name, number


def udp_port_table(extra: Iterable[Tuple[str, int]] = ()) -> Dict[int, str]:
    """UDP destination port -> type: the defaults, then the user's ports (which may override a default)."""
    table = dict(DEFAULT_UDP_PORTS)
    given: Dict[int, str] = {}
    for name, port in extra:
        if given.get(port, name) != name:
            raise BpftoolsError(f"UDP port {port} given for both {given[port]} and {name}")
        given[port] = name
    table.update(given)
    return table


def udp_port_words(ports: Dict[int, str]) -> Dict[int, int]:
    """The udp_ports map's non-zero words: word index -> 16 packed 4-bit types (port % 16 picks the nibble)."""
    words: Dict[int, int] = {}
    for port, name in ports.items():
        word, nibble = divmod(port, UDP_PORTS_PER_WORD)
        words[word] = words.get(word, 0) | ENCAP_TYPES.index(name) << (nibble * UDP_PORT_TYPE_BITS)
    return words


def counter_index(slot: int, direction: int, encap: int) -> int:
    """Index into encap_counters, as the C computes it."""
    return (slot * len(DIRECTIONS) + direction) * len(ENCAP_TYPES) + encap


def counter_key(index: int) -> Tuple[int, int, int]:
    """(slot, direction, type) of an encap_counters index."""
    slot_dir, encap = divmod(index, len(ENCAP_TYPES))
    slot, direction = divmod(slot_dir, len(DIRECTIONS))
    return slot, direction, encap


def uses_ethernet_header(iface: Interface) -> bool:
    return iface.has_ethernet_header or iface.link_type == ARPHRD_LOOPBACK


def classifier_defines(ifindexes: Sequence[int], l3: Sequence[bool], top: bool = False) -> Dict[str, object]:
    """-D defines for bpf/encap_stats.bpf.c: the slot table, which slots start at the IP header, --top."""
    if not 1 <= len(ifindexes) <= MAX_IFACES:
        raise BpftoolsError(f"encap-stats counts 1 to {MAX_IFACES} interfaces at a time, not {len(ifindexes)}")
    defines: Dict[str, object] = {f"IFINDEX_{slot}": ifindex for slot, ifindex in enumerate(ifindexes)}
    defines["L3_SLOTS"] = sum(1 << slot for slot, flag in enumerate(l3) if flag)
    if top:
        defines["TOP_PAIRS"] = TOP_PAIRS_SIZE
    return defines


@dataclass(frozen=True)
class CounterRow:
    ifname: str
    direction: str
    encap: str
    packets: int
    bytes: int


@dataclass(frozen=True)
class PairRow:
    encap: str
    src: str
    dst: str
    packets: int
    bytes: int


def busiest_pairs(pairs: Iterable[PairRow], top: int) -> List[PairRow]:
    """The `top` busiest pairs of each type (by packets, then bytes), types in ENCAP_TYPES order."""
    by_type: Dict[str, List[PairRow]] = {}
    for pair in pairs:
        by_type.setdefault(pair.encap, []).append(pair)
    result = []
    for name in ENCAP_TYPES:
        ranked = sorted(by_type.get(name, []), key=lambda p: (-p.packets, -p.bytes, p.src, p.dst))
        result.extend(ranked[:top])
    return result


def _rate_json(rate: Rate) -> dict:
    return {"packets_per_second": round(rate[0], 3), "bits_per_second": round(rate[1], 3)}


def counter_json(row: CounterRow, ts: float, netns: str, netns_inode: Optional[int] = None,
                 rate: Rate = (0.0, 0.0)) -> dict:
    return {"type": "encap", "ts": ts, "netns": netns, "netns_inode": netns_inode, "ifname": row.ifname, "direction": row.direction,
            "encap": row.encap, "packets": row.packets, "bytes": row.bytes, **_rate_json(rate)}


def pair_json(pair: PairRow, rank: int, ts: float, netns: str, netns_inode: Optional[int] = None,
              rate: Rate = (0.0, 0.0)) -> dict:
    return {"type": "top", "ts": ts, "netns": netns, "netns_inode": netns_inode, "encap": pair.encap, "rank": rank, "src": pair.src,
            "dst": pair.dst, "packets": pair.packets, "bytes": pair.bytes, **_rate_json(rate)}


class EncapStats(contextlib.AbstractContextManager):
    """`with EncapStats(ifaces) as stats:` compiles, attaches, and `stats.snapshot()` reads."""

    def __init__(self, ifaces: Sequence[Interface], ingress_hook: str = "tc",
                 udp_ports: Optional[Dict[int, str]] = None, top: int = 0):
        if ingress_hook not in INGRESS_HOOKS:
            raise BpftoolsError(f"unknown ingress hook {ingress_hook!r} (tc or xdp)")
        if len({(i.netns_inode, i.ifindex) for i in ifaces}) != len(ifaces):
            raise BpftoolsError("an interface is named twice")
        self.ifaces = list(ifaces)
        self.ingress_hook = ingress_hook
        self.udp_ports = dict(DEFAULT_UDP_PORTS if udp_ports is None else udp_ports)
        self.top = top
        self.program: Optional[BpfProgram] = None
        self.attachments: list = []
        self._stack: Optional[contextlib.ExitStack] = None
        self.rates = RateMeter(time.time())

    @property
    def netns(self) -> str:
        return netns_label(self.ifaces[0].netns_inode)

    def __enter__(self) -> "EncapStats":
        from bcc import BPF  # lazily: unit tests and --help run without bcc

        with contextlib.ExitStack() as stack:
            self.program = stack.enter_context(load_classifier(
                [i.ifindex for i in self.ifaces], [not uses_ethernet_header(i) for i in self.ifaces],
                self.udp_ports, self.top > 0))
            egress_fd = self.program.load(PROG_TC_EGRESS, BPF.SCHED_CLS)
            if self.ingress_hook == "xdp":
                xdp_fd = self.program.load(PROG_XDP, BPF.XDP)
                ingress = [stack.enter_context(XdpAttachment(xdp_fd, iface)) for iface in self.ifaces]
            else:
                ingress = self._attach_tc(stack, self.program.load(PROG_TC_INGRESS, BPF.SCHED_CLS), "ingress",
                                          PROG_TC_INGRESS)
            egress = self._attach_tc(stack, egress_fd, "egress", PROG_TC_EGRESS)
            self.attachments = ingress + egress
            self._stack = stack.pop_all()
        self.rates = RateMeter(time.time())  # counting starts now
        return self

    def _attach_tc(self, stack, fd: int, direction: str, name: str) -> list:
        return [stack.enter_context(TcAttachment(fd, iface, direction, name)) for iface in self.ifaces]

    def __exit__(self, *exc) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def snapshot(self, whole_run: bool = False) -> List[dict]:
        """JSON objects for one report: counter rows, then top rows, with their rates since the
        previous report (`whole_run`: averaged since counting started, for the final totals)."""
        now = time.time()
        ts = round(now, 3)
        self.rates.report(now)
        since = self.rates.start if whole_run else None
        netns = self.netns
        inode = self.ifaces[0].netns_inode
        result = [counter_json(row, ts, netns, inode, self.rates.rate((row.ifname, row.direction, row.encap), row.packets, row.bytes, since))
                  for row in read_counters(self.program, [i.ifname for i in self.ifaces])]
        pairs = read_pairs(self.program) if self.top else []
        rates = {pair: self.rates.rate((pair.encap, pair.src, pair.dst), pair.packets, pair.bytes, since) for pair in pairs}
        ranks: Dict[str, int] = {}
        for pair in busiest_pairs(pairs, self.top):
            ranks[pair.encap] = ranks.get(pair.encap, 0) + 1
            result.append(pair_json(pair, ranks[pair.encap], ts, netns, inode, rates[pair]))
        return result


def load_classifier(ifindexes: Sequence[int], l3: Sequence[bool], udp_ports: Dict[int, str],
                    top: bool = False) -> BpfProgram:
    """bpf/encap_stats.bpf.c compiled for these interfaces, its UDP port map filled (use it with `with`)."""
    program = BpfProgram(SOURCE, classifier_defines(ifindexes, l3, top)).compile()
    try:
        table = program.table("udp_ports")
        for word, types in udp_port_words(udp_ports).items():
            table[table.Key(word)] = table.Leaf(types)
    except BaseException:
        program.__exit__(None, None, None)
        raise
    return program


def read_counters(program: BpfProgram, ifnames: Sequence[str]) -> List[CounterRow]:
    """Totals since start, one row per (interface slot, direction, type) with packets, summed over CPUs."""
    table = program.table("encap_counters")
    rows = []
    for slot, ifname in enumerate(ifnames):
        for direction, direction_name in enumerate(DIRECTIONS):
            for encap, encap_name in enumerate(ENCAP_TYPES):
                per_cpu = table[table.Key(counter_index(slot, direction, encap))]
                packets = sum(v.packets for v in per_cpu)
                if packets:
                    rows.append(CounterRow(ifname, direction_name, encap_name, packets, sum(v.bytes for v in per_cpu)))
    return rows


def read_pairs(program: BpfProgram) -> List[PairRow]:
    """Every outer endpoint pair of the LRU map (programs compiled with top); busiest_pairs() ranks them."""
    rows = []
    for key, value in program.table("top_pairs").items():
        if key.type < len(ENCAP_TYPES) and key.family in (4, 6):
            rows.append(PairRow(ENCAP_TYPES[key.type], format_address(key.family, bytes(key.src)),
                                format_address(key.family, bytes(key.dst)), value.packets, value.bytes))
    return rows
