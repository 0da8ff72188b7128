"""Attach/detach lifecycle: XDP, tc and tracepoint attachments as context managers.

Preference order follows Cilium: bpf_link (XDP link, tcx) so the kernel detaches for us
even after `kill -9`; netlink (XDP via IFLA_XDP, tc clsact + direct-action filter) only
where the kernel has no link support. Netlink attachments carry the `bpftools_` program
name prefix so `bpftools status` / `detach` can find leftovers.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
from typing import Iterator, List, Optional

from . import bpfsys
from .errors import BpftoolsError, first_line, survive
from .netlink import Interface, in_netns, ipr, xdp_prog_id

log = logging.getLogger(__name__)

PROG_NAME_PREFIX = "bpftools_"
# BPFTOOLS_ATTACH=netlink forces the legacy path (old kernels; also how tests cover it).
FORCE_NETLINK = os.environ.get("BPFTOOLS_ATTACH") == "netlink"
TC_PARENTS = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}
TC_PRIORITY = 0xBEF0  # our clsact filters' priority, unlikely to collide with hand-made ones
XDP_MODES = {None: 0, "native": bpfsys.XDP_FLAGS_DRV_MODE, "generic": bpfsys.XDP_FLAGS_SKB_MODE}


class Attachment(contextlib.AbstractContextManager):
    """Something attached to the kernel; `detach()` is idempotent and never raises."""

    method = ""

    def __init__(self, description: str):
        self.description = description
        self.attached = False

    def attach(self) -> "Attachment":
        raise NotImplementedError

    def _detach(self) -> None:
        raise NotImplementedError

    def still_attached(self) -> bool:
        """Asks the kernel: is our program still where we put it? (Someone may have removed it.)"""
        return self.attached

    def detach(self) -> None:
        if not self.attached:
            return
        self.attached = False
        with survive(log, "detaching %s", self.description, level=logging.WARNING):
            self._detach()

    def __enter__(self):
        if not self.attached:
            self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


def _describe_prog(prog_id: int) -> str:
    info = bpfsys.prog_info(prog_id)
    return f"id {prog_id}, name {info.name!r}" if info and info.name else f"id {prog_id}"


def _detach_foreign_link(prog_id: int, ifindex: int) -> bool:
    """With --force: detach the bpf_link holding prog_id on ifindex, if a link holds it."""
    for link in bpfsys.links():
        if link.prog_id == prog_id and link.ifindex == ifindex:
            bpfsys.detach_link(link.id)
            return True
    return False


class XdpAttachment(Attachment):
    def __init__(self, prog_fd: int, iface: Interface, mode: Optional[str] = None, force: bool = False):
        super().__init__(f"xdp on {iface.describe()}")
        if mode not in XDP_MODES:
            raise BpftoolsError(f"unknown XDP mode {mode!r} (native or generic)")
        self.prog_fd, self.iface, self.mode, self.force = prog_fd, iface, mode, force
        self._link_fd = -1
        self._prog_id = 0

    def attach(self) -> "XdpAttachment":
        existing = xdp_prog_id(self.iface)
        if existing:
            if not self.force:
                raise BpftoolsError(
                    f"{self.iface.describe()} already has an XDP program ({_describe_prog(existing)}); "
                    "not replacing it without --force"
                )
            self._remove_existing(existing)
        flags = XDP_MODES[self.mode]
        with in_netns(self.iface.netns):
            if not FORCE_NETLINK:
                try:
                    self._link_fd = bpfsys.link_create(self.prog_fd, self.iface.ifindex, bpfsys.ATTACH_XDP, flags)
                    self.method = "bpf_link"
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # EINVAL: no XDP links on this kernel, use netlink
                        raise self._error(exc) from None
        if self._link_fd < 0:
            self._attach_netlink(flags)
            self.method = "netlink"
        self._prog_id = xdp_prog_id(self.iface)
        self.attached = True
        return self

    def _error(self, exc: OSError) -> BpftoolsError:
        mode = f" in {self.mode} mode" if self.mode else ""
        return BpftoolsError(f"cannot attach XDP{mode} to {self.iface.describe()}: {exc.strerror}")

    def _attach_netlink(self, flags: int) -> None:
        try:
            with ipr(self.iface.netns) as sock:
                sock.link("set", index=self.iface.ifindex, xdp_fd=self.prog_fd,
                          **({"xdp_flags": flags} if flags else {}))
        except Exception as exc:  # pyroute2 raises NetlinkError (an OSError)
            raise BpftoolsError(f"cannot attach XDP to {self.iface.describe()}: {exc}") from None

    def still_attached(self) -> bool:
        try:
            return self.attached and xdp_prog_id(self.iface) == self._prog_id
        except Exception as exc:  # the interface is gone
            log.debug("XDP on %s: %s", self.iface.describe(), first_line(exc))
            return False

    def _remove_existing(self, prog_id: int) -> None:
        if not _detach_foreign_link(prog_id, self.iface.ifindex):
            with ipr(self.iface.netns) as sock:
                sock.link("set", index=self.iface.ifindex, xdp_fd=-1)

    def _detach(self) -> None:
        if self._link_fd >= 0:
            os.close(self._link_fd)
            self._link_fd = -1
        elif xdp_prog_id(self.iface) == self._prog_id:  # remove only what is still ours
            with ipr(self.iface.netns) as sock:
                sock.link("set", index=self.iface.ifindex, xdp_fd=-1)


class TcAttachment(Attachment):
    """A sched_cls program on ingress or egress: tcx link, else a clsact direct-action filter."""

    def __init__(self, prog_fd: int, iface: Interface, direction: str, prog_name: str):
        super().__init__(f"tc {direction} on {iface.describe()}")
        if direction not in TC_PARENTS:
            raise BpftoolsError(f"unknown tc direction {direction!r}")
        self.prog_fd, self.iface, self.direction, self.prog_name = prog_fd, iface, direction, prog_name
        self._link_fd = -1
        self._created_clsact = False
        self._handle = 0  # our clsact filter's handle (netlink fallback)

    def attach(self) -> "TcAttachment":
        if not FORCE_NETLINK:
            with in_netns(self.iface.netns):
                try:
                    self._link_fd = bpfsys.link_create(self.prog_fd, self.iface.ifindex, self._attach_type)
                    self.method = "tcx"
                except OSError as exc:
                    if not bpfsys.means_unsupported(exc):
                        raise BpftoolsError(f"cannot attach tc program to {self.iface.describe()}: {exc.strerror}") from None
        if self._link_fd < 0:
            self._attach_clsact()
            self.method = "clsact"
        self.attached = True
        return self

    def still_attached(self) -> bool:
        if not self.attached:
            return False
        try:
            if self._link_fd >= 0:
                with in_netns(self.iface.netns):
                    return bpfsys.prog_id_of_fd(self.prog_fd) in bpfsys.tcx_prog_ids(self.iface.ifindex, self._attach_type)
            return any(p["hook"] == f"tc/{self.direction}" and p["prog_name"] == self.prog_name
                       for p in attached_programs(self.iface))
        except Exception as exc:  # the interface is gone
            log.debug("tc on %s: %s", self.iface.describe(), first_line(exc))
            return False

    @property
    def _attach_type(self) -> int:
        return bpfsys.ATTACH_TCX_INGRESS if self.direction == "ingress" else bpfsys.ATTACH_TCX_EGRESS

    def _attach_clsact(self) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        with ipr(self.iface.netns) as sock:
            try:
                sock.tc("add", "clsact", self.iface.ifindex)
                self._created_clsact = True
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise BpftoolsError(f"cannot add clsact qdisc on {self.iface.describe()}: {exc}") from None
            # Our own handle under our priority: other bpftools processes on this interface keep theirs.
            taken = {msg["handle"] for msg in sock.get_filters(index=self.iface.ifindex, parent=TC_PARENTS[self.direction])
                     if msg["info"] >> 16 == TC_PRIORITY}
            self._handle = next(h for h in range(1, len(taken) + 2) if h not in taken)
            try:
                sock.tc("add-filter", "bpf", self.iface.ifindex, self._handle, fd=self.prog_fd, name=self.prog_name,
                        parent=TC_PARENTS[self.direction], classid=1, direct_action=True, prio=TC_PRIORITY)
            except NetlinkError as exc:
                self._remove_clsact_if_ours(sock)
                raise BpftoolsError(f"cannot add tc filter on {self.iface.describe()}: "
                                    f"{os.strerror(exc.code) if exc.code else exc}") from None

    def _remove_clsact_if_ours(self, sock) -> None:
        if self._created_clsact:
            with survive(log, "removing the clsact qdisc of %s", self.iface.describe()):
                sock.tc("del", "clsact", self.iface.ifindex)

    def _detach(self) -> None:
        if self._link_fd >= 0:
            os.close(self._link_fd)
            self._link_fd = -1
            return
        with ipr(self.iface.netns) as sock:
            with survive(log, "removing the tc filter from %s", self.iface.describe()):
                sock.tc("del-filter", "bpf", self.iface.ifindex, self._handle, parent=TC_PARENTS[self.direction],
                        prio=TC_PRIORITY)
            if self._created_clsact and not other_filters(sock, self.iface.ifindex):
                self._remove_clsact_if_ours(sock)


def other_filters(sock, ifindex: int) -> bool:
    """Does the interface's clsact still hold any filter?"""
    return any(sock.get_filters(index=ifindex, parent=parent) for parent in TC_PARENTS.values())


