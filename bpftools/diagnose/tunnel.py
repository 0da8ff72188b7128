"""Tunnels as the kernel runs them: the outer packet a tunnel device makes of a frame or packet
(VXLAN: the FDB entry for the destination MAC, else the all-zeros default entries, else `remote`;
a multicast `group` cannot be followed; GENEVE: remote, VNI, port; ipip/sit/ip6tnl and
gre/gretap/ip6gre: local, remote, keys), the device on the far side that receives it, and why
none does (the tunnel causes of checks.CAUSES).

`Tunnels` crosses one tunnel for the walker: the `tunnel` hop with its `Outer`, the outer packet
walked through the underlay with the walker's own machinery (routes, neighbours, firewalls,
rp_filter, MTU), the `decap` hop, and the device the inner path continues from."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from ..commands import Argv, Command, argv_of, in_ns, rendered
from . import checks as C
from .records import Hop, Outer
from .routing import fib_lookup, route_get, select_source
from .state import FdbEntry, Link, NetnsState, Snapshot, family_of
from .tunnel_fixes import fdb_fix, move_remote, recreate, tunnel_overhead as overhead, underlay_family

L2_KINDS = ("vxlan", "geneve", "gretap", "ip6gretap")
L3_KINDS = ("ipip", "sit", "ip6tnl", "gre", "ip6gre")
TUNNEL_KINDS = L2_KINDS + L3_KINDS
DEFAULT_PORT = {"vxlan": 8472, "geneve": 6081}   # the kernel's defaults (iproute2 asks for vxlan's)
ZERO_MAC = "00:00:00:00:00:00"
# which kinds one device can receive from another: ip6tnl and ipip/sit share IP-in-IP
SAME_KIND = {"ipip": ("ipip", "sit"), "sit": ("sit", "ipip"), "ip6tnl": ("ip6tnl",)}
NAMES = {"vxlan": "VXLAN", "geneve": "GENEVE", "gretap": "GRE (gretap)", "ip6gretap": "GRE (ip6gretap)",
         "gre": "GRE", "ip6gre": "GRE (ip6gre)", "ipip": "IP-in-IP", "sit": "IPv6-in-IPv4 (sit)",
         "ip6tnl": "IP-in-IPv6 (ip6tnl)"}


def is_tunnel(link: Optional[Link]) -> bool:
    return link is not None and link.kind in TUNNEL_KINDS


def port_of(link: Link) -> Optional[int]:
    return link.dstport or DEFAULT_PORT.get(link.kind)


def proto_of(kind: str, inner_family: int) -> str:
    """The outer packet's protocol, as firewall.Packet names it."""
    if kind in ("vxlan", "geneve"):
        return "udp"
    if kind in ("gre", "gretap", "ip6gre", "ip6gretap"):
        return "gre"
    return "ipv6" if inner_family == 6 else "ipip"


def describe(outer: Outer) -> str:
    """'VXLAN (UDP port 4789, VNI 42) 192.168.81.1 -> 192.168.81.2'."""
    what = [f"UDP port {outer.dport}"] if outer.dport is not None else []
    what += [f"VNI {outer.vni}"] if outer.vni is not None else []
    what += [f"key {outer.key}"] if outer.key is not None else []
    inside = f" ({', '.join(what)})" if what else ""
    return f"{NAMES.get(outer.kind, outer.kind)}{inside} {outer.src or '?'} -> {outer.dst}"


# -- where a device sends a frame --------------------------------------------------------------------

@dataclass
class Target:
    """One outer destination of a frame, and which entry sends it there."""
    dst: str
    dport: Optional[int]
    vni: Optional[int]
    key: Optional[int]
    entry: Optional[FdbEntry] = None   # the FDB entry (None: the device's fixed remote)

    def how(self, link: Link) -> str:
        if self.entry is None:
            return f"remote {self.dst} of {link.ifname}"
        which = "default entry" if self.entry.mac == ZERO_MAC else f"entry for {self.entry.mac}"
        return f"FDB {which} of {link.ifname} (dst {self.dst})"


@dataclass
class Targets:
    found: List[Target] = field(default_factory=list)
    group: Optional[str] = None        # a multicast group the frame is sent to (members cannot be known)


