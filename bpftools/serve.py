"""`bpftools serve`: attach what the config asks for, export it over HTTP, follow interfaces.

Configured interfaces that appear later are attached when they do; when one disappears its
capability is closed and its series go away (checked every `watch_interval` seconds).
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Dict, Optional, Tuple

from prometheus_client import CollectorRegistry, start_http_server

from .errors import BpftoolsError
from .exporter_sources import DecapSource, DropsSource, EncapSource, NetnsInfoSource
from .metrics import BpftoolsCollector
from .netlink import Interface, list_interfaces, netns_label, select_netns
from .serve_config import ServeConfig, listen_address, split_interface

InterfaceKey = Tuple[str, Optional[str], str]  # (capability, netns selector, ifname)
GC_INTERVAL = 10.0  # seconds between sweeps of drop counts of vanished namespaces/interfaces


def _log(message: str) -> None:
    sys.stderr.write(f"bpftools serve: {message}\n")
    sys.stderr.flush()


class Exporter(contextlib.AbstractContextManager):
    def __init__(self, config: ServeConfig):
        self.config = config
        self.collector = BpftoolsCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._stack = contextlib.ExitStack()
        self._per_iface: Dict[InterfaceKey, Tuple[Tuple[int, int], contextlib.ExitStack]] = {}  # (inode, ifindex)
        self._server = None
        self._drops: Optional[DropsSource] = None

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Exporter":
        with self._stack as stack:
            self.collector.set_source("netns_info", NetnsInfoSource())
            if self.config.drops:
                self._start_drops(stack)
            stack.callback(self._close_interfaces)
            self.reconcile()
            host, port = listen_address(self.config.listen)
            try:
                self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
            except OSError as exc:
                raise BpftoolsError(f"cannot listen on {self.config.listen}: {exc.strerror}") from None
            stack.callback(self._server.shutdown)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def run(self) -> None:
        """Follow interfaces until Ctrl-C/SIGTERM; now and then forget the counts of the dead."""
        last_gc = time.monotonic()
        try:
            while True:
                time.sleep(self.config.watch_interval)
                self.reconcile()
                if self._drops is not None and time.monotonic() - last_gc >= GC_INTERVAL:
                    last_gc = time.monotonic()
                    self._drops.forget_gone()
        except KeyboardInterrupt:
            pass

    # --- drops (one tracer for the whole scope) ---------------------------------------------
    def _start_drops(self, stack: contextlib.ExitStack) -> None:
        from .kernel.drop_reasons import kfree_skb_format
        from .drop_events import Names, bcc_ksym
        from .trace_drops import DropTracer, build_filter

        fmt = kfree_skb_format()
        netns = self.config.netns if self.config.all_netns else select_netns(self.config.netns)
        flt = build_filter([], netns, self.config.all_netns, fmt=fmt)
        tracer = stack.enter_context(DropTracer(flt, summary=True, fmt=fmt))
        self._drops = DropsSource(tracer, lambda: Names(fmt, bcc_ksym))
        self.collector.set_source("drops", self._drops)
        stack.callback(self.collector.remove_source, "drops")

    # --- per-interface capabilities ---------------------------------------------------------
    def wanted(self) -> Dict[InterfaceKey, Callable[[Interface, contextlib.ExitStack], object]]:
        wanted = {}
        for spec in self.config.encap:
            netns, ifname = split_interface(spec, self.config.netns)
            wanted[("encap", netns, ifname)] = self._start_encap
        for spec in self.config.decap:
            netns, ifname = split_interface(spec, self.config.netns)
            wanted[("decap", netns, ifname)] = self._start_decap
        return wanted

    def reconcile(self) -> None:
        """Attach to configured interfaces that exist now; drop the ones that went away."""
        present: Dict[Tuple[Optional[str], str], Interface] = {}
        wanted = self.wanted()
        for selector in {ns for _, ns, _ in wanted}:
            try:  # re-resolved every round: a restarted container is a new namespace
                handle = select_netns(selector, hold=False)
                present.update({(selector, i.ifname): i for i in list_interfaces(handle)})
            except BpftoolsError:
                pass  # namespace not there (yet)
        for key, start in wanted.items():
            iface = present.get(key[1:])
            current = self._per_iface.get(key)
            if current and (iface is None or (iface.netns_inode, iface.ifindex) != current[0]):
                self._stop(key, "gone" if iface is None else "replaced")
                current = None
            if iface is not None and current is None:
                self._start(key, iface, start)

    def _start(self, key: InterfaceKey, iface: Interface, start) -> None:
        stack = contextlib.ExitStack()
        try:
            source = start(iface, stack)
        except KeyboardInterrupt:
            stack.close()
            raise
        except Exception as exc:  # e.g. the interface vanished while we compiled: retried next round
            with contextlib.suppress(Exception):
                stack.close()
            _log(f"cannot start {key[0]} on {iface.describe()}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            return
        self.collector.set_source("/".join(map(str, key)), source)
        self._per_iface[key] = ((iface.netns_inode, iface.ifindex), stack)
        _log(f"{key[0]} attached to {iface.describe()}")

    def _stop(self, key: InterfaceKey, why: str) -> None:
        self.collector.remove_source("/".join(map(str, key)))
        _ifindex, stack = self._per_iface.pop(key)
        with contextlib.suppress(Exception):  # the interface is gone: detaching may find nothing
            stack.close()
        _log(f"{key[0]} on {key[2]} stopped: interface {why}")

    def _close_interfaces(self) -> None:
        for key in list(self._per_iface):
            self.collector.remove_source("/".join(map(str, key)))
            with contextlib.suppress(Exception):
                self._per_iface.pop(key)[1].close()

    def _start_encap(self, iface: Interface, stack: contextlib.ExitStack):
        from .encap_stats import EncapStats, parse_udp_port, udp_port_table

        ports = udp_port_table(parse_udp_port(spec) for spec in self.config.udp_port)
        stats = stack.enter_context(EncapStats([iface], self.config.ingress_hook, ports))
        return EncapSource(stats)

    def _start_decap(self, iface: Interface, stack: contextlib.ExitStack):
        from .xdp_decap import XdpDecap, config_for, parse_addresses, parse_networks

        allow = parse_networks(self.config.allow_remote, self.config.allow_any)
        local = parse_addresses(self.config.local)
        config, _ = config_for(iface, allow, local, None, False, None)
        decap = stack.enter_context(XdpDecap(iface, config))
        return DecapSource(decap, netns_label(iface.netns_inode))
