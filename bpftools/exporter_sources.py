"""Metric sources for `bpftools serve`: each wraps one attached capability and turns its
BPF maps into `Sample`s at scrape time. The capabilities own loading and attaching;
these adapters only read."""
from __future__ import annotations

from typing import Iterable

from .metrics import Sample


def _attached_samples(attachments, program: str) -> Iterable[Sample]:
    for attachment in attachments:
        iface = getattr(attachment, "iface", None)
        hook = getattr(attachment, "direction", None)
        hook = f"tc/{hook}" if hook else ("xdp" if iface is not None else "tracepoint")
        device = iface.ifname if iface is not None else "any"  # a tracepoint sees every device
        yield Sample("bpftools_bpf_program_attached", (program_name(attachment, program), hook, device),
                     1.0 if attachment.still_attached() else 0.0)


def program_name(attachment, default: str) -> str:
    return getattr(attachment, "prog_name", None) or default


def _map_samples(name: str, table) -> Iterable[Sample]:
    entries = sum(1 for _ in table.keys())
    yield Sample("bpftools_bpf_map_entries", (name,), float(entries))
    yield Sample("bpftools_bpf_map_max_entries", (name,), float(table.max_entries))


class DropsSource:
    """bpftools_drops_total from trace-drops' in-kernel summary counters."""

    name = "drops"

    def __init__(self, tracer, names):
        self.tracer, self.names = tracer, names

    def samples(self) -> Iterable[Sample]:
        from .drop_events import summarize

        for row in summarize(self.tracer.counts(), self.names):
            yield Sample("bpftools_drops_total", (row.netns, row.ifname or "unknown", row.reason), float(row.count))
        yield Sample("bpftools_events_lost_total", (), float(self.tracer.events_lost()))
        yield from _attached_samples([self.tracer.attachment], "bpftools_drops")
        yield from _map_samples("drop_counts", self.tracer.program.table("drop_counts"))


class EncapSource:
    """bpftools_encap_{packets,bytes}_total for the interfaces of one EncapStats."""

    name = "encap"

    def __init__(self, stats):
        self.stats = stats

    def samples(self) -> Iterable[Sample]:
        from .encap_stats import read_counters

        netns = self.stats.netns
        for row in read_counters(self.stats.program, [i.ifname for i in self.stats.ifaces]):
            labels = (netns, row.ifname, row.direction, row.encap)
            yield Sample("bpftools_encap_packets_total", labels, float(row.packets))
            yield Sample("bpftools_encap_bytes_total", labels, float(row.bytes))
        yield from _attached_samples(self.stats.attachments, "bpftools_encap")


class DecapSource:
    """bpftools_xdp_decap_packets_total{result} for one XdpDecap."""

    name = "decap"

    def __init__(self, decap, netns: str):
        self.decap, self.netns = decap, netns

    def samples(self) -> Iterable[Sample]:
        for result, value in self.decap.counters().items():
            yield Sample("bpftools_xdp_decap_packets_total", (self.netns, self.decap.iface.ifname, result), float(value))
        yield from _attached_samples([self.decap.attachment], "bpftools_xdp_decap")
        yield from _map_samples("decap_allow", self.decap.program.table("allow"))