def fdb_of(link: Link) -> List[FdbEntry]:
    """The device's FDB; recordings made before FDB entries were captured list only the remote
    VTEPs (`vxlan_fdb`), which are default entries as far as anyone can tell."""
    entries = list(link.fdb) if link.fdb else [FdbEntry(ZERO_MAC, d) for d in link.vxlan_fdb]
    if link.kind == "vxlan" and link.tunnel_remote and not any(e.mac == ZERO_MAC and e.dst == link.tunnel_remote
                                                               for e in entries):
        entries.append(FdbEntry(ZERO_MAC, link.tunnel_remote))   # `remote` is a default entry in the kernel
    return entries


def targets(link: Link, mac: Optional[str] = None) -> Targets:
    """Where the device sends a frame for `mac` (None or a group MAC: a broadcast such as ARP's),
    as vxlan_xmit does: that MAC's FDB entries, else the default entries (flooded to each)."""
    if link.kind != "vxlan":
        if not link.tunnel_remote:
            return Targets()
        vni = link.vni if link.kind == "geneve" else None
        return Targets([Target(link.tunnel_remote, port_of(link), vni, link.tunnel_okey)])
    entries = fdb_of(link)
    exact = [e for e in entries if mac and e.mac == mac.lower() and not _group_mac(mac)]
    chosen = exact or [e for e in entries if e.mac == ZERO_MAC]
    out = Targets()
    for e in chosen:
        if e.dst is None:
            continue
        if ipaddress.ip_address(e.dst).is_multicast:
            out.group = e.dst
            continue
        out.found.append(Target(e.dst, e.port or port_of(link), link.vni if e.vni is None else e.vni, None,
                                None if (e.mac == ZERO_MAC and e.dst == link.tunnel_remote) else e))
    if link.tunnel_group and not out.found:
        out.group = out.group or link.tunnel_group
    return out


def _group_mac(mac: str) -> bool:
    return bool(int(mac.split(":")[0], 16) & 1)


def outer_of(link: Link, target: Target, src: Optional[str], inner_family: int) -> Outer:
    return Outer(link.kind, src, target.dst, proto_of(link.kind, inner_family), target.dport, target.vni,
                 target.key)


# -- who receives it -----------------------------------------------------------------------------------

def _compatible(kind: str, other: str) -> bool:
    return other in SAME_KIND.get(kind, (kind,))


@dataclass
class Miss:
    """Why a device of the right kind does not take the outer packet."""
    link: Link
    cause: str
    detail: str


def mismatch(rdev: Link, outer: Outer) -> Optional[Miss]:
    """None when `rdev` receives `outer` (same kind, VNI/key, port, local address equal or unset)."""
    name = NAMES.get(outer.kind, outer.kind)
    if outer.kind in ("vxlan", "geneve"):
        if outer.vni != rdev.vni:
            return Miss(rdev, "tunnel_id_mismatch", f"the {name} packets carry VNI {outer.vni}, but {rdev.ifname} "
                        f"has VNI {rdev.vni}: the kernel finds no device for VNI {outer.vni} and drops them")
        if outer.dport != port_of(rdev):
            return Miss(rdev, "tunnel_port_mismatch", f"the {name} packets go to UDP port {outer.dport}, but "
                        f"{rdev.ifname} listens on port {port_of(rdev)}: nothing takes port {outer.dport}, so "
                        "they are dropped (ICMP port unreachable)")
        if family_of(outer.dst) != underlay_family(rdev):
            return Miss(rdev, "tunnel_remote_not_local", f"{rdev.ifname} listens on IPv{underlay_family(rdev)}, "
                        f"but the {name} packets come over IPv{family_of(outer.dst)}")
    if outer.kind in ("gre", "gretap", "ip6gre", "ip6gretap") and outer.key != rdev.tunnel_ikey:
        def key(k):
            return "no key" if k is None else f"key {k}"
        return Miss(rdev, "tunnel_id_mismatch", f"the GRE packets carry {key(outer.key)}, but {rdev.ifname} expects "
                    f"{key(rdev.tunnel_ikey)}: the kernel finds no tunnel for them and drops them")
    if rdev.tunnel_local and rdev.tunnel_local != outer.dst:
        return Miss(rdev, "tunnel_remote_not_local", f"the {name} packets go to {outer.dst}, but {rdev.ifname} "
                    f"listens on its local address {rdev.tunnel_local} only")
    if outer.kind not in ("vxlan",) and rdev.tunnel_remote and outer.src and rdev.tunnel_remote != outer.src:
        return Miss(rdev, "tunnel_remote_not_local", f"{rdev.ifname} takes packets from {rdev.tunnel_remote} only, "
                    f"but these come from {outer.src}")
    return None


