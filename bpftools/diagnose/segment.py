"""Layer 2 as ARP sees it: the stations on the segment behind an interface (the veth peer, every
port of a bridge and what is behind each port, through nested bridges), and which of them
answers ARP for an address (ownership, arp_ignore, arp_filter, NOARP, link state, proxy_arp),
or for an IPv6 address NDP (a usable address of the receiving interface, proxy_ndp).
An owner that arp_ignore or arp_filter keeps silent is the cause `arp_ignore`.

The walker hands a packet only to the station that would answer; when none would, the walk
stops there (`neighbor_unreachable`). Works on a `Snapshot`, like the walker."""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

from ..commands import Argv, argv_of
from ..errors import first_line
from . import macvlan, tunnel, tuntap
from .routing import fib_lookup
from .state import Addr, Link, NetnsState, Snapshot, conf_sysctl, family_of, is_link_local

log = logging.getLogger(__name__)

ARP_IGNORE_NEVER = 8


@dataclass
class Crossing:
    """A bridge the frame crosses: in on `port_in` (None: sent by the bridge device itself), out
    on `port_out` (None: the bridge device itself receives it)."""
    state: NetnsState
    bridge: Link
    port_in: Optional[Link]
    port_out: Optional[Link]


@dataclass
class Station:
    """An interface on the segment that receives the frames: a veth end or a bridge device."""
    state: NetnsState
    link: Link
    crossings: List[Crossing] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.link.ifname} in {self.state.name}"


@dataclass
class Segment:
    stations: List[Station] = field(default_factory=list)
    unseen: List[str] = field(default_factory=list)   # parts of the segment we cannot look into
    programs: List[Tuple[NetnsState, Link]] = field(default_factory=list)   # TAP ports a program (a VM) holds
    idle_taps: List[Tuple[NetnsState, Link]] = field(default_factory=list)  # TAP ports nobody holds
    # tunnel devices whose far end is not here (it leaves the machine, a multicast group): the walk
    # follows the outer packet out through them
    exits: List["Station"] = field(default_factory=list)

    def describe(self, oif: Link) -> str:
        if not self.stations:
            return f"the wire of {oif.ifname} (nothing we can see is connected to it)"   # read as "on …"
        names = ", ".join(s.where for s in self.stations[:4]) + (", …" if len(self.stations) > 4 else "")
        return f"the segment of {oif.ifname}: {names}"


def peer_of(snap: Snapshot, state: NetnsState, link: Link) -> Optional[Tuple[NetnsState, Link]]:
    """The other end of a veth, when its namespace is one we can read."""
    if not link.peer_netns or link.peer_netns.startswith("nsid:") or link.peer_ifindex is None:
        return None
    try:
        pstate = snap.ns(link.peer_netns)
    except Exception as exc:
        log.debug("the peer of %s in %s cannot be read: %s", link.ifname, link.peer_netns, first_line(exc))
        return None
    plink = pstate.link(link.peer_ifindex)
    return (pstate, plink) if plink else None


# Where an address is local, reached from a namespace by routing (the walker's look-ahead):
# (namespace, address, source) -> namespace name, or None. Tunnel ports need it to find the far end.
Locate = tunnel.Locate


def segment(snap: Snapshot, state: NetnsState, oif: Link, locate: Optional[Locate] = None) -> Segment:
    """Every station a broadcast from `oif` reaches (ARP asks all of them), in breadth-first order."""
    seg = Segment()
    seen: Set[Tuple[str, int]] = set()
    walk = _Walk(snap, seg, seen, locate)
    if oif.kind == "bridge":
        walk.bridge(state, oif, None, [])
    elif oif.kind == "veth":
        walk.wire(state, oif, [])
    elif tunnel.is_tunnel(oif):
        _tunnel_port(walk, state, oif, [])
    elif macvlan.is_upper(oif):
        _out_of_parent(walk, state, oif)
    return seg


def _out_of_parent(w: "_Walk", state: NetnsState, child: Link) -> None:
    """A macvlan/macvtap/ipvlan child sends on its parent's wire (siblings: `_through_uppers`)."""
    lower = macvlan.lower_of(w.snap, state, child)
    if lower is not None and lower[1].kind == "veth":
        _wire(w, lower[0], lower[1], [])
    else:
        where = f"{lower[1].ifname} in {lower[0].name}" if lower else "its parent device"
        w.seg.unseen.append(f"the wire of {where} (the parent of {child.ifname} in {state.name})")


