"""Prometheus metrics of `bpftools serve`: one table of what we export, and a collector
that reads BPF maps at scrape time (no per-packet work in Python).

Sources (one per attached capability) yield `Sample`s; the collector groups them into
metric families, adds self-metrics, and counts a failing source as a scrape error
instead of failing the scrape.
"""
from __future__ import annotations

import threading
from typing import Dict, Iterable, List, NamedTuple, Protocol, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import __version__

# name -> (type, label names, help). Dashboards and alert rules may only use these (a test checks).
METRICS: Dict[str, Tuple[str, Tuple[str, ...], str]] = {
    "bpftools_drops_total": ("counter", ("netns", "device", "reason"),
                             "Packets the kernel dropped (skb:kfree_skb), by the running kernel's drop reason."),
    "bpftools_encap_packets_total": ("counter", ("netns", "device", "direction", "encap"),
                                     "Packets seen by the encapsulation classifier, by tunnel type."),
    "bpftools_encap_bytes_total": ("counter", ("netns", "device", "direction", "encap"),
                                   "Bytes seen by the encapsulation classifier, by tunnel type."),
    "bpftools_xdp_decap_packets_total": ("counter", ("netns", "device", "result"),
                                         "Packets handled by the XDP ipip decapsulator, by result."),
    "bpftools_build_info": ("gauge", ("version",), "bpftools version; always 1."),
    "bpftools_netns_info": ("gauge", ("netns", "container", "pod", "k8s_namespace", "runtime"),
                            "One per live network namespace, always 1: what its netns label names "
                            "(Docker container, Kubernetes pod); join on netns."),
    "bpftools_bpf_program_attached": ("gauge", ("netns", "program", "hook", "device"),
                                      "1 while the BPF program is attached to the device, else 0."),
    "bpftools_events_lost_total": ("counter", (), "Drops bpftools could not record: the per-event buffer "
                                   "or the in-kernel count map was full."),
    "bpftools_bpf_map_entries": ("gauge", ("map", "netns", "device"), "Entries currently in a bounded BPF map."),
    "bpftools_bpf_map_max_entries": ("gauge", ("map", "netns", "device"), "Capacity of a bounded BPF map."),
    "bpftools_scrape_errors_total": ("counter", (), "Scrapes in which reading a source failed."),
}


class Sample(NamedTuple):
    metric: str
    labels: Tuple[str, ...]  # values, in the order of METRICS[metric][1]
    value: float


class MetricsSource(Protocol):
    name: str

    def samples(self) -> Iterable[Sample]:
        ...


def _family(name: str):
    kind, labels, help_text = METRICS[name]
    if kind == "counter":
        return CounterMetricFamily(name[: -len("_total")], help_text, labels=list(labels))
    return GaugeMetricFamily(name, help_text, labels=list(labels))


class BpftoolsCollector:
    """A prometheus-client custom collector; safe under concurrent scrapes (one lock)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sources: Dict[str, MetricsSource] = {}
        self.scrape_errors = 0
        self.events_lost_base = 0

    def set_source(self, key: str, source: MetricsSource) -> None:
        with self._lock:
            self._sources[key] = source

    def remove_source(self, key: str) -> None:
        with self._lock:
            self._sources.pop(key, None)

    def sources(self) -> List[str]:
        with self._lock:
            return list(self._sources)

    def collect(self):
        with self._lock:
            values: Dict[str, Dict[Tuple[str, ...], float]] = {name: {} for name in METRICS}
            values["bpftools_events_lost_total"][()] = 0.0
            for source in self._sources.values():
                try:
                    for sample in source.samples():
                        bucket = values[sample.metric]
                        if METRICS[sample.metric][0] == "counter":  # e.g. one drop tracer, many sources
                            bucket[sample.labels] = bucket.get(sample.labels, 0.0) + sample.value
                        else:  # a state: never add two up
                            bucket[sample.labels] = max(bucket.get(sample.labels, sample.value), sample.value)
                except Exception:  # a broken source must not break the scrape
                    self.scrape_errors += 1
            values["bpftools_build_info"][(__version__,)] = 1.0
            values["bpftools_scrape_errors_total"][()] = float(self.scrape_errors)
        for name, series in values.items():
            family = _family(name)
            for labels, value in sorted(series.items()):
                family.add_metric(list(labels), value)
            yield family