def receiver(state: NetnsState, outer: Outer, sender: Link) -> Tuple[Optional[Link], Optional[Miss]]:
    """The device that receives the outer packet here, else the closest one and why it does not."""
    misses = []
    for link in state.links:
        if link is sender or not _compatible(outer.kind, link.kind):
            continue
        miss = mismatch(link, outer)
        if miss is None:
            return link, None
        misses.append(miss)
    order = ("tunnel_remote_not_local", "tunnel_port_mismatch", "tunnel_id_mismatch")
    misses.sort(key=lambda m: -order.index(m.cause))   # the one closest to matching: only its ID differs
    return (misses[0].link, misses[0]) if misses else (None, None)


# Where routing delivers an address from a namespace (the walker's look-ahead): (namespace, address,
# source) -> the namespace's name, or None (segment.Locate).
Locate = Callable[[NetnsState, str, Optional[str]], Optional[str]]


def _nearby(snap: Snapshot, state: NetnsState) -> List[str]:
    """Namespaces one veth away (bridge ports too): where an underlay without a route to the
    endpoint still reaches (never namespaces that merely share addresses, such as another copy of
    the same lab)."""
    names = []
    for link in state.links:
        if link.kind == "veth" and link.peer_netns and not link.peer_netns.startswith("nsid:") \
                and link.peer_netns != state.name and link.peer_netns not in names:
            names.append(link.peer_netns)
    return names


def owner_of(snap: Snapshot, address: str, state: NetnsState, hint: Optional[str] = None) -> Optional[NetnsState]:
    """The namespace that has `address`, as seen from `state`: where routing delivers it (`hint`),
    else a namespace next to it (not any namespace read so far: another copy of the same lab has
    the same addresses)."""
    for name in ([hint] if hint else []) + _nearby(snap, state):
        if snap.has(name) and snap.ns(name).owns(address):
            return snap.ns(name)
    return None


def matching_devices(snap: Snapshot, sender_state: NetnsState, sender: Link, mac: Optional[str] = None,
                     locate: Optional[Locate] = None) -> List[Tuple[NetnsState, Link]]:
    """Devices on other nodes that could be the other end: same kind, VNI and underlay family, on a
    node the sender's underlay reaches (routing delivers the address it would send to there);
    the device whose MAC is `mac` first (Flannel's neighbour entry names it)."""
    if locate is None:
        return []

    def found_in(states) -> List[Tuple[NetnsState, Link]]:
        found = []
        for state in states:
            for link in state.links:
                if state.name == sender_state.name or not _compatible(sender.kind, link.kind) or \
                        underlay_family(link) != underlay_family(sender) or \
                        (sender.kind in ("vxlan", "geneve") and link.vni != sender.vni):
                    continue
                address = endpoint_address(snap, sender_state, sender, state, link)
                if address and locate(sender_state, address, sender.tunnel_local) == state.name:
                    found.append((state, link))
        return found

    near = [snap.ns(n) for n in _nearby(snap, sender_state) + snap.names() if snap.has(n)]
    found = found_in({s.name: s for s in near}.values()) or found_in(snap.everywhere())
    if mac:
        found.sort(key=lambda f: f[1].mac.lower() != mac.lower())
    return found


def endpoint_address(snap: Snapshot, sender_state: NetnsState, sender: Link, rstate: NetnsState,
                     rdev: Link) -> Optional[str]:
    """The address of rdev's node that the sender's packets should go to: its local address, else
    one of its node's addresses the sender has a route to (on the sender's own subnet first)."""
    if rdev.tunnel_local:
        return rdev.tunnel_local
    family = underlay_family(sender)
    candidates = []
    for addr in rstate.addrs_of(family):
        ip = ipaddress.ip_address(addr.address)
        if ip.is_loopback or ip.is_link_local or rstate.link(addr.ifindex) is None or \
                is_tunnel(rstate.link(addr.ifindex)) or rstate.link(addr.ifindex).master is not None:
            continue
        lookup = fib_lookup(sender_state, addr.address)
        if lookup.ok and lookup.route.type == "unicast":
            near = any(ip in a.network for a in sender_state.addrs_of(family))
            candidates.append((not near, addr.address))
    return sorted(candidates)[0][1] if candidates else None