@dataclass
class _Walk:
    snap: Snapshot
    seg: Segment
    seen: Set[Tuple[str, int]]
    locate: Optional[Locate]

    def wire(self, state: NetnsState, link: Link, crossings: List[Crossing]) -> None:
        _wire(self, state, link, crossings)

    def bridge(self, bstate: NetnsState, bridge: Link, port_in: Optional[Link], crossings: List[Crossing]) -> None:
        _bridge(self, bstate, bridge, port_in, crossings)


def _wire(w: _Walk, state: NetnsState, link: Link, crossings: List[Crossing]) -> None:
    """Frames leaving `link` (a veth end): where they come out."""
    peer = peer_of(w.snap, state, link)
    if peer is None:
        w.seg.unseen.append(f"the other end of {link.ifname} in {state.name} (a namespace we cannot enter)")
        return
    pstate, plink = peer
    _arrive(w, pstate, plink, crossings)


def _arrive(w: _Walk, state: NetnsState, link: Link, crossings: List[Crossing]) -> None:
    """Frames arriving on `link`: it is a station, or a port of a bridge that floods them on."""
    if link.master is None:
        w.seg.stations.append(Station(state, link, crossings))
        return
    bridge = state.link(link.master)
    if bridge is None or bridge.kind != "bridge":
        w.seg.unseen.append(f"{link.ifname} in {state.name}, enslaved to a {bridge.kind if bridge else '?'} device")
        return
    _bridge(w, state, bridge, link, crossings)


def _bridge(w: _Walk, bstate: NetnsState, bridge: Link, port_in: Optional[Link], crossings: List[Crossing]) -> None:
    if (bstate.name, bridge.ifindex) in w.seen:
        return
    w.seen.add((bstate.name, bridge.ifindex))
    if port_in is not None:
        w.seg.stations.append(Station(bstate, bridge, crossings + [Crossing(bstate, bridge, port_in, None)]))
    for port in bstate.ports(bridge.ifindex):
        if port_in is not None and port.ifindex == port_in.ifindex:
            continue
        through = crossings + [Crossing(bstate, bridge, port_in, port)]
        if port.kind == "veth":
            _wire(w, bstate, port, through)
        elif tunnel.is_tunnel(port):
            _tunnel_port(w, bstate, port, through)
        elif tuntap.is_tuntap(port):
            (w.seg.programs if tuntap.held(port) else w.seg.idle_taps).append((bstate, port))
        else:
            w.seg.unseen.append(f"{port.ifname} in {bstate.name} (a {port.kind or 'physical'} port of "
                                f"{bridge.ifname})")


def _tunnel_port(w: _Walk, state: NetnsState, dev: Link, crossings: List[Crossing]) -> None:
    """A tunnel device (a VXLAN bridge port, Flannel's flannel.1): frames go to the endpoints of its
    FDB entries (or its remote), to the device there meant to take them, and on into its bridge.
    With no endpoint at all, the one other device of its kind and VNI is where they were meant to
    go: the walk gets there and says why they do not (tunnel.Tunnels)."""
    where = f"{dev.ifname} in {state.name} ({tunnel.NAMES.get(dev.kind, dev.kind)}" + \
        (f" VNI {dev.vni})" if dev.vni is not None else ")")
    ends, dsts = [], []
    for target in tunnel.targets(dev).found + [t for e in tunnel.fdb_of(dev) if e.mac != tunnel.ZERO_MAC
                                               for t in tunnel.targets(dev, e.mac).found]:
        if target.dst in dsts:
            continue
        dsts.append(target.dst)
        end = tunnel.far_end(w.snap, state, dev, target, w.locate)
        if end is None:
            w.seg.unseen.append(f"the {tunnel.NAMES.get(dev.kind, dev.kind)} endpoint {target.dst} of {where}")
            w.seg.exits.append(Station(state, dev, crossings))
        elif end not in ends:
            ends.append(end)
    group = tunnel.targets(dev).group
    if group:
        w.seg.unseen.append(f"the multicast group {group} of {where}")
        w.seg.exits.append(Station(state, dev, crossings))
    if not dsts and not group:
        others = tunnel.matching_devices(w.snap, state, dev, locate=w.locate)
        if len(others) == 1:
            ends.append(others[0])
        else:   # the kernel drops what it gets here, wherever the other end is (tunnel_no_fdb, on this node)
            w.seg.exits.append(Station(state, dev, crossings))
    for rstate, rdev in ends:
        _arrive(w, rstate, rdev, crossings)


# -- who answers ---------------------------------------------------------------------------------------

@dataclass
class Answer:
    """Why a station does (ok) or does not answer ARP for an address."""
    station: Station
    ok: bool
    detail: str
    cause: str = "neighbor_unreachable"
    fix: List[Argv] = field(default_factory=list)   # in the station's namespace
    proxy: bool = False