class TracepointAttachment(Attachment):
    """A bcc tracepoint (perf event) or raw tracepoint: both vanish with our file descriptors."""

    def __init__(self, bpf, tracepoint: str, fn_name: str, raw: bool = False):
        super().__init__(f"{'raw_' if raw else ''}tracepoint {tracepoint}")
        self.bpf, self.tracepoint, self.fn_name, self.raw = bpf, tracepoint, fn_name, raw
        self.method = "raw_tracepoint" if raw else "perf_event"

    def attach(self) -> "TracepointAttachment":
        try:
            if self.raw:
                self.bpf.attach_raw_tracepoint(tp=self.tracepoint, fn_name=self.fn_name)
            else:
                self.bpf.attach_tracepoint(tp=self.tracepoint, fn_name=self.fn_name)
        except Exception as exc:  # bcc raises plain Exception
            raise BpftoolsError(f"cannot attach to {self.description}: {exc}") from None
        self.attached = True
        return self

    def _detach(self) -> None:
        if self.raw:
            self.bpf.detach_raw_tracepoint(tp=self.tracepoint)
        else:
            self.bpf.detach_tracepoint(tp=self.tracepoint)


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP, raised like Ctrl-C so every `with` block unwinds and detaches."""


@contextlib.contextmanager
def terminate_gracefully() -> Iterator[None]:
    def handler(signum, _frame):
        raise Terminated(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _prog_name(prog_id: int) -> str:
    info = bpfsys.prog_info(prog_id)
    return info.name if info else ""


def attached_programs(iface: Interface) -> List[dict]:
    """Every XDP and tc program on `iface` (any owner), for status and leftovers."""
    result = []
    prog_id = xdp_prog_id(iface)
    if prog_id:
        result.append({"hook": "xdp", "prog_id": prog_id, "prog_name": _prog_name(prog_id)})
    with in_netns(iface.netns):
        for direction, attach_type in (("ingress", bpfsys.ATTACH_TCX_INGRESS), ("egress", bpfsys.ATTACH_TCX_EGRESS)):
            for pid in bpfsys.tcx_prog_ids(iface.ifindex, attach_type):
                result.append({"hook": f"tcx/{direction}", "prog_id": pid, "prog_name": _prog_name(pid)})
    with ipr(iface.netns) as sock:
        for direction, parent in TC_PARENTS.items():
            with survive(log, "listing tc filters of %s", iface.describe()):
                for msg in sock.get_filters(index=iface.ifindex, parent=parent):
                    options = msg.get_attr("TCA_OPTIONS")
                    name = options.get_attr("TCA_BPF_NAME") if options else None
                    if name:  # pyroute2 does not decode TCA_BPF_ID; the name is what identifies ours
                        result.append({"hook": f"tc/{direction}", "prog_id": None, "prog_name": name,
                                       "prio": msg["info"] >> 16, "handle": msg["handle"]})
    return result
