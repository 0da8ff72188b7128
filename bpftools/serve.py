"""`bpftools serve`: attach what the config asks for, export it over HTTP, follow interfaces.

Configured interfaces that appear later are attached when they do; when one disappears its
capability is closed and its series go away (checked every `watch_interval` seconds).
SIGHUP re-reads the config file (and the web config file) and attaches/detaches only what
changed. `/-/ready` answers 200 once everything the config names is attached (web.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from .errors import BpftoolsError, first_line, survive
from .exporter_sources import DecapSource, DropsSource, EncapSource, NetnsInfoSource
from .metrics import BpftoolsCollector
from .netlink import Interface, list_interfaces, netns_label, select_netns
from .runloop import Every, RunLoop
from .serve_config import ServeConfig, listen_address, split_interface
from .web import Readiness, ServerState, WebServer, start_server
from .web_config import WebConfig, load_web_config

log = logging.getLogger(__name__)

InterfaceKey = Tuple[str, Optional[str], str]  # (capability, netns selector, ifname)
GC_INTERVAL = 10.0  # seconds between sweeps of drop counts of vanished namespaces/interfaces
DROPS = "drops"
# Settings each capability is started with: when one changes on reload, that capability restarts.
DROPS_SETTINGS = ("drops", "netns", "all_netns")
CAPABILITY_SETTINGS = {"encap": ("ingress_hook", "udp_port"), "decap": ("allow_remote", "allow_any", "local")}


def source_key(key: InterfaceKey) -> str:
    """The `source` label of scrape errors: `encap:ns1/veth1`, `decap:eth0`."""
    capability, netns, ifname = key
    return f"{capability}:{netns}/{ifname}" if netns else f"{capability}:{ifname}"


def _file_signature(path: Optional[str]) -> Optional[Tuple[int, int, int, int]]:
    """What changes when a file is rewritten or replaced (Kubernetes swaps a ConfigMap's
    mounted files through a symlink); None while it cannot be read."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _changed(old: ServeConfig, new: ServeConfig, names) -> bool:
    return any(getattr(old, name) != getattr(new, name) for name in names)


