"""The BPF tunnel parser (bpf/include/tunnel.h) run on a given packet through BPF_PROG_TEST_RUN
(bpf/tunnel_parse.bpf.c): what trace-drops and diagnose would see inside it. For tests, which
feed it tunnel types this kernel has no device for, and for the parsing-cost benchmark."""
from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

from .bpfsys import prog_test_run
from .drop_events import ENCAP_FORMAT, FLOW_FIELDS, FLOW_FORMAT, Encap, Flow, decode_encap, decode_flow, decode_inner
from .encap_types import tunnel_port_defines
from .program import BpfProgram

SOURCE, FUNCTION = "tunnel_parse.bpf.c", "bpftools_tunnel_parse"
BPF_PROG_TYPE_SCHED_CLS = 3
# Mirrors struct parsed in bpf/tunnel_parse.bpf.c: outer flow, encap, inner flow (no padding).
PARSED_LAYOUT = struct.Struct(f"<{FLOW_FORMAT}{ENCAP_FORMAT}{FLOW_FORMAT}")
FLOW_WIDTH = len(FLOW_FIELDS)


@dataclass(frozen=True)
class Parsed:
    outer: Flow
    encap: Optional[Encap]
    inner: Optional[Flow]


def decode_parsed(data: bytes) -> Parsed:
    fields = PARSED_LAYOUT.unpack_from(data)
    outer, encap, inner = fields[:FLOW_WIDTH], fields[FLOW_WIDTH:FLOW_WIDTH + 4], fields[FLOW_WIDTH + 4:]
    found = decode_encap(*encap)
    return Parsed(decode_flow(*outer), found, decode_inner(found, inner))


class TunnelParser(contextlib.AbstractContextManager):
    """`with TunnelParser() as p: p.parse(frame)`: the parser's view of an Ethernet frame.
    `copy_only`: the program copies the window and parses nothing (a benchmark's baseline)."""

    def __init__(self, udp_ports: Iterable[Tuple[str, int]] = (), copy_only: bool = False):
        self.defines: Dict[str, object] = dict(tunnel_port_defines(udp_ports), COPY_ONLY=copy_only)
        self._stack = contextlib.ExitStack()
        self.program: Optional[BpfProgram] = None
        self.fd = -1

    def __enter__(self) -> "TunnelParser":
        self.program = self._stack.enter_context(BpfProgram(SOURCE, self.defines))
        self.fd = self.program.load(FUNCTION, BPF_PROG_TYPE_SCHED_CLS)
        return self

    def parse(self, frame: bytes) -> Parsed:
        prog_test_run(self.fd, frame)
        table = self.program.table("parsed_packets")
        return decode_parsed(bytes(table[table.Key(0)]))

    def run_ns(self, frame: bytes, repeat: int) -> int:
        """The kernel's average run time of the parser on `frame`, in ns, over `repeat` runs."""
        return prog_test_run(self.fd, frame, repeat=repeat).duration_ns

    def __exit__(self, *exc) -> None:
        self._stack.close()