def far_end(snap: Snapshot, state: NetnsState, link: Link, target: Target, locate: Optional[Locate] = None
            ) -> Optional[Tuple[NetnsState, Link]]:
    """The device the outer packet is meant for: the one on the node that has the target address
    (matching, else the closest); else, when no node with such a device has it, the one other end
    the underlay reaches (so the inner path can still be judged past a broken tunnel)."""
    hint = locate(state, target.dst, link.tunnel_local) if locate else None
    owner = owner_of(snap, target.dst, state, hint)
    if owner is not None and owner.name != state.name:
        outer = Outer(link.kind, link.tunnel_local, target.dst, proto_of(link.kind, 4), target.dport, target.vni,
                      target.key)
        rdev, _ = receiver(owner, outer, link)
        if rdev is not None:
            return owner, rdev
    others = matching_devices(snap, state, link, locate=locate)
    return others[0] if len(others) == 1 else None


# -- the verdict's words for a path that leaves through a tunnel ----------------------------------------

def far_side_command(inner_src: str, inner_dst: str) -> Command:
    """What to run on the far node to see its side of the same ping."""
    return Command(argv_of("bpftools trace-drops --all-netns --src {} --dst {}", inner_src, inner_dst))


def leaving_lines(path: List[Hop]) -> List[str]:
    """For every hop where an outer packet leaves what bpftools can follow: the packet, the
    interface and next hop, whether it was seen leaving (the per-hop count), and what to run on
    the far node (the inner ping's ends are those of the direction's first hop)."""
    lines = []
    for hop in path:
        if hop.action != "leave" or hop.outer is None:
            continue
        first = next(h for h in path if h.direction == hop.direction)
        counted = hop.packets is not None and hop.packets.tx is not None
        seen = f"{hop.packets.tx} {hop.packets.unit} counted leaving" if counted else \
            "not counted leaving (no per-hop counts)"
        lines.append(f"  the {hop.direction} leaves encapsulated: {describe(hop.outer)} through {hop.oif or '?'} in "
                     f"{hop.netns}" + (f" to {hop.nexthop}" if hop.nexthop else "") + f" ({seen})")
        lines.append("  on the far node, run: " + rendered([far_side_command(first.src, first.dst)])[0])
    return lines


def leaving_note(outer: Outer, oif: Link, nexthop: Optional[str], inner_src: str, inner_dst: str) -> str:
    why = oif.kind or "a physical interface"
    return (f"the outer packet {describe(outer)} leaves through {oif.ifname} ({why})"
            + (f" to {nexthop}" if nexthop else "") + f"; on the far node, run: "
            + rendered([far_side_command(inner_src, inner_dst)])[0])


# -- crossing a tunnel, for the walker ------------------------------------------------------------------

