"""Prometheus metrics of `bpftools serve`: one table of what we export, and a collector
that reads BPF maps at scrape time (no per-packet work in Python).

Sources (one per attached capability) yield `Sample`s; the collector groups them into
metric families, adds self-metrics, and counts a failing source as a scrape error
instead of failing the scrape.
"""
from __future__ import annotations

import logging
import threading
from typing import Dict, Iterable, List, NamedTuple, Protocol, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .build import build_info
from .text import shown

log = logging.getLogger(__name__)

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
    "bpftools_build_info": ("gauge", ("version", "revision", "bcc_version", "kernel_release"),
                            "What runs: bpftools version and source revision, bcc version, kernel release; always 1."),
    "bpftools_netns_info": ("gauge", ("netns", "container_name", "k8s_pod", "k8s_namespace", "k8s_pod_uid", "runtime"),
                            "One per live network namespace, always 1: what its netns label names "
                            "(Docker container, Kubernetes pod); join on netns."),
    "bpftools_bpf_program_attached": ("gauge", ("netns", "program", "hook", "device"),
                                      "1 while the BPF program is attached to the device, else 0."),
    "bpftools_events_lost_total": ("counter", (), "Drops bpftools could not record: the per-event buffer "
                                   "or the in-kernel count map was full."),
    "bpftools_bpf_map_entries": ("gauge", ("map", "netns", "device"), "Entries currently in a bounded BPF map."),
    "bpftools_bpf_map_max_entries": ("gauge", ("map", "netns", "device"), "Capacity of a bounded BPF map."),
    "bpftools_scrape_errors_total": ("counter", ("source",), "Scrapes in which reading a source failed, by source "
                                     "(drops, or encap:/decap: and the interface)."),
    "bpftools_config_reloads_total": ("counter", ("result",), "Reloads of the config file (SIGHUP), by result "
                                      "(success, failure: the running config stays)."),
    "bpftools_config_last_reload_successful": ("gauge", (), "0 if the last reload of the config file failed, else 1."),
}

# prometheus-client's ProcessCollector and PlatformCollector on the same registry: the
# exporter's own CPU, memory and file descriptors, and the Python it runs on.
RUNTIME_METRICS = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                   "process_open_fds", "process_max_fds", "process_start_time_seconds", "python_info")


def build_info_labels() -> Tuple[str, ...]:
    info = build_info()
    return tuple(info[name] for name in METRICS["bpftools_build_info"][1])


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
        # source key -> failed reads; kept after a source goes (a counter must not go back)
        self.scrape_errors: Dict[str, int] = {}
        self.reloads = {"success": 0, "failure": 0}
        self.last_reload_ok = True

    def set_source(self, key: str, source: MetricsSource) -> None:
        with self._lock:
            self._sources[key] = source
            self.scrape_errors.setdefault(key, 0)  # 0 from the start: rate() and increase() see the first error

    def record_reload(self, ok: bool) -> None:
        with self._lock:
            self.reloads["success" if ok else "failure"] += 1
            self.last_reload_ok = ok

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
            for key, source in self._sources.items():
                try:
                    for sample in source.samples():
                        bucket = values[sample.metric]
                        if METRICS[sample.metric][0] == "counter":  # e.g. one drop tracer, many sources
                            bucket[sample.labels] = bucket.get(sample.labels, 0.0) + sample.value
                        else:  # a state: never add two up
                            bucket[sample.labels] = max(bucket.get(sample.labels, sample.value), sample.value)
                except Exception as exc:  # a broken source must not break the scrape: count it, say which
                    self.scrape_errors[key] += 1
                    log.warning("reading %s failed: %s", key, str(exc) or type(exc).__name__,
                                exc_info=log.isEnabledFor(logging.DEBUG))
            values["bpftools_build_info"][build_info_labels()] = 1.0
            for key, errors in self.scrape_errors.items():
                values["bpftools_scrape_errors_total"][(key,)] = float(errors)
            for result, count in self.reloads.items():
                values["bpftools_config_reloads_total"][(result,)] = float(count)
            values["bpftools_config_last_reload_successful"][()] = 1.0 if self.last_reload_ok else 0.0
        for name, series in values.items():
            family = _family(name)
            for labels, value in sorted(series.items()):
                # prometheus_client escapes \ " and newlines; a tenant's ESC or non-UTF-8 byte is ours to escape
                family.add_metric([shown(label) for label in labels], value)
            yield family
