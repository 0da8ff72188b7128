"""Fixes for tunnel devices, as argv (pure functions of the captured state; the walk turns them
into commands in the tunnel's namespace and prove.py applies them to the model before printing).

- `recreate`: the kernel cannot change a VXLAN/GENEVE device's VNI or port in place ("Cannot change
  VNI/port"): delete it and make it again with everything else it had.
- `fdb_fix`, `move_remote`: the FDB entry a VXLAN device needs to reach a MAC's VTEP, or its
  remote / entries moved from a wrong address to the right one.
- `tunnel_overhead`, `inner_mtu_fix`: what a tunnel adds to each packet, and the MTU fixes for an
  inner MTU the tunnel cannot carry: lower the inner side (both ends of the pod's veth, as CNI
  plugins do) or raise the underlay (never a tunnel device above the underlay's MTU minus this).

What `Link` does not record cannot be made again: a vxlan device's ttl, tos, source port range,
ageing, checksum and GBP options come back as the kernel's defaults."""
from __future__ import annotations

import ipaddress
from typing import List, Optional, Sequence, Tuple

from ..commands import HOST_LABEL, Argv, Command, argv_of, in_ns
from .state import (RT_TABLE_LOCAL, RT_TABLE_MAIN, FdbEntry, Link, NetnsState, Route, Snapshot, conf_sysctl,
                    family_of)

ZERO_MAC = "00:00:00:00:00:00"
RECREATED_KINDS = ("vxlan", "geneve")   # the devices `recreate` makes again (tunnel.TUNNEL_KINDS: every tunnel)
NEIGHBOUR_STATES = ("permanent", "noarp")   # the entries someone made (the rest the kernel learns)
ETH_HLEN, UDP_HLEN, VXLAN_HLEN, GRE_HLEN, KEY_LEN = 14, 8, 8, 4, 4
ENCAP_LIMIT_OPTION = 8   # ip6tnl/ip6gre insert it unless made with `encaplimit none` (not recorded)


# -- overhead -------------------------------------------------------------------------------------

def tunnel_overhead(link: Link, underlay_family: int = 4, geneve_options: int = 0) -> int:
    """Bytes the tunnel puts in front of a packet its device's MTU admits: vxlan and geneve 50 (70
    over IPv6, geneve plus its options), gre 24, gretap 38 (a key: 4 more), ipip and sit 20,
    ip6tnl 48 and ip6gre 52 (the encapsulation limit option included). 0 for other devices."""
    outer_ip = 40 if underlay_family == 6 else 20
    kind = link.kind
    if kind in ("vxlan", "geneve"):
        return ETH_HLEN + VXLAN_HLEN + UDP_HLEN + outer_ip + (geneve_options if kind == "geneve" else 0)
    if kind in ("gre", "gretap", "ip6gre", "ip6gretap"):
        six = kind.startswith("ip6")
        header = GRE_HLEN + (KEY_LEN if link.tunnel_okey is not None else 0)
        return (ETH_HLEN if kind.endswith("tap") else 0) + header + (40 + ENCAP_LIMIT_OPTION if six else 20)
    if kind in ("ipip", "sit"):
        return 20
    if kind == "ip6tnl":
        return 40 + ENCAP_LIMIT_OPTION
    return 0


def underlay_family(link: Link) -> int:
    """The family of the tunnel's outer packets (its remote, group or local address; IPv4 without)."""
    endpoint = link.tunnel_remote or link.tunnel_group or link.tunnel_local
    return family_of(endpoint) if endpoint else 4


def underlay_ceiling(state: NetnsState, tunnel: Link) -> Optional[int]:
    """The MTU of the tunnel's underlay device (`dev`) minus the overhead (at least 68, the
    kernel's floor); None when the tunnel is bound to no device here."""
    lower = state.link(tunnel.tunnel_dev) if tunnel.tunnel_dev is not None else None
    if lower is None:
        return None
    return max(68, lower.mtu - tunnel_overhead(tunnel, underlay_family(tunnel)))


def carried_mtu(state: NetnsState, tunnel: Link) -> int:
    """The largest inner packet the tunnel carries: its MTU, and no more than its underlay takes."""
    ceiling = underlay_ceiling(state, tunnel)
    return tunnel.mtu if ceiling is None else min(tunnel.mtu, ceiling)


