"""Network namespaces and interfaces: all pyroute2 use lives here.

An interface is identified by (namespace inode, ifindex): `v1` in one namespace is not
`v1` in another.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

from .errors import BpftoolsError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise BpftoolsError(f"cannot enter network namespace: {os.strerror(err)}")


def netns_path(name: str) -> str:
    path = os.path.join(NETNS_RUN_DIR, name)
    if "/" in name or not os.path.exists(path):
        raise BpftoolsError(f"network namespace {name!r} not found (see `ip netns list`)")
    return path


@contextlib.contextmanager
def in_netns(name: Optional[str]) -> Iterator[None]:
    """Run the block with this thread inside namespace `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    target = os.open(netns_path(name), os.O_RDONLY)
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(target)
        os.close(saved)


def netns_inode(name: Optional[str]) -> int:
    """Inode of a named namespace, or of our own with None."""
    return os.stat(netns_path(name) if name else "/proc/thread-self/ns/net").st_ino


def named_netns() -> Dict[int, str]:
    """inode -> `ip netns` name, for every named namespace."""
    result = {}
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return result
    for name in names:
        try:
            result[os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino] = name
        except OSError:
            continue
    return result


def netns_label(inode: int, names: Optional[Dict[int, str]] = None) -> str:
    """How we show a namespace: its `ip netns` name, "host" for ours, else the inode."""
    names = named_netns() if names is None else names
    if inode in names:
        return names[inode]
    if inode == os.stat("/proc/1/ns/net").st_ino:
        return "host"
    return str(inode)


def ipr(netns: Optional[str] = None):
    """An IPRoute socket bound to namespace `netns` (the socket stays there once opened)."""
    from pyroute2 import IPRoute

    if netns is not None:
        netns_path(netns)
        return IPRoute(netns=netns)
    return IPRoute()


@dataclass(frozen=True)
class Interface:
    netns: Optional[str]  # `ip netns` name, None for the namespace we run in
    netns_inode: int
    ifname: str
    ifindex: int
    kind: str  # veth, bridge, vxlan, ipip… ('' for physical)
    link_type: int  # ARPHRD_*: 1 ethernet, 768 ipip, 776 sit, 778 gre, 65534 none (L3 tun)

    @property
    def has_ethernet_header(self) -> bool:
        return self.link_type == 1

    def describe(self) -> str:
        return f"{self.ifname} (netns {self.netns})" if self.netns else self.ifname


def _interface_from_msg(msg, netns: Optional[str], inode: int) -> Interface:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else ""
    return Interface(netns, inode, msg.get_attr("IFLA_IFNAME"), msg["index"], kind or "", msg["ifi_type"])


def list_interfaces(netns: Optional[str] = None) -> List[Interface]:
    inode = netns_inode(netns)
    with ipr(netns) as sock:
        return [_interface_from_msg(m, netns, inode) for m in sock.get_links()]


def resolve_interface(ifname: str, netns: Optional[str] = None) -> Interface:
    """The interface named `ifname` in `netns`, or a one-line error naming where we looked."""
    for iface in list_interfaces(netns):
        if iface.ifname == ifname:
            return iface
    where = f"network namespace {netns!r}" if netns else "this network namespace"
    raise BpftoolsError(f"interface {ifname!r} not found in {where}")


def xdp_prog_id(iface: Interface) -> int:
    """Id of the XDP program attached to `iface` (0 if none), whatever attached it."""
    with ipr(iface.netns) as sock:
        msg = sock.get_links(iface.ifindex)[0]
    xdp = msg.get_attr("IFLA_XDP")
    if not xdp:
        return 0
    return xdp.get_attr("IFLA_XDP_PROG_ID") or 0


def all_netns() -> List[Optional[str]]:
    """None (our namespace) followed by every named namespace."""
    return [None] + sorted(named_netns().values())