class Tunnels:
    """The walker's tunnel crossings. `walker` gives the machinery: `_hop`, `_add`, `_outer_walk`
    (the outer packet through the underlay), `snap`, `result`, `home`, `_locate`."""

    def __init__(self, walker) -> None:
        self.w = walker

    def enter(self, state: NetnsState, dev: Link, mac: Optional[str], arp: bool,
              expected: Optional[Tuple[NetnsState, Link]], src: str, dst: str, size: int,
              **kw) -> Optional[Tuple[NetnsState, Link]]:
        """The ping (inner src -> dst, `size` bytes of IP packet) enters `dev` in `state`, for the
        frame's destination `mac` (L2 tunnels; `arp`: its address must be resolved through the
        tunnel first): the device on the far side it comes out of, or None (the walk stops)."""
        w, direction = self.w, kw["direction"]
        if not dev.admin_up:
            w._stop("broken", f"{dev.ifname} is down")
            return None
        sent = targets(dev, mac)
        for found, to in ([(targets(dev, None), None)] if arp else []) + [(sent, mac)]:   # ARP/NDP goes first
            if not found.found:
                return self._nowhere(state, dev, found, to, src, dst, **kw)
        target = self._pick(sent.found, expected, state, dev)
        # `dev` binds the remote's packets to it (the kernel then assumes an unrouted remote is on-link);
        # FDB entries added without `via` carry no device, so theirs are routed freely
        bound = state.link(dev.tunnel_dev) if dev.tunnel_dev and target.entry is None else None
        lookup = route_get(state, target.dst, dev.tunnel_local, bound.ifindex if bound else None)
        osrc = dev.tunnel_local or (select_source(state, lookup.route, target.dst)
                                    if lookup.route is not None and lookup.route.type == "unicast" else None)
        outer = outer_of(dev, target, osrc, family_of(dst))
        w._hop(direction, state.name, None, dev.ifname, "tunnel", osrc or "", target.dst,
               note=f"encapsulated: {describe(outer)}, by the {target.how(dev)}", outer=outer)
        before = len(w.result.findings)
        end = w._outer_walk(state.name, outer, bound, size + overhead(dev, family_of(target.dst)))
        rstate = w.snap.ns(end) if end is not None else None
        misplaced = self._misplaced(state, dev, target, mac, rstate, **kw)
        if misplaced is not None:
            del w.result.findings[before:]   # the underlay did what it was told: the endpoint is wrong
            w._add(misplaced)
            w._stop("broken", misplaced.detail)
            return None
        if rstate is None:
            return None
        rdev, miss = receiver(rstate, outer, dev)
        if rdev is None or miss is not None:
            finding = self._missed(state, dev, rstate, outer, miss, **kw)
            w._add(finding)
            w._stop("broken", finding.detail)
            return None
        w.result.used_addresses |= {(rstate.name, outer.dst)} | ({(state.name, osrc)} if osrc else set())
        hop = w.result.hops[-1]
        hop.note = f"{outer.dst} is local: {rdev.ifname} decapsulates it"
        w._add(C.check_link(rstate, rdev, f"{NAMES.get(rdev.kind, rdev.kind)} tunnel end", **kw))
        return rstate, rdev

    def _pick(self, found: List[Target], expected: Optional[Tuple[NetnsState, Link]], state: NetnsState,
              dev: Link) -> Target:
        """Of the targets a frame is flooded to, the one towards the station the walk goes to."""
        if expected is not None and len(found) > 1:   # flooded to each: the copy that gets there counts
            owner = next((t for t in found if expected[0].owns(t.dst)), None)
            if owner is not None:
                return owner
            for target in found:
                end = far_end(self.w.snap, state, dev, target, self.w._locate)
                if end is not None and end[0].name == expected[0].name:
                    return target
        return found[0]

    def _nowhere(self, state: NetnsState, dev: Link, found: Targets, mac: Optional[str], src: str, dst: str,
                 **kw) -> None:
        """No target: a multicast group (not followed), or nowhere at all (tunnel_no_fdb)."""
        w, direction = self.w, kw["direction"]
        if found.group:
            outer = Outer(dev.kind, dev.tunnel_local, found.group, proto_of(dev.kind, family_of(dst)), port_of(dev),
                          dev.vni)
            w._hop(direction, state.name, None, dev.ifname, "leave", src, dst, outer=outer,
                   note=f"{dev.ifname} sends it to the multicast group {found.group}: its members cannot be known "
                        "here; not followed")
            w.result.left_machine = f"{dev.ifname} in {state.name} (multicast group {found.group})"
            return None
        finding = self.no_fdb(state, dev, mac, **kw)
        w._add(finding)
        w._hop(direction, state.name, None, dev.ifname, "broken", src, dst, note=finding.detail)
        return None

    def no_fdb(self, state: NetnsState, dev: Link, mac: Optional[str], **kw) -> C.Finding:
        what = f"FDB entry for {mac}" if mac else "default (00:00:00:00:00:00) FDB entry for broadcasts"
        detail = (f"{dev.ifname} ({NAMES.get(dev.kind, dev.kind)}, VNI {dev.vni}) has no remote and no {what} "
                  f"({'the ARP/NDP request' if not mac else 'the frame'} has nowhere to go, so the kernel drops it)")
        fix: List[Argv] = []
        other = matching_devices(self.w.snap, state, dev, mac, self.w._locate)
        # one other end, or the one whose MAC the frame is for (Flannel's): never a guess among several
        if len(other) == 1 or (other and mac and other[0][1].mac.lower() == mac.lower()):
            rstate, rdev = other[0]
            address = endpoint_address(self.w.snap, state, dev, rstate, rdev)
            detail += f"; the other end is {rdev.ifname} in {rstate.name}" + (f" ({address})" if address else "")
            if address:
                fix = fdb_fix(dev, mac or ZERO_MAC, address)
        finding = C.bad(state, "tunnel", "tunnel_no_fdb", detail, fix, dev.ifname, **kw)
        if not fix:
            finding.missing = (f"which node's address {dev.ifname} should send to: " +
                               (f"{len(other)} devices with VNI {dev.vni} could be the other end" if other else
                                f"no other device with VNI {dev.vni} is reachable from {state.name}"))
        return finding

    def _misplaced(self, state: NetnsState, dev: Link, target: Target, mac: Optional[str],
                   rstate: Optional[NetnsState], **kw) -> Optional[C.Finding]:
        """The endpoint is not where the other end is: nobody has it, or its node has no such device,
        while another node does (tunnel_remote_not_local, fixed on the sending side)."""
        if rstate is None and self.w.result.hops[-1].action == "leave":
            return None   # it left the machine: the far side may well be there
        rstate = rstate or owner_of(self.w.snap, target.dst, state)   # the underlay did not get there: who has it
        if rstate is not None and any(_compatible(dev.kind, l.kind) and l is not dev for l in rstate.links):
            return None
        other = [o for o in matching_devices(self.w.snap, state, dev, mac, self.w._locate)
                 if rstate is None or o[0].name != rstate.name]
        if not other:
            return None
        ostate, odev = other[0]
        address = endpoint_address(self.w.snap, state, dev, ostate, odev)
        where = f"{target.dst} is an address of {rstate.name}, which has no {dev.kind} device" if rstate else \
            f"no namespace has the address {target.dst}"
        detail = (f"{dev.ifname} sends the {NAMES.get(dev.kind, dev.kind)} packets to {target.dst} (the "
                  f"{target.how(dev)}), but {where}; the other end, {odev.ifname}" +
                  (f" (VNI {odev.vni})" if odev.vni is not None else "") + f", is in {ostate.name}" +
                  (f" at {address}" if address else ""))
        fix = _repoint(state, dev, target, address) if address else []
        if fix and dev.kind == "vxlan":
            detail += f" (the entry for {target.dst} can go once nothing else uses it)"
        return C.bad(state, "tunnel", "tunnel_remote_not_local", detail, fix, dev.ifname, **kw)

    def _missed(self, state: NetnsState, dev: Link, rstate: NetnsState, outer: Outer, miss: Optional[Miss],
                **kw) -> C.Finding:
        """The outer packet arrives, and no device there takes it: located where it is dropped."""
        if miss is None:
            return C.bad(rstate, "tunnel", "unknown", f"no {dev.kind} device in {rstate.name} takes "
                         f"{describe(outer)}", [], dev.ifname, **kw)
        fix: List[Argv] = []
        alternatives: List[List[Command]] = []
        if miss.cause == "tunnel_id_mismatch" and outer.kind in ("vxlan", "geneve"):
            fix = recreate(rstate, miss.link, vni=outer.vni)
            alternatives = [[in_ns(state.name, a, self.w.home) for a in recreate(state, dev, vni=miss.link.vni)]]
        elif miss.cause == "tunnel_port_mismatch":
            fix = recreate(rstate, miss.link, dstport=outer.dport)
            other_end = recreate(state, dev, dstport=port_of(miss.link))
            alternatives = [[in_ns(state.name, a, self.w.home) for a in other_end]]
        elif miss.cause == "tunnel_remote_not_local" and miss.link.tunnel_local:
            target = Target(outer.dst, outer.dport, outer.vni, outer.key, _entry_for(dev, outer.dst))
            return C.bad(state, "tunnel", miss.cause, f"{miss.detail} (the {describe(outer)})",
                         _repoint(state, dev, target, miss.link.tunnel_local), dev.ifname, **kw)
        finding = C.bad(rstate, "tunnel", miss.cause, f"{describe(outer)} arrives in {rstate.name}: {miss.detail}",
                        fix, miss.link.ifname, **kw)
        finding.alternatives = alternatives
        return finding