def inner_mtu_fix(snap: Snapshot, tunnel_ns: str, tunnel: Link, inner: Sequence[Tuple[str, Link]], size: int,
                  underlay: Optional[Tuple[str, Link]] = None, home: str = HOST_LABEL) -> List[List[Command]]:
    """Candidate fixes for `size`-byte inner packets (the inner side's MTU) that the tunnel cannot
    carry, the likeliest first:
    1. lower the inner side to what the tunnel carries: each interface in `inner` (namespace label,
       link) above it, and the other end of a veth among them (CNI plugins give both ends one MTU);
    2. raise the underlay (`underlay`, else the tunnel's `dev`) to `size` plus the overhead, both
       ends of a veth underlay, then the tunnel device to `size`: never above the underlay minus
       the overhead. None when the underlay is not known."""
    state = snap.ns(tunnel_ns)
    carried = carried_mtu(state, tunnel)
    candidates: List[List[Command]] = []
    lower = [in_ns(ns, argv_of("ip link set dev {} mtu {}", link.ifname, carried), home)
             for ns, link in _with_veth_peers(snap, inner) if link.mtu > carried]
    if lower:
        candidates.append(lower)
    if underlay is None and tunnel.tunnel_dev is not None and state.link(tunnel.tunnel_dev) is not None:
        underlay = (tunnel_ns, state.link(tunnel.tunnel_dev))
    if underlay is not None:
        needed = size + tunnel_overhead(tunnel, underlay_family(tunnel))
        raise_ = [in_ns(ns, argv_of("ip link set dev {} mtu {}", link.ifname, needed), home)
                  for ns, link in _with_veth_peers(snap, [underlay]) if link.mtu < needed]
        if tunnel.mtu < size:
            raise_.append(in_ns(tunnel_ns, argv_of("ip link set dev {} mtu {}", tunnel.ifname, size), home))
        if raise_:
            candidates.append(raise_)
    return candidates


def _with_veth_peers(snap: Snapshot, links: Sequence[Tuple[str, Link]]) -> List[Tuple[str, Link]]:
    found: List[Tuple[str, Link]] = []
    for ns, link in links:
        found.append((ns, link))
        if link.kind == "veth" and link.peer_ifindex is not None and link.peer_netns \
                and not link.peer_netns.startswith("nsid:") and snap.has(link.peer_netns):
            peer = snap.ns(link.peer_netns).link(link.peer_ifindex)
            if peer is not None:
                found.append((link.peer_netns, peer))
    return list({(ns, link.ifindex): (ns, link) for ns, link in found}.values())


# -- FDB ------------------------------------------------------------------------------------------

def _multi(mac: str) -> bool:
    """The all-zeros default entry and multicast MACs hold several remotes (`append`)."""
    return mac == ZERO_MAC or bool(int(mac.split(":")[0], 16) & 1)


def _remote_words(link: Link, port: Optional[int], vni: Optional[int]) -> Argv:
    """`port P` / `vni N` where they differ from the device's own."""
    words: Argv = ()
    if port is not None and port != link.dstport:
        words += argv_of("port {}", port)
    if vni is not None and vni != link.vni:
        words += argv_of("vni {}", vni)
    return words


def fdb_fix(link: Link, mac: str, dst: str, port: Optional[int] = None, vni: Optional[int] = None) -> List[Argv]:
    """The VXLAN FDB entry sending `mac` (the all-zeros default: every unknown MAC) to VTEP `dst`:
    `append` for the default entry or a multicast MAC (they hold several remotes), `add` for a
    unicast MAC without an entry, `replace` for one whose entry points elsewhere; nothing when the
    entry is there."""
    mac = mac.lower()
    tail = _remote_words(link, port, vni)
    mine = [e for e in link.fdb if e.mac == mac]
    wanted = FdbEntry(mac, dst, None if port == link.dstport else port, None if vni == link.vni else vni)
    if any((e.dst, e.port, e.vni) == (wanted.dst, wanted.port, wanted.vni) for e in mine):
        return []
    verb = "append" if _multi(mac) else ("replace" if mine else "add")
    return [argv_of("bridge fdb {} {} dev {} dst {}", verb, mac, link.ifname, dst) + tail]


