"""`bpftools xdp-decap`: load bpf/xdp_decap.bpf.c with this host's tunnel addresses compiled in,
fill its allow-list map, attach it with XDP, prepare the egress of --redirect/--route, pin the allow-list, read counters.

Keys shared with the C (`struct addr_key`, `struct lpm_key`): the family (4 or 6) as a big-endian
u32, then 16 address bytes (IPv4 zero-padded); LPM keys start with a host-order prefix length that
counts the 32 family bits too.
"""
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import re
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import bpfsys
from .commands import Command
from .errors import BpftoolsError
from .namespaces import label_as_path_component
from .netlink import (Interface, in_netns, interface_addresses, interface_mac, neighbours, netns_label,
                      resolve_interface, veth_peer, xdp_prog_id)
from .addresses import parse_cidr

SOURCE = "xdp_decap.bpf.c"
PROG_DECAP = "bpftools_decap"
PROG_PASS = "bpftools_xpass"
# Same order as enum decap_counter in bpf/xdp_decap.bpf.c.
COUNTERS = ("decapsulated", "redirected", "passed_not_tunnel", "rejected_remote", "malformed", "fragment",
            "redirect_failed")
PIN_ROOT = os.path.join(bpfsys.PIN_ROOT, "xdp-decap")
MAX_EGRESS = 64  # tx_ports size in the C

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


# --- pure helpers (unit tested) -------------------------------------------------------------

def addr_key(addr: Address) -> bytes:
    """`struct addr_key` for one address."""
    return struct.pack("!I", addr.version) + addr.packed.ljust(16, b"\0")


def lpm_key(network: Network) -> bytes:
    """`struct lpm_key` for an allow-list entry."""
    return struct.pack("=I", 32 + network.prefixlen) + addr_key(network.network_address)


def decode_lpm_key(raw: bytes) -> Network:
    prefixlen, version = struct.unpack_from("=I", raw)[0] - 32, struct.unpack_from("!I", raw, 4)[0]
    size = 4 if version == 4 else 16
    return ipaddress.ip_network((raw[8:8 + size], prefixlen))