def _entry_for(link: Link, dst: str) -> Optional[FdbEntry]:
    return None if link.tunnel_remote == dst else next((e for e in fdb_of(link) if e.dst == dst), None)


def _repoint(state: NetnsState, dev: Link, target: Target, address: str) -> List[Argv]:
    """Send what went to target.dst to `address` too: VXLAN gets one more FDB entry (flooded to
    both, so the fix harms nothing where the old endpoint was right); GENEVE is made again with
    the new remote; an IP tunnel's remote is changed."""
    if dev.kind == "vxlan":
        return fdb_fix(dev, target.entry.mac if target.entry else ZERO_MAC, address, target.dport, target.vni)
    if dev.kind == "geneve":
        return move_remote(state, dev, target.dst, address)
    return [argv_of("ip link set dev {} type {} remote {}", dev.ifname, dev.kind, address)]


def lowered_mtu(sender: Link, mtu: int) -> Argv:
    """The inner side lowered to what the tunnel carries."""
    return argv_of("ip link set dev {} mtu {}", sender.ifname, mtu)


def mtu_finding(state: NetnsState, dev: Link, size: int, sender_state: NetnsState, sender: Link,
                **kw) -> C.Finding:
    """The inner packet does not fit the tunnel device: the fix lowers the inner side (the
    interface that sent it, as CNI plugins size pod interfaces), never raises the tunnel device
    above what its underlay carries."""
    if size <= dev.mtu:
        return C.ok(state, "mtu", f"{size}-byte packets fit the MTU of {dev.ifname} ({dev.mtu})", dev.ifname,
                    kw.get("direction", "request"))
    detail = (f"{size}-byte packets do not fit the {dev.mtu}-byte MTU of {dev.ifname} ({NAMES.get(dev.kind, dev.kind)}"
              f" adds {overhead(dev, underlay_family(dev))} bytes of headers on the underlay); {sender.ifname} in "
              f"{sender_state.name} sends up to {sender.mtu} bytes: its MTU must not exceed {dev.mtu}")
    fix = [in_ns(sender_state.name, lowered_mtu(sender, dev.mtu), kw.get("home"))]
    return C.Finding(state.name, "mtu", False, detail, "mtu", dev.ifname, fix, C.CERTAIN,
                     kw.get("direction", "request"))