class Exporter(contextlib.AbstractContextManager):
    def __init__(self, config: ServeConfig, reload_config: Optional[Callable[[], ServeConfig]] = None,
                 config_file: Optional[str] = None):
        self.config = config
        self.reload_config = reload_config  # None: no config file, SIGHUP has nothing to re-read
        self.config_file = config_file  # watched: a changed file (a ConfigMap update) reloads like SIGHUP
        self.web: WebConfig = load_web_config(config.web_config_file)
        self._files_seen = self._file_signatures()
        self.collector = BpftoolsCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._stack = contextlib.ExitStack()
        self._per_iface: Dict[InterfaceKey, Tuple[Tuple[int, int], contextlib.ExitStack]] = {}  # (inode, ifindex)
        self._server: Optional[WebServer] = None
        self._readiness: Readiness = (False, "starting")
        self._drops: Optional[DropsSource] = None
        self._drops_stack: Optional[contextlib.ExitStack] = None
        self._reload_pending = False

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Exporter":
        with contextlib.ExitStack() as stack:
            self.collector.set_source("netns_info", NetnsInfoSource())
            stack.callback(self.collector.remove_source, "netns_info")
            stack.callback(self._stop_drops)
            if self.config.drops:
                self._start_drops(self.config)
            stack.callback(self._close_interfaces)
            self.reconcile()
            self._listen(self.config.listen)
            stack.callback(self._stop_server)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def run(self) -> None:
        """Follow interfaces until Ctrl-C/SIGTERM; reload on SIGHUP; now and then forget the
        counts of the dead."""
        gc_due = Every(GC_INTERVAL)
        with RunLoop(self.config.watch_interval, on_hangup=self.request_reload) as loop:
            for now in loop:
                if self.reload_due():
                    self.reload()
                self.reconcile()
                if self._drops is not None and gc_due(now):
                    self._drops.forget_gone()

    def request_reload(self) -> None:
        """Safe from a signal handler: the run loop reloads at its next round."""
        self._reload_pending = True

    def reload_due(self) -> bool:
        """SIGHUP came, or the config file changed since it was last read: once per change."""
        due, self._reload_pending = self._reload_pending, False
        seen = self._file_signatures()
        if None not in seen and seen != self._files_seen:
            self._files_seen = seen
            if not due:
                log.info("config file %s changed: reloading", " or ".join(filter(None, self._watched_files())))
            due = True
        return due

    def _watched_files(self) -> List[Optional[str]]:
        return [self.config_file, self.config.web_config_file]

    def _file_signatures(self) -> tuple:
        """Signatures of the watched files that exist in the config (None: one cannot be read now)."""
        return tuple(_file_signature(path) for path in self._watched_files() if path is not None)

    # --- readiness ---------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        """For /-/ready (another thread): computed by reconcile(), read here."""
        return self._readiness

    def _update_readiness(self) -> None:
        missing = [f"{capability} on {netns + '/' if netns else ''}{ifname}"
                   for capability, netns, ifname in self.wanted() if (capability, netns, ifname) not in self._per_iface]
        if self.config.drops and self._drops is None:
            missing.insert(0, "drops")
        self._readiness = (not missing, "not attached: " + ", ".join(missing) if missing else "ready")

    # --- HTTP ------------------------------------------------------------------------------
    def _server_state(self) -> ServerState:
        return ServerState(self.web, self.readiness)

    def _serve(self, host: str, port: int) -> WebServer:
        return start_server(host, port, self._server_state(), self.registry)

    @property
    def url(self) -> str:
        return f"{self.web.scheme}://{self.config.listen}/metrics"

    def _listen(self, listen: str) -> None:
        """Serve on `listen`, then close the previous server (if any): a failure keeps the old one."""
        host, port = listen_address(listen)
        old = self._server
        try:
            server = self._serve(host, port)
        except OSError as exc:
            if old is None or old.server_address[1] != port:
                raise BpftoolsError(f"cannot listen on {listen}: {exc.strerror}") from None
            # Same port, other address: free it first, and take the old address back on failure.
            self._stop_server()
            try:
                server = self._serve(host, port)
            except OSError as retry:
                self._server = self._serve(old.server_address[0], old.server_address[1])
                raise BpftoolsError(f"cannot listen on {listen}: {retry.strerror}") from None
            old = None
        self._server = server
        if old is not None:
            old.shutdown()
            old.server_close()

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- drops (one tracer for the whole scope) ---------------------------------------------
    def _start_drops(self, config: ServeConfig) -> None:
        """Start a tracer for `config`'s scope; only then replace the running one (if any)."""
        from .drop_events import Names, bcc_ksym
        from .kernel.drop_reasons import kfree_skb_format
        from .trace_drops import DropTracer, build_filter

        with contextlib.ExitStack() as starting:  # closed again if anything below fails
            fmt = kfree_skb_format()
            netns = config.netns if config.all_netns else select_netns(config.netns)
            flt = build_filter([], netns, config.all_netns, fmt=fmt)
            tracer = starting.enter_context(DropTracer(flt, summary=True, fmt=fmt))
            stack = starting.pop_all()
        self._stop_drops()
        self._drops = DropsSource(tracer, lambda: Names(fmt, bcc_ksym))
        self._drops_stack = stack
        self.collector.set_source(DROPS, self._drops)
        scope = "every namespace" if config.all_netns else (config.netns or "this namespace")
        log.info("drops: tracing skb:kfree_skb in %s", scope)

    def _stop_drops(self) -> None:
        if self._drops_stack is not None:
            self.collector.remove_source(DROPS)
            self._drops, stack, self._drops_stack = None, self._drops_stack, None
            stack.close()

    # --- reload ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the config and apply the difference; a bad config keeps the running one."""
        if self.reload_config is None:
            log.warning("SIGHUP: no --config or --web.config.file to reload; nothing changed")
            return
        try:
            new = self.reload_config()
            web = load_web_config(new.web_config_file)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, the exporter stays up
            log.error("config reload failed, keeping the running config: %s", first_line(exc),
                      exc_info=log.isEnabledFor(logging.DEBUG) and not isinstance(exc, BpftoolsError))
            self.collector.record_reload(ok=False)
            return
        old = self.config
        self._use_web_config(web)
        if new == old:
            log.info("config reloaded: nothing changed")
            self.collector.record_reload(ok=True)
            return
        if new.listen != old.listen:
            try:
                self._listen(new.listen)
                log.info("serving metrics on %s://%s/metrics", self.web.scheme, new.listen)
            except BpftoolsError as exc:
                log.error("config reload: %s; still serving on %s", exc, old.listen)
                new = dataclasses.replace(new, listen=old.listen)
        if _changed(old, new, DROPS_SETTINGS):
            new = self._reload_drops(old, new)
        self.config = new
        for capability, settings in CAPABILITY_SETTINGS.items():
            if _changed(old, new, settings):  # restarted with the new settings by reconcile()
                for key in [k for k in self._per_iface if k[0] == capability]:
                    self._stop(key, "settings changed")
        self.reconcile()
        self.collector.record_reload(ok=True)  # counted once applied: what changed is attached now
        log.info("config reloaded")

    def _use_web_config(self, web: WebConfig) -> None:
        """New TLS and users for the connections that come from now on; the socket stays open.
        Always taken, even when the file is the same: a renewed certificate has the same path."""
        self.web = web
        if self._server is not None:
            self._server.state = self._server_state()

    def _reload_drops(self, old: ServeConfig, new: ServeConfig) -> ServeConfig:
        if not new.drops:
            self._stop_drops()
            log.info("drops: stopped")
            return new
        try:
            self._start_drops(new)
        except Exception as exc:  # noqa: BLE001 - reported, and the running tracer stays
            log.error("config reload: cannot start drops: %s; keeping the previous drops settings", first_line(exc),
                      exc_info=log.isEnabledFor(logging.DEBUG))
            return dataclasses.replace(new, **{name: getattr(old, name) for name in DROPS_SETTINGS})
        return new

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
        """Attach to configured interfaces that exist now; drop the ones that went away or
        are no longer configured."""
        present: Dict[Tuple[Optional[str], str], Interface] = {}
        wanted = self.wanted()
        for key in [k for k in self._per_iface if k not in wanted]:
            self._stop(key, "removed from the config")
        for selector in {ns for _, ns, _ in wanted}:
            try:  # re-resolved every round, not held: a restarted container is a new namespace
                handle = select_netns(selector, hold=False)
                present.update({(selector, i.ifname): i for i in list_interfaces(handle)})
            except BpftoolsError as exc:
                log.debug("namespace %s not there (yet): %s", selector, exc)
        for key, start in wanted.items():
            iface = present.get(key[1:])
            current = self._per_iface.get(key)
            if current and (iface is None or (iface.netns_inode, iface.ifindex) != current[0]):
                self._stop(key, "interface gone" if iface is None else "interface replaced")
                current = None
            if iface is not None and current is None:
                self._start(key, iface, start)
        self._update_readiness()

    def _start(self, key: InterfaceKey, iface: Interface, start) -> None:
        stack = contextlib.ExitStack()
        try:
            source = start(iface, stack)
        except KeyboardInterrupt:
            stack.close()
            raise
        except Exception as exc:  # e.g. the interface vanished while we compiled: retried next round
            with survive(log, "closing what %s had started on %s", key[0], iface.describe()):
                stack.close()
            log.warning("cannot start %s on %s: %s", key[0], iface.describe(), first_line(exc),
                        exc_info=log.isEnabledFor(logging.DEBUG))
            return
        self.collector.set_source(source_key(key), source)
        self._per_iface[key] = ((iface.netns_inode, iface.ifindex), stack)
        log.info("%s attached to %s", key[0], iface.describe())

    def _stop(self, key: InterfaceKey, why: str) -> None:
        self.collector.remove_source(source_key(key))
        _ifindex, stack = self._per_iface.pop(key)
        try:
            stack.close()
        except Exception as exc:  # noqa: BLE001 - the interface is gone: detaching may find nothing
            log.debug("closing %s: %s", source_key(key), first_line(exc))
        log.info("%s on %s stopped: %s", key[0], key[2], why)

    def _close_interfaces(self) -> None:
        for key in list(self._per_iface):
            self.collector.remove_source(source_key(key))
            with survive(log, "closing %s", source_key(key)):
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


@contextlib.contextmanager
def reload_on_sighup(exporter: Exporter) -> Iterator[None]:
    """SIGHUP asks `exporter` to reload its config (instead of ending the process)."""
    previous = signal.signal(signal.SIGHUP, lambda _signum, _frame: exporter.request_reload())
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