@dataclass
class Resolution:
    answer: Optional[Answer]        # the station that answers, or the owner that refuses
    segment: Segment

    @property
    def station(self) -> Optional[Station]:
        return self.answer.station if self.answer and self.answer.ok else None


def _in_subnet(address: str, addr: Addr) -> bool:
    return ipaddress.ip_address(address) in addr.network


def answer(station: Station, target: str, sender: Optional[str]) -> Optional[Answer]:
    """ARP (arp_process) at one station: None when the station has nothing to do with `target`."""
    if family_of(target) == 6:
        return ndp_answer(station, target)
    st, link = station.state, station.link
    owner = st.owns(target)
    proxy = proxy_arp_reason(st, link, target, sender) if owner is None else None
    if owner is None and not proxy:
        return None
    blocked = _blocked_on_the_way(station)
    if blocked is not None:
        return blocked
    if link.noarp:
        return Answer(station, False, f"{link.ifname} in {st.name} has ARP turned off (NOARP), so nobody answers "
                      f"who-has {target}", fix=[argv_of("ip link set dev {} arp on", link.ifname)])
    if proxy and not st.forwarding(link.ifname):
        return Answer(station, False, f"{station.where} would answer ARP for {target} ({proxy}), but it does not "
                      f"forward (net.ipv4.conf.{link.ifname}.forwarding = 0): the kernel proxies only on a "
                      "forwarding interface", fix=[argv_of("sysctl -w {}=1", conf_sysctl(link.ifname, "forwarding"))])
    if proxy:
        delay = st.sysctl(f"net.ipv4.neigh.{link.ifname}.proxy_delay")
        later = f"; after up to {delay * 10} ms (proxy_delay)" if delay else ""
        return Answer(station, True, f"{station.where} answers ARP for {target} ({proxy}{later})", proxy=True)
    ignore = st.arp_ignore(link.ifname)
    reset = [argv_of("sysctl -w net.ipv4.conf.all.arp_ignore=0"),
             argv_of("sysctl -w {}=0", conf_sysctl(link.ifname, "arp_ignore"))]
    if ignore >= ARP_IGNORE_NEVER:
        return Answer(station, False, f"arp_ignore = {ignore} on {link.ifname} in {st.name}: it answers no ARP "
                      "request", "arp_ignore", reset)
    if ignore in (1, 2) and owner.ifindex != link.ifindex:
        return Answer(station, False, f"{target} is on {st.ifname(owner.ifindex)}, not on {link.ifname} where the "
                      f"ARP request arrives, and arp_ignore = {ignore} answers only for addresses of the receiving "
                      "interface", "arp_ignore", reset)
    if ignore == 2 and sender and not _in_subnet(sender, owner):
        return Answer(station, False, f"arp_ignore = 2 on {link.ifname} in {st.name}: the asker {sender} is not in "
                      f"{target}'s subnet {owner.network}", "arp_ignore", reset)
    if sender and (st.conf("all", "arp_filter") or st.conf(link.ifname, "arp_filter")):
        back = fib_lookup(st, sender, target)
        if back.route is not None and back.route.type == "unicast" and back.route.oif != link.ifindex:
            return Answer(station, False, f"arp_filter = 1 in {st.name}: the route back to {sender} leaves by "
                          f"{st.ifname(back.route.oif)}, not {link.ifname} where the ARP request arrives",
                          "arp_ignore", [argv_of("sysctl -w net.ipv4.conf.all.arp_filter=0"),
                                         argv_of("sysctl -w {}=0", conf_sysctl(link.ifname, "arp_filter"))])
    return Answer(station, True, f"{target} answers ARP on {station.where}")


def ndp_answer(station: Station, target: str) -> Optional[Answer]:
    """A neighbour solicitation at one station (ndisc_recv_ns): answered for a usable address of
    the receiving interface only (no arp_ignore to tune), or by proxy_ndp with a proxy entry."""
    st, link = station.state, station.link
    owner = st.owns(target)
    proxy = owner is None and st.proxy_ndp(link.ifname, target)
    if owner is None and not proxy:
        return None
    blocked = _blocked_on_the_way(station)
    if blocked is not None:
        return blocked
    if proxy:
        return Answer(station, True, f"{station.where} answers NDP for {target} (proxy_ndp and a proxy entry)",
                      proxy=True)
    if owner.ifindex != link.ifindex:
        return Answer(station, False, f"{target} is on {st.ifname(owner.ifindex)}, not on {link.ifname} where the "
                      "neighbour solicitation arrives: IPv6 answers only for addresses of the receiving interface")
    if owner.dadfailed:
        return Answer(station, False, f"{target} on {station.where} failed duplicate address detection (another "
                      "host has it), so it is never used or answered")
    if owner.tentative:
        return Answer(station, False, f"{target} on {station.where} is tentative (duplicate address detection has "
                      "not finished): it answers nothing yet")
    return Answer(station, True, f"{target} answers NDP on {station.where}")