def move_remote(state: NetnsState, link: Link, old: str, new: str) -> List[Argv]:
    """Send what goes to VTEP `old` to `new`: the device's `remote` (the kernel moves its default
    entry: `ip link set … type vxlan remote`; a geneve device is made again), and each static FDB
    entry pointing at `old` (`replace` for a unicast MAC, `del` + `append` for the default entry
    or a multicast MAC)."""
    if link.kind == "geneve":
        return recreate(state, link, remote=new) if link.tunnel_remote == old else []
    fix: List[Argv] = []
    moved_default = link.tunnel_remote == old
    if moved_default:
        fix.append(argv_of("ip link set {} type vxlan remote {}", link.ifname, new))
    for entry in link.fdb:
        if entry.dst != old or not entry.permanent or (moved_default and _made_by_remote(link, entry)):
            continue
        tail = _remote_words(link, entry.port, entry.vni)
        if _multi(entry.mac):
            fix.append(argv_of("bridge fdb del {} dev {} dst {}", entry.mac, link.ifname, old) + tail)
            fix.append(argv_of("bridge fdb append {} dev {} dst {}", entry.mac, link.ifname, new) + tail)
        else:
            fix.append(argv_of("bridge fdb replace {} dev {} dst {}", entry.mac, link.ifname, new) + tail)
    return fix


def _made_by_remote(link: Link, entry: FdbEntry) -> bool:
    """The default entry the kernel makes from `remote`/`group`."""
    return entry.mac == ZERO_MAC and entry.dst in (link.tunnel_remote, link.tunnel_group) and entry.dst is not None \
        and entry.port in (None, link.dstport) and entry.vni in (None, link.vni)


# -- recreate -------------------------------------------------------------------------------------

def recreate(state: NetnsState, link: Link, vni: Optional[int] = None, dstport: Optional[int] = None,
             remote: Optional[str] = None) -> List[Argv]:
    """Delete the VXLAN/GENEVE device and make it again with a new VNI, port (or geneve remote) and
    everything else it had: id, dstport, local, remote/group, dev, nolearning, MAC, MTU, master, up,
    its addresses (IPv6 link-local ones the kernel makes again from the MAC), its static FDB entries,
    permanent neighbours and the routes through it (Flannel's onlink routes), and its own sysctls
    that differ from conf/default. Nothing when the device cannot be made again faithfully (another
    kind, or an underlay device that is not in this namespace)."""
    if link.kind not in RECREATED_KINDS or link.vni is None:
        return []
    lower = state.link(link.tunnel_dev) if link.tunnel_dev is not None else None
    if link.tunnel_dev is not None and lower is None:
        return []
    name = link.ifname
    fix = [argv_of("ip link del {}", name), _add_argv(link, lower, vni, dstport, remote)]
    master = state.link(link.master) if link.master is not None else None
    if master is not None:
        fix.append(argv_of("ip link set {} master {}", name, master.ifname))
    if link.admin_up:
        fix.append(argv_of("ip link set {} up", name))
    fix += _sysctl_argv(state, name)
    for addr in state.addrs_on(link.ifindex):
        if addr.family == 6 and ipaddress.ip_address(addr.address).is_link_local:
            continue
        peer = argv_of("peer {}", addr.peer) if addr.peer else ()
        fix.append(argv_of("ip addr add {}/{}", addr.address, addr.prefixlen) + peer + argv_of("dev {}", name))
    fix += _fdb_argv(link, remote)
    for neighbour in state.neighbours:
        if neighbour.ifindex == link.ifindex and neighbour.state in NEIGHBOUR_STATES and neighbour.lladdr \
                and not ipaddress.ip_address(neighbour.dst).is_multicast:   # the kernel's own (ff02::2 noarp)
            fix.append(argv_of("ip neigh add {} lladdr {} dev {} nud {}", neighbour.dst, neighbour.lladdr, name,
                               neighbour.state))
    fix += [_route_argv(state, link, r) for r in state.routes if r.oif == link.ifindex and not _kernel_made(state, r)]
    return fix