def parse_networks(values: Iterable[str], allow_any: bool) -> List[Network]:
    """The allow-list from --allow-remote/--allow-any; refusing to run open is the point."""
    values = list(values)
    if allow_any and values:
        raise BpftoolsError("give either --allow-remote CIDR or --allow-any, not both")
    if allow_any:
        return [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    if not values:
        raise BpftoolsError("refusing to decapsulate from anyone: name the tunnel senders with "
                            "--allow-remote CIDR (repeatable), or accept every sender with --allow-any "
                            "(open ipip decapsulation is CVE-2020-10136)")
    return [parse_cidr(value, "--allow-remote") for value in values]


def parse_addresses(values: Iterable[str], option: str = "--local") -> List[Address]:
    result = []
    for value in values:
        try:
            result.append(ipaddress.ip_address(value.split("/")[0]))
        except ValueError:
            raise BpftoolsError(f"{option} {value!r} is not an IP address") from None
    return result


_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


def parse_mac(text: str) -> int:
    if not _MAC.match(text or ""):
        raise BpftoolsError(f"{text!r} is not a MAC address (like 02:00:00:00:00:01)")
    return int(re.sub("[:-]", "", text), 16)


def mac_bytes(mac: str) -> bytes:
    return parse_mac(mac).to_bytes(6, "big")


def local_defines(addresses: Iterable[Address]) -> Dict[str, str]:
    """LOCAL_V4 / LOCAL_V6 for the C: 32-bit words as the program loads them from the packet."""
    words: Dict[int, List[str]] = {4: [], 6: []}
    for addr in dict.fromkeys(addresses):  # unique, in order
        packed = addr.packed
        words[addr.version] += [f"{struct.unpack_from('=I', packed, i)[0]:#x}" for i in range(0, len(packed), 4)]
    return {f"LOCAL_V{version}": ",".join(values) for version, values in words.items() if values}


def sum_per_cpu(values: Sequence[int]) -> int:
    return int(sum(values))


def pin_dir(netns_label: str, ifname: str) -> str:
    return os.path.join(PIN_ROOT, label_as_path_component(netns_label), ifname)


@dataclass
class DecapConfig:
    """Everything that shapes the program: -D defines (local addresses, forwarding) plus the
    allow-list map's initial content."""

    allow: List[Network]
    local: List[Address]
    redirect: bool = False
    route: bool = False
    dst_mac: Optional[int] = None  # --dst-mac for --redirect
    src_mac: Optional[int] = None  # MAC of the --redirect interface

    def defines(self) -> Dict[str, Union[int, bool, str]]:
        if self.redirect and self.route:
            raise BpftoolsError("--redirect and --route exclude each other")
        defines: Dict[str, Union[int, bool, str]] = {"REDIRECT": self.redirect, "ROUTE": self.route,
                                                     **local_defines(self.local)}
        if self.redirect:
            defines["REDIRECT_SRC_MAC"] = f"{self.src_mac or 0:#x}ULL"
            if self.dst_mac is not None:
                defines["REDIRECT_DST_MAC"] = f"{self.dst_mac:#x}ULL"
        return defines


# --- the BPF program --------------------------------------------------------------------------

def _u8(value: int = 1):
    return ctypes.c_uint8(value)


class DecapProgram(contextlib.AbstractContextManager):
    """The compiled decapsulator with its maps filled; not attached (tests run it with
    BPF_PROG_TEST_RUN, XdpDecap attaches it)."""

    def __init__(self, config: DecapConfig):
        from .program import BpfProgram

        self.config = config
        self.program = BpfProgram(SOURCE, config.defines())
        self.fd = -1

    def __enter__(self) -> "DecapProgram":
        from bcc import BPF

        self.program.__enter__()
        try:
            self.fd = self.program.load(PROG_DECAP, BPF.XDP)
            self.set_allow(self.config.allow)
        except BaseException:
            self.program.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.program.__exit__(*exc)

    def table(self, name: str):
        return self.program.table(name)

    def pass_fd(self) -> int:
        from bcc import BPF

        return self.program.load(PROG_PASS, BPF.XDP)

    @staticmethod
    def _key(table, raw: bytes):
        key = table.Key()
        ctypes.memmove(ctypes.addressof(key), raw, ctypes.sizeof(key))
        return key

    def set_allow(self, networks: Iterable[Network]) -> None:
        table = self.table("allow")
        for network in networks:
            table[self._key(table, lpm_key(network))] = _u8()

    def set_neighbours(self, entries: Dict[str, str]) -> None:
        """Inner destination -> MAC for --redirect without --dst-mac; replaces the old content."""
        table = self.table("neighbours")
        wanted = {}
        for ip, mac in entries.items():
            with contextlib.suppress(ValueError, BpftoolsError):
                wanted[addr_key(ipaddress.ip_address(ip))] = mac_bytes(mac)
        for key in list(table.keys()):
            if bytes(key) not in wanted:
                with contextlib.suppress(KeyError):
                    del table[key]
        for raw_key, mac in wanted.items():
            leaf = table.Leaf()
            ctypes.memmove(ctypes.addressof(leaf), mac, 6)
            table[self._key(table, raw_key)] = leaf

    def set_egress(self, slot: int, ifindex: int) -> None:
        """tx_ports[slot] = ifindex (the caller is inside the interface's namespace)."""
        table = self.table("tx_ports")
        table[ctypes.c_int(slot)] = ctypes.c_int(ifindex)
        if self.config.route:
            self.table("egress_slots")[ctypes.c_uint32(ifindex)] = ctypes.c_uint32(slot)

    def counters(self) -> Dict[str, int]:
        table = self.table("counters")
        result = {}
        for index, name in enumerate(COUNTERS):
            result[name] = sum_per_cpu(table.getvalue(table.Key(index)))
        return result


# --- attached to an interface -----------------------------------------------------------------

@dataclass
class Egress:
    """An interface decapsulated packets may leave through."""

    iface: Interface
    note: str = ""  # what we did so veth accepts XDP frames, or what the user must do


def pin_map(fd: int, path: str) -> None:
    from bcc.libbcc import lib

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a leftover of a killed run on the same interface
    if lib.bpf_obj_pin(fd, path.encode()) != 0:
        raise BpftoolsError(f"cannot pin the allow-list map at {path}: {os.strerror(ctypes.get_errno())}")


def allow_pin(iface: Interface) -> str:
    return os.path.join(pin_dir(netns_label(iface.netns_inode), iface.ifname), "allow")


@contextlib.contextmanager
def pinned_allow_list(iface: Interface):
    """The fd of the allow-list a running `bpftools xdp-decap` on `iface` pinned."""
    from bcc.libbcc import lib

    path = allow_pin(iface)
    fd = lib.bpf_obj_get(path.encode()) if os.path.exists(path) else -1
    if fd < 0:
        running = Command(("bpftools", "xdp-decap", iface.ifname)).render()
        raise BpftoolsError(f"no allow-list pinned at {path}: is `{running}` running there?")
    try:
        yield fd
    finally:
        os.close(fd)


def change_allow_list(iface: Interface, networks: Iterable[Network], remove: bool = False) -> None:
    from bcc.libbcc import lib

    one = ctypes.c_uint8(1)
    with pinned_allow_list(iface) as fd:
        for network in networks:
            key = ctypes.create_string_buffer(lpm_key(network), 24)
            ret = lib.bpf_delete_elem(fd, key) if remove else lib.bpf_update_elem(fd, key, ctypes.byref(one), 0)
            if ret != 0 and not remove:
                raise BpftoolsError(f"cannot add {network} to the allow-list of {iface.describe()}")


def read_allow_list(iface: Interface) -> List[Network]:
    from bcc.libbcc import lib

    result = []
    with pinned_allow_list(iface) as fd:
        key, next_key = ctypes.create_string_buffer(24), ctypes.create_string_buffer(24)
        previous = None
        while lib.bpf_get_next_key(fd, previous, next_key) == 0:
            result.append(decode_lpm_key(next_key.raw))
            ctypes.memmove(key, next_key, 24)
            previous = key
    return sorted(result, key=lambda n: (n.version, n))


class XdpDecap(contextlib.AbstractContextManager):
    """`with XdpDecap(iface, config, ...) as decap:` loads, attaches, pins; the block's end undoes all."""

    def __init__(self, iface: Interface, config: DecapConfig, mode: Optional[str] = None, force: bool = False,
                 redirect_iface: Optional[Interface] = None):
        self.iface, self.config, self.mode, self.force = iface, config, mode, force
        self.redirect_iface = redirect_iface
        self.notes: List[str] = []
        self.egress: List[Egress] = []
        self.attachment = None
        self.pin_path = ""
        self._stack = contextlib.ExitStack()
        self.program: Optional[DecapProgram] = None

    def __enter__(self) -> "XdpDecap":
        from .attach import XdpAttachment
        from .kernel.mounts import ensure_mounted

        with self._stack as stack:
            self.program = stack.enter_context(DecapProgram(self.config))
            if self.config.redirect:
                self._add_egress(0, self.redirect_iface)
                self.refresh()
            elif self.config.route:
                self._add_route_egress()
            self.attachment = stack.enter_context(XdpAttachment(self.program.fd, self.iface, self.mode, self.force))
            ensure_mounted("/sys/fs/bpf")
            self.pin_path = allow_pin(self.iface)
            pin_map(self.program.table("allow").map_fd, self.pin_path)
            stack.callback(bpfsys.unpin, self.pin_path)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _add_egress(self, slot: int, iface: Interface) -> Egress:
        egress = Egress(iface, self._prepare_veth(iface) if iface.kind == "veth" else "")
        with in_netns(iface.netns):
            try:
                self.program.set_egress(slot, iface.ifindex)
            except Exception as exc:
                raise BpftoolsError(f"cannot use {iface.describe()} as XDP egress: {exc}") from None
        self.egress.append(egress)
        if egress.note:
            self.notes.append(egress.note)
        return egress

    def _add_route_egress(self) -> None:
        """--route may leave through the namespace's other Ethernet interfaces: each one XDP can
        transmit on goes into tx_ports (a veth once its peer runs XDP). Packets routed back out
        of IFACE itself go to the stack (no program is forced onto the sender's side)."""
        from .netlink import list_interfaces

        slot = 0
        for iface in list_interfaces(self.iface.netns):
            if not iface.has_ethernet_header or iface.ifindex == self.iface.ifindex or slot >= MAX_EGRESS:
                continue
            if iface.kind == "veth" and not self._peer_ready(iface):
                continue
            self._add_egress(slot, iface)
            slot += 1

    def _peer_ready(self, iface: Interface) -> bool:
        note = self._prepare_veth(iface)
        if note.startswith("cannot"):
            self.notes.append(note + "; --route passes packets for it to the stack")
            return False
        if note:
            self.notes.append(note)
        return True

    def _prepare_veth(self, iface: Interface) -> str:
        """A veth only takes redirected XDP frames if its peer runs an XDP program: give the
        peer a pass-through one when it has none."""
        from .attach import XdpAttachment

        peer = veth_peer(iface)
        if peer is None:
            return (f"cannot find the peer of veth {iface.describe()} (its namespace is not visible from here); "
                    "attach any XDP program to it, e.g. `ip link set dev PEER xdp obj PROG.o`, or "
                    "redirected packets are dropped")
        if xdp_prog_id(peer):
            return ""
        if peer.ifindex == self.iface.ifindex and peer.netns_inode == self.iface.netns_inode:
            return ""  # the decapsulator itself is on the peer
        self._stack.enter_context(XdpAttachment(self.program.pass_fd(), peer))
        return f"attached pass-through XDP program {PROG_PASS} to {peer.describe()}, the veth peer of " \
               f"{iface.ifname} (veth needs one to receive redirected frames)"

    def refresh(self) -> None:
        """Copy the --redirect interface's neighbour table into the program (no --dst-mac)."""
        if self.config.redirect and self.config.dst_mac is None:
            self.program.set_neighbours(neighbours(self.redirect_iface))

    def counters(self) -> Dict[str, int]:
        return self.program.counters()


def config_for(iface: Interface, allow: List[Network], local: List[Address], redirect: Optional[str],
               route: bool, dst_mac: Optional[str]) -> Tuple[DecapConfig, Optional[Interface]]:
    """Resolve the command line against the system: local addresses, the redirect interface."""
    if not iface.has_ethernet_header:
        raise BpftoolsError(f"{iface.describe()} has no Ethernet header (link type {iface.link_type}); "
                            "xdp-decap needs an Ethernet interface")
    addresses = list(local) or [ipaddress.ip_address(a) for a in interface_addresses(iface)]
    if not addresses:
        raise BpftoolsError(f"{iface.describe()} has no addresses: name the tunnel endpoint with --local ADDR")
    redirect_iface = None
    src_mac = None
    if dst_mac is not None and not redirect:
        raise BpftoolsError("--dst-mac only makes sense with --redirect")
    if redirect:
        redirect_iface = resolve_interface(redirect, iface.netns)
        if not redirect_iface.has_ethernet_header:
            raise BpftoolsError(f"--redirect {redirect}: not an Ethernet interface")
        src_mac = parse_mac(interface_mac(redirect_iface) or "")
    config = DecapConfig(allow, addresses, redirect=bool(redirect), route=route,
                         dst_mac=parse_mac(dst_mac) if dst_mac else None, src_mac=src_mac)
    return config, redirect_iface