def _blocked_on_the_way(station: Station) -> Optional[Answer]:
    """A link that is down between the sender and the station: the ARP request never arrives."""
    for c in station.crossings:
        for link, role in ((c.bridge, "bridge"), (c.port_out, f"port of {c.bridge.ifname}")):
            if link is not None and not link.admin_up:
                return Answer(_at(station, c.state, link), False, f"{link.ifname} ({role}) in {c.state.name} is "
                              "administratively down", "link_down", [argv_of("ip link set dev {} up", link.ifname)])
    if not station.link.admin_up:
        return Answer(station, False, f"{station.link.ifname} in {station.state.name} is administratively down",
                      "link_down", [argv_of("ip link set dev {} up", station.link.ifname)])
    return None


def _at(station: Station, state: NetnsState, link: Link) -> Station:
    return Station(state, link, station.crossings)


def _proxy_route(state: NetnsState, target: str, sender: Optional[str], link: Link):
    """The route the kernel looks up for a proxied target (ip_route_input: from the asker, in on
    the asking interface); None unless it is a unicast route with a device."""
    route = fib_lookup(state, target, sender, link.ifname).route
    return route if route is not None and route.type == "unicast" and route.oif is not None else None


def proxy_arp_reason(state: NetnsState, link: Link, target: str, sender: Optional[str]) -> Optional[str]:
    """Why arp_process would answer for `target`, an address of another host, on `link` (besides
    forwarding, checked by the caller): proxy_arp with the target routed out of another interface
    of a different medium (arp_fwd_proxy), proxy_arp_pvlan with it routed back out of the same one
    (arp_fwd_pvlan), or a proxy entry (`ip neigh add proxy`) with it routed elsewhere; None: it would not."""
    route = _proxy_route(state, target, sender, link)
    if route is None:
        return None
    if route.oif == link.ifindex:
        return "proxy_arp_pvlan" if state.proxy_arp_pvlan(link.ifname) and sender != target else None
    if state.proxy_entry(link.ifindex, target):
        return "a proxy entry"
    if not state.proxy_arp(link.ifname):
        return None
    medium = state.medium_id(link.ifname)
    out = state.ifname(route.oif)
    if medium == -1 or (medium and out is not None and state.medium_id(out) == medium):
        return None
    return f"proxy_arp: it routes {target} out of {out}"


def proxy_switched_off(station: Station, target: str, sender: Optional[str]) -> Optional[Answer]:
    """A router on the segment that routes `target` out of another interface but does not answer
    for it: with proxy_arp on (IPv6: proxy_ndp and a proxy entry) it would. Where a gateway
    nobody owns is the next hop (routed pods: a link-local gateway answered by the node's veth),
    that interface is where the fix goes."""
    st, link = station.state, station.link
    six = family_of(target) == 6
    if st.owns(target) is not None or not st.forwarding(link.ifname, 6 if six else 4) or link.noarp:
        return None
    route = _proxy_route(st, target, sender, link)
    if route is None or route.oif == link.ifindex or (not six and st.medium_id(link.ifname) == -1):
        return None
    if six:
        fix = [argv_of("sysctl -w {}=1", conf_sysctl(link.ifname, "proxy_ndp", 6))] + \
            ([] if st.proxy_entry(link.ifindex, target) else [argv_of("ip -6 neigh add proxy {} dev {}", target,
                                                                        link.ifname)])
        what = "proxy_ndp is off or it has no proxy entry for it"
    else:
        fix = [argv_of("sysctl -w {}=1", conf_sysctl(link.ifname, "proxy_arp"))]
        what = f"proxy_arp is off on {link.ifname}"
    return Answer(station, False, f"nobody owns {target}; {station.where} routes it out of "
                  f"{st.ifname(route.oif)} and would answer for it by proxy, but {what}", fix=fix, proxy=True)