def _add_argv(link: Link, lower: Optional[Link], vni: Optional[int], dstport: Optional[int],
              remote: Optional[str]) -> Argv:
    words = argv_of("ip link add {}", link.ifname)
    words += argv_of("address {}", link.mac) if link.mac else ()
    words += argv_of("mtu {} type {} id {}", link.mtu, link.kind, link.vni if vni is None else vni)
    port = link.dstport if dstport is None else dstport
    words += argv_of("dstport {}", port) if port is not None else ()
    if link.kind == "vxlan" and link.tunnel_local:
        words += argv_of("local {}", link.tunnel_local)
    target = remote or link.tunnel_remote
    words += argv_of("remote {}", target) if target else ()
    words += argv_of("group {}", link.tunnel_group) if link.tunnel_group and not target else ()
    words += argv_of("dev {}", lower.ifname) if lower is not None else ()
    return words + (("nolearning",) if link.kind == "vxlan" and not link.learning else ())


def _fdb_argv(link: Link, remote: Optional[str]) -> List[Argv]:
    """Static entries appended again; the default entry `remote`/`group` makes comes with the
    device (deleted again when it had been deleted)."""
    if link.kind != "vxlan":
        return []
    fix = []
    for entry in link.fdb:
        if entry.permanent and entry.dst and not _made_by_remote(link, entry):
            fix.append(argv_of("bridge fdb append {} dev {} dst {}", entry.mac, link.ifname, entry.dst)
                       + _remote_words(link, entry.port, entry.vni))
    made = remote or link.tunnel_remote or link.tunnel_group
    if made and not remote and not any(_made_by_remote(link, e) for e in link.fdb):
        fix.append(argv_of("bridge fdb del {} dev {} dst {}", ZERO_MAC, link.ifname, made))
    return fix


def _sysctl_argv(state: NetnsState, name: str) -> List[Argv]:
    """The device's own settings (conf/NAME/KEY) that differ from what a new device gets (conf/default)."""
    fix = []
    for family in (4, 6):
        prefix = f"net.ipv{family}.conf.{name}."
        for key, value in sorted(state.sysctls.items()):
            setting = key[len(prefix):]
            default = state.sysctls.get(f"net.ipv{family}.conf.default.{setting}")
            if key.startswith(prefix) and default is not None and value != default:
                fix.append(argv_of("sysctl -w {}={}", conf_sysctl(name, setting, family), value))
    return fix


def _kernel_made(state: NetnsState, route: Route) -> bool:
    """Routes the kernel makes from the device's addresses (local table, prefix routes) or for any
    IPv6 device (fe80::/64): they come back with the addresses."""
    if route.table == RT_TABLE_LOCAL or route.type != "unicast":
        return True
    net = route.network
    if net.version == 6 and net == ipaddress.ip_network("fe80::/64"):
        return True
    return route.gateway is None and any(a.network == net for a in state.addrs_on(route.oif))


def _route_argv(state: NetnsState, link: Link, route: Route) -> Argv:
    words = argv_of("ip route add {}/{}", route.dst, route.dst_len)
    if route.gateway:
        words += argv_of("via {}", route.gateway)
    words += argv_of("dev {}", link.ifname)
    if route.gateway and not _on_link(state, link, route.gateway):
        words += ("onlink",)
    if route.prefsrc:
        words += argv_of("src {}", route.prefsrc)
    if route.priority != (1024 if route.family == 6 else 0):
        words += argv_of("metric {}", route.priority)
    if route.table != RT_TABLE_MAIN:
        words += argv_of("table {}", route.table)
    return words


def _on_link(state: NetnsState, link: Link, gateway: str) -> bool:
    """The kernel takes `via GW dev X` without `onlink` only for a gateway on one of X's subnets (or
    IPv6 link-local); Flannel's gateways (the far node's /32 VTEP address) need `onlink`."""
    address = ipaddress.ip_address(gateway)
    if address.version == 6 and address.is_link_local:
        return True
    return any(address in a.network and a.network.prefixlen < a.network.max_prefixlen
               for a in state.addrs_on(link.ifindex, address.version))
