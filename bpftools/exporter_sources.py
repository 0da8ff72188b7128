"""Metric sources for `bpftools serve`: each wraps one attached capability and turns its
BPF maps into `Sample`s at scrape time. The capabilities own loading and attaching;
these adapters only read."""
from __future__ import annotations

import contextlib
import logging
from typing import Dict, Iterable, Optional, Set

from . import namespaces
from .errors import first_line
from .metrics import Sample
from .netlink import list_interfaces, live_netns_inodes, netns_label

log = logging.getLogger(__name__)


def _ifindexes(inode: int) -> Optional[Set[int]]:
    """Interfaces of a namespace we can enter; None for the others."""
    handle = None if inode == namespaces.own_inode() else namespaces.find_inode(inode)
    if handle is None and inode != namespaces.own_inode():
        return None
    try:
        return {iface.ifindex for iface in list_interfaces(handle)}
    except Exception as exc:
        log.debug("listing the interfaces of %s failed: %s", inode, first_line(exc))
        return None


ANY = "any"  # label value for what is not tied to one namespace or device (the tracepoint)


def _attached_samples(attachments, program: str) -> Iterable[Sample]:
    for attachment in attachments:
        iface = getattr(attachment, "iface", None)
        hook = getattr(attachment, "direction", None)
        hook = f"tc/{hook}" if hook else ("xdp" if iface is not None else "tracepoint")
        netns = netns_label(iface.netns_inode) if iface is not None else ANY
        device = iface.ifname if iface is not None else ANY
        yield Sample("bpftools_bpf_program_attached", (netns, program_name(attachment, program), hook, device),
                     1.0 if attachment.still_attached() else 0.0)


def program_name(attachment, default: str) -> str:
    return getattr(attachment, "prog_name", None) or default


def _map_samples(name: str, table, netns: str = ANY, device: str = ANY) -> Iterable[Sample]:
    entries = sum(1 for _ in table.keys())
    yield Sample("bpftools_bpf_map_entries", (name, netns, device), float(entries))
    yield Sample("bpftools_bpf_map_max_entries", (name, netns, device), float(table.max_entries))


class DropsSource:
    """bpftools_drops_total from trace-drops' in-kernel summary counters."""

    name = "drops"

    def __init__(self, tracer, names_factory):
        self.tracer, self.names_factory = tracer, names_factory
        self.names = names_factory()

    def forget_gone(self) -> int:
        """Delete the counts of namespaces and interfaces that no longer exist, so their series
        go away and the bounded map does not fill up with the dead; how many were deleted."""
        table = self.tracer.program.table("drop_counts")
        live = live_netns_inodes()
        present: Dict[int, Optional[Set[int]]] = {}  # netns inode -> ifindexes (None: cannot look)
        gone = []
        for key in list(table.keys()):
            if key.netns not in live:
                gone.append(key)
                continue
            if key.netns not in present:
                present[key.netns] = _ifindexes(key.netns)
            ifindexes = present[key.netns]
            if key.ifindex and ifindexes is not None and key.ifindex not in ifindexes:
                gone.append(key)
        for key in gone:
            with contextlib.suppress(KeyError):
                del table[key]
        if gone:
            self.names = self.names_factory()  # an ifindex may come back as another device
        return len(gone)

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
        yield from _map_samples("decap_allow", self.decap.program.table("allow"), self.netns, self.decap.iface.ifname)



class NetnsInfoSource:
    """bpftools_netns_info{netns, container_name, k8s_pod, k8s_namespace, k8s_pod_uid, runtime} = 1
    per live namespace (the `_info` convention: join on `netns` to get container and pod names).
    No label is called `pod`, `container` or `namespace`: the Prometheus Operator gives every
    series of a target those labels (the bpftools pod's own), and ours would become `exported_…`."""

    name = "netns_info"

    def samples(self) -> Iterable[Sample]:
        for ns in namespaces.discover():
            yield Sample("bpftools_netns_info", (ns.label, ns.container or "", ns.pod or "", ns.k8s_namespace or "",
                                                 ns.pod_uid or "", ns.runtime or ""), 1.0)