def routed_mtu_finding(snap: Snapshot, hops: List[Hop], state: NetnsState, tun: Link, size: int,
                       **kw) -> C.Finding:
    """A routed packet into a tunnel device: the ping's sender is the inner side to lower."""
    first = next(h for h in hops if h.direction == kw["direction"])
    sstate = snap.ns(first.netns)
    sender = sstate.link_by_name(first.oif) if first.oif else None
    if sender is None:
        return C.check_mtu(state, tun, size, "the packet is forwarded with DF set", size, **kw)
    return mtu_finding(state, tun, min(size, sender.mtu), sstate, sender, **kw)


def one_inner_mtu_fix(snap: Snapshot, findings: List[C.Finding], hops: List[Hop], direction: str,
                      home: str) -> None:
    """Where a tunnel is too small for what the ping's sender sends, every MTU that fails in that
    direction has one fix: the sender's MTU lowered to the smallest of them (what a CNI plugin
    gives a pod), not each link raised (a tunnel device cannot carry more than its underlay)."""
    failed = [f for f in findings if f.check == "mtu" and not f.ok and f.direction == direction]
    links = [snap.ns(f.netns).link_by_name(f.ifname) for f in failed]
    first = next((h for h in hops if h.direction == direction and h.oif), None)
    if first is None or not any(is_tunnel(link) for link in links):
        return
    sstate = snap.ns(first.netns)
    sender = sstate.link_by_name(first.oif)
    limit = min(link.mtu for link in links if link)
    fix = [in_ns(sstate.name, lowered_mtu(sender, limit), home)]
    tunnels = ", ".join(f"{link.ifname} ({link.mtu})" for link in links if is_tunnel(link))
    for i, finding in enumerate(failed):
        if not is_tunnel(links[i]):
            finding.detail += (f"; the tunnel on the way, {tunnels}, carries no more either: {sender.ifname} in "
                               f"{sstate.name} must send at most {limit} bytes")
        finding.fix, finding.alternatives = fix, []
        finding.symptom = i > 0   # the same packets, dropped further on: not a fault of its own


def underlay_note(bound: Optional[Link], dst: str, lookup) -> str:
    """A tunnel bound to an underlay device (`dev`): its outer packets leave only by it."""
    if bound is None:
        return ""
    text = f"the tunnel is bound to {bound.ifname} (its `dev`)"
    if lookup.route is not None and lookup.route.table == 0:
        text += f"; no route via {bound.ifname}: the kernel assumes {dst} is on-link"
    return text