def resolve(snap: Snapshot, state: NetnsState, oif: Link, target: str, sender: Optional[str],
            locate: Optional[Locate] = None) -> Resolution:
    """The station that answers ARP for `target` asked through `oif`; else the owner that would
    not answer (and why); else nobody (answer None)."""
    seg = segment(snap, state, oif, locate)
    refused = None
    for station in seg.stations:
        if station.state.name == state.name and station.link.ifindex == oif.ifindex:
            continue
        found = answer(station, target, sender)
        if found is None:
            continue
        if found.ok:
            return Resolution(found, seg)
        refused = refused or found
    upper = _through_uppers(snap, state, oif, seg, target, sender)
    if upper is not None and upper.ok:
        return Resolution(upper, seg)
    refused = refused or upper
    if refused is None:   # a router that would answer by proxy, if proxying were on
        refused = next((p for p in (proxy_switched_off(s, target, sender) for s in seg.stations
                                    if not (s.state.name == state.name and s.link.ifindex == oif.ifindex)) if p), None)
    if refused is None and seg.idle_taps and not seg.unseen and not seg.programs:
        tstate, tap = seg.idle_taps[0]   # the owner may be the VM behind it, which is down
        refused = Answer(Station(tstate, tap), False, f"nobody on the segment has {target}; the one place it may be "
                         f"is behind {tap.ifname}: {tuntap.unheld_detail(tap)}", "tun_no_program")
    if refused is None and is_link_local(target):
        # a link that is down has no IPv6 link-local address (the kernel removes it): the owner may be there
        refused = next((b for b in (_blocked_on_the_way(s) for s in seg.stations
                                    if not (s.state.name == state.name and s.link.ifindex == oif.ifindex)) if b), None)
    return Resolution(refused, seg)


# -- macvlan, macvtap, ipvlan ---------------------------------------------------------------------------

def _through_uppers(snap: Snapshot, state: NetnsState, oif: Link, seg: Segment, target: str,
                    sender: Optional[str]) -> Optional[Answer]:
    """Who answers for `target` among macvlan/macvtap/ipvlan children: the siblings of a child
    that asks, the children of a station on the wire (frames for their MAC reach them), and the
    isolation between a parent and its children (`macvlan_parent_isolation`)."""
    lower = macvlan.lower_of(snap, state, oif)
    if lower is not None:
        pstate, parent = lower
        for sstate, sibling in macvlan.uppers_of(snap, pstate, parent):
            if (sstate.name, sibling.ifindex) == (state.name, oif.ifindex) or sstate.owns(target) is None:
                continue
            if macvlan.siblings_talk(oif, sibling):
                return answer(Station(sstate, sibling), target, sender)
            fixed = (state, oif) if macvlan.mode_fix(oif) else (sstate, sibling)
            return Answer(Station(*fixed), False, f"{target} is on {sibling.ifname} in {sstate.name}, a sibling of "
                          f"{oif.ifname} (both children of {parent.ifname} in {pstate.name}): "
                          f"{macvlan.apart_why(oif, sibling)}", "macvlan_mode", macvlan.mode_fix(fixed[1]))
        if pstate.owns(target) is not None:
            return _isolated(pstate, parent, state, oif, sender, target, towards_parent=True)
    for station in seg.stations:
        for cstate, child in macvlan.uppers_of(snap, station.state, station.link):
            if cstate.owns(target) is not None:
                return answer(Station(cstate, child, station.crossings), target, sender)
    if oif.kind in ("veth", ""):   # a parent asking for its own child
        for cstate, child in macvlan.uppers_of(snap, state, oif):
            if cstate.owns(target) is not None:
                return _isolated(state, oif, cstate, child, target, target, towards_parent=False)
    return None


def _isolated(pstate: NetnsState, parent: Link, cstate: NetnsState, child: Link, child_address: Optional[str],
              target: str, towards_parent: bool) -> Answer:
    """A parent and its child never exchange frames; the fix is a shim on the parent's side."""
    way = f"{child.ifname} in {cstate.name} asks for its parent's address" if towards_parent else \
        f"{target} is on {child.ifname} in {cstate.name}, {_a(child.kind)} ({child.mode or '?'} mode) child of " \
        f"{parent.ifname}"
    fix = macvlan.shim_fix(pstate, parent, child, child_address)
    how = (f"; {_a(child.kind)} shim on {parent.ifname} here ({macvlan.shim_name(parent)}, bridge mode) with a /32 "
           "route to the child reaches it as a sibling") if fix else ""
    return Answer(Station(pstate, parent), False, f"{way}: {_a(child.kind)} child never exchanges frames with its "
                  f"parent {parent.ifname} in {pstate.name} (the kernel sends the child's frames to the wire or to "
                  f"siblings, never up the parent's stack){how}", "macvlan_parent_isolation", fix)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
