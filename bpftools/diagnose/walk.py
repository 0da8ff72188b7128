"""The static path walk: from the source namespace, follow routing decisions, veth peers
(across namespaces), bridges and forwarding namespaces to the destination, then walk the
reply back; run the checks of `checks.py` at every hop. Works on a `Snapshot`, so unit
tests feed it recorded namespace state. IPv4 and IPv6 alike: the family is the destination's
(IPv6: NDP for ARP, no reverse-path filter, routers never fragment, link-local destinations
leave by their %scope interface)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

from . import checks as C
from . import tuntap
from ..commands import in_ns
from .firewall import Packet
from .loops import Pass, loop_finding
from .macvlan import is_upper
from .records import Hop, Outer
from .routing import fib_lookup, route_get, select_source
from .segment import Station, peer_of, resolve, segment
from .suggest import suggest_routes
from .state import Link, NetnsState, Snapshot, family_of, is_link_local
from .tunnel import (L2_KINDS, L3_KINDS, Tunnels, describe, is_tunnel, leaving_note, mtu_finding, one_inner_mtu_fix,
                     routed_mtu_finding, underlay_note)


ICMP_HEADER = 8
IP_HEADER = {4: 20, 6: 40}
ECHO_TYPES = {4: {"request": 8, "reply": 0}, 6: {"request": 128, "reply": 129}}


@dataclass
class WalkResult:
    hops: List[Hop] = field(default_factory=list)
    findings: List[C.Finding] = field(default_factory=list)
    src: Optional[str] = None
    dst_netns: Optional[str] = None
    request_delivered: bool = False
    reply_delivered: bool = False
    left_machine: Optional[str] = None
    arrival_ifindex: Optional[int] = None   # where the echo request entered DST's namespace
    family: int = 4
    broadcast: bool = False                 # DST is a broadcast address of the source's subnet (ping -b)
    handed_to: Optional[str] = None         # "PID N (comm) through tun0": the program the path ends in
    # what the working part of the path uses: (netns, address) of the ping's ends, and
    # (netns, "dst/len", table) of every route a hop took; no fix may delete these
    used_addresses: Set[Tuple[str, str]] = field(default_factory=set)
    used_routes: Set[Tuple[str, str, int]] = field(default_factory=set)

    @property
    def namespaces(self) -> List[str]:
        seen: List[str] = []
        for hop in self.hops:
            if hop.netns not in seen:
                seen.append(hop.netns)
        return seen


def _landing(station: Station, i: int) -> Tuple[NetnsState, Link]:
    """Where a frame crossing the tunnel after crossing i (-1: before any) should come out."""
    if i + 1 < len(station.crossings):
        nxt = station.crossings[i + 1]
        return nxt.state, nxt.port_in
    return station.state, station.link


def _role(link: Link, sender: Link) -> str:
    if is_tunnel(link):
        return f"{link.kind} device" + (f" (VNI {link.vni})" if link.vni is not None else "")
    return f"veth peer of {sender.ifname}"


class Walker:
    def __init__(self, snapshot: Snapshot, payload: int = 56, max_hops: int = 16, home: str = C.HOST_LABEL):
        self.snap = snapshot
        self.bound: Optional[Link] = None
        self.probing = False   # a look-ahead walk (is the route back any good?): no look-aheads of its own
        self.payload = payload
        self.size = payload + ICMP_HEADER + IP_HEADER[4]
        self.max_hops = max_hops
        self.home = home
        self.result = WalkResult()
        self.outer: Optional[Outer] = None   # walking a tunnel's outer packet through the underlay
        self.tunnels = Tunnels(self)

    # -- entry point -------------------------------------------------------------------------
    def walk(self, src_ns: str, dst: str, src: Optional[str] = None, device: Optional[str] = None,
             scope: Optional[str] = None) -> WalkResult:
        """The ping's path; `src` and `device` are ping's -I ADDR and -I IFACE (SO_BINDTODEVICE);
        `scope`: a link-local destination's %IFACE."""
        res = self._walk(src_ns, dst, src, device, scope)
        for direction in ("request", "reply"):
            one_inner_mtu_fix(self.snap, res.findings, res.hops, direction, self.home)
        for finding in res.findings:
            finding.fix = self._keeping_used(finding.fix, finding)
            finding.alternatives = [self._keeping_used(fix, finding) for fix in finding.alternatives]
        return res

    def _keeping_used(self, fix, finding: C.Finding):
        """The fix without commands that delete what the working part of the path uses."""
        res = self.result
        return [cmd for cmd in fix if not C.deletes_used(cmd, finding, res.used_addresses, res.used_routes)]

    def _walk(self, src_ns: str, dst: str, src: Optional[str], device: Optional[str],
              scope: Optional[str] = None) -> WalkResult:
        res = self.result
        res.family = family_of(dst)
        self.size = self.payload + ICMP_HEADER + IP_HEADER[res.family]
        state = self.snap.ns(src_ns)
        self.bound = state.link_by_name(device) if device else None
        via = state.link_by_name(scope) if scope else None
        if scope and via is None:
            self._hop("request", src_ns, None, scope, "broken", src or "", dst, note=f"no interface {scope} here")
            return res
        first_oif = self.bound or via
        first = route_get(state, dst, src, first_oif.ifindex if first_oif else None)
        if src is None and first.route is not None and first.route.type in ("unicast", "broadcast"):
            src = select_source(state, first.route, dst)
        res.src = src or dst
        if first.route is not None and first.route.type == "broadcast" and state.link(first.route.oif):
            return self._broadcast(state, state.link(first.route.oif), res.src, dst)
        end = self._direction("request", src_ns, res.src, dst, None, self.bound, via)
        if end is None:
            return res
        res.request_delivered = True
        res.dst_netns = end
        # an IPv6 reply to a link-local source leaves by the link the request came in on
        arrival = self.snap.ns(end).link(res.arrival_ifindex) if is_link_local(res.src) else None
        back = self._direction("reply", end, dst, res.src, None, scope=arrival)
        if self.bound is not None and back == src_ns and self.result.hops[-1].iif is None:
            local = fib_lookup(self.snap.ns(back), res.src).route
            hop = self.result.hops[-1]
            hop.note = (f"{res.src} is local: table local routes the reply over lo; the kernel gives it the local "
                        f"route's device ({state.ifname(local.oif) if local else '?'}) as its input interface, "
                        f"so the socket bound to {self.bound.ifname} receives it")
        res.reply_delivered = back == src_ns
        res.used_addresses |= {(src_ns, res.src), (end, dst)}
        if back is not None and back != src_ns:
            self._add(C.check_stray_source(self.snap.ns(back), src_ns, res.src, home=self.home))
        return res

    # -- helpers -------------------------------------------------------------------------------
    def _add(self, finding: Optional[C.Finding]) -> Optional[C.Finding]:
        if finding is not None:
            self.result.findings.append(finding)
        return finding

    def _bad(self, *args, **kw) -> C.Finding:
        return C.bad(*args, home=self.home, **kw)

    def _hop(self, *args, **kw) -> Hop:
        if self.outer is not None:   # an underlay hop: it carries the outer packet
            kw.setdefault("outer", self.outer)
        hop = Hop(*args, **kw)
        self.result.hops.append(hop)
        return hop

    # -- a broadcast ping -------------------------------------------------------------------------
    def _broadcast(self, state: NetnsState, oif: Link, src: str, dst: str) -> WalkResult:
        """`ping -b` to a subnet's broadcast address: every station on oif's segment with an
        address in that subnet receives it, and answers unless it ignores broadcast echoes; the
        first that answers is followed back (its reply comes from its own address)."""
        res, kw = self.result, {"direction": "request", "home": self.home}
        res.broadcast = True
        self._hop("request", state.name, None, oif.ifname, "send", src, dst, dst, note=f"{dst} is a broadcast")
        self._add(C.check_link(state, oif, "outgoing interface", **kw))
        receivers = []
        for station in segment(self.snap, state, oif).stations:
            own = next((a for a in station.state.addrs_on(station.link.ifindex)
                        if a.prefixlen < 31 and str(a.network.broadcast_address) == dst), None)
            if own is not None and station.link.up:
                receivers.append((station, own.address, C.check_echo(station.state, dst, broadcast=True, **kw)))
        answering = [(s, a, f) for s, a, f in receivers if f.ok]
        if not answering:
            for _, _, finding in receivers:
                self._add(finding)
            note = "nobody on the segment answers" if receivers else f"nobody on the segment is in {dst}'s subnet"
            self._hop("request", state.name, None, oif.ifname, "broken", src, dst, dst, note=note)
            return res
        station, address, finding = answering[0]
        self._add(finding)
        self._hop("request", station.state.name, station.link.ifname, None, "deliver", src, dst,
                  note=f"{station.where} receives the broadcast ({len(answering)} of {len(receivers)} answer)")
        res.request_delivered, res.dst_netns, res.arrival_ifindex = True, station.state.name, station.link.ifindex
        res.reply_delivered = self._direction("reply", station.state.name, address, src, None) == state.name
        return res

    # -- one direction ---------------------------------------------------------------------------
    def _direction(self, direction: str, ns: str, src: str, dst: str, iif: Optional[Link],
                   bound: Optional[Link] = None, scope: Optional[Link] = None) -> Optional[str]:
        """Walk until dst is local (returns that namespace) or the walk cannot go on (None).
        `bound`: the sending socket is bound to this device; `scope`: the link-local destination's
        interface (both for the first lookup only)."""
        kw = {"direction": direction, "home": self.home}
        came_from: Optional[str] = None   # the namespace the packet arrived from
        family = family_of(dst)
        icmp = ECHO_TYPES[family][direction]
        if self.outer is None:   # an outer packet's size is the inner one's plus the tunnel's headers
            self.size = self.payload + ICMP_HEADER + IP_HEADER[family]
        ctstate = "NEW" if direction == "request" else "ESTABLISHED"
        no_route = "tunnel_underlay_route" if self.outer else "no_route" if direction == "request" else \
            "no_return_route"
        passes: List[Pass] = []   # the namespaces passed and the route taken in each (routing loops)
        for _ in range(self.max_hops):
            state = self.snap.ns(ns)
            if iif is None:
                first_oif = bound or scope
                lookup = route_get(state, dst, src, first_oif.ifindex if first_oif else None)
                if lookup.route is not None and lookup.route.type == "local":
                    if direction == "request" and self.outer is None:
                        self._add(C.check_echo(state, dst, "ipv6" if family == 6 else "ipv4", **kw))
                    self._hop(direction, ns, None, "lo", "decap" if self.outer else "deliver", src, dst,
                              note=f"{dst} is local")
                    return ns
                bypass = self._bound_note(state, bound, dst, lookup) if self.outer is None else \
                    underlay_note(bound, dst, lookup)
                bound = scope = None
                prefer = self.result.arrival_ifindex if direction == "reply" else None
                self._route_check(state, lookup, dst, no_route, prefer, **kw)
                if not lookup.ok:
                    self._hop(direction, ns, None, None, "broken", src, dst, note=f"no route to {dst}")
                    return None
                oif = state.link(lookup.route.oif)
                self._add(self._firewall(state, Packet("output", src, dst, icmp, "", oif.ifname if oif else "",
                                                       ctstate), **kw))
                if oif is not None and self.outer is None:   # the sender fragments what its link cannot take
                    self.size = min(self.size, oif.mtu)
                action = "send"
            else:
                bypass = ""
                lookup = fib_lookup(state, dst, src, iif.ifname)
                if lookup.route is not None and lookup.route.type == "local":
                    self._add(self._check_source(state, src, dst, iif, "packet", came_from == ns, **kw))
                    self._add(self._firewall(state, Packet("input", src, dst, icmp, iif.ifname, "", ctstate), **kw))
                    if self.outer is not None:
                        self._hop(direction, ns, iif.ifname, None, "decap", src, dst, note=f"{dst} is local")
                        return ns
                    if direction == "request":
                        self._add(C.check_echo(state, dst, "ipv6" if family == 6 else "ipv4", **kw))
                    self._hop(direction, ns, iif.ifname, None, "deliver", src, dst, note=f"{dst} is local")
                    if direction == "request":
                        self.result.arrival_ifindex = iif.ifindex
                    return ns
                if any(p.netns == ns for p in passes):   # back in a namespace it passed: a routing loop
                    self._add(loop_finding(passes, ns, dst, self.snap, self._suggest_routes, direction, self.home))
                    self._hop(direction, ns, iif.ifname, None, "broken", src, dst,
                              note=f"back in {ns}, which it already passed: a routing loop")
                    return None
                self._add(C.check_forwarding(state, iif, family, **kw))
                self._add(self._check_source(state, src, dst, iif, "packet", came_from == ns, **kw))
                self._route_check(state, lookup, dst, no_route, iif.ifindex, **kw)
                if not lookup.ok:
                    self._hop(direction, ns, iif.ifname, None, "broken", src, dst, note=f"no route to {dst}")
                    return None
                oif = state.link(lookup.route.oif)
                self._add(self._firewall(state, Packet("forward", src, dst, icmp, iif.ifname,
                                                       oif.ifname if oif else "", ctstate), **kw))
                if self.outer is not None:
                    pass   # outer packets are sent without DF: the sender and routers fragment them
                elif is_tunnel(oif) and (family == 6 or direction == "request"):
                    self._add(routed_mtu_finding(self.snap, self.result.hops, state, oif, self.size, **kw))
                elif oif is not None and family == 6:
                    self._add(C.check_mtu(state, oif, self.size, "IPv6 routers never fragment: the router drops "
                                          "it and sends ICMPv6 packet-too-big to the source, which must fragment "
                                          "(if that message is filtered on the way, the path is a black hole)",
                                          max(self.size, 1500), **kw))
                elif oif is not None and direction == "request":
                    # ping sets DF on IPv4; echo replies do not
                    self._add(C.check_mtu(state, oif, self.size, "the echo request is forwarded with DF set",
                                          max(self.size, 1500), **kw))
                action = "forward"
            nexthop = lookup.route.gateway or dst
            route = lookup.route
            self.result.used_routes.add((ns, f"{route.dst}/{route.dst_len}", route.table))
            if oif is None:  # e.g. a nexthop object (`ip nexthop`), which we do not resolve
                self._hop(direction, ns, iif.ifname if iif else None, None, "leave", src, dst, nexthop,
                          note="the route's output device is not known here; not followed further")
                return None
            self._hop(direction, ns, iif.ifname if iif else None, oif.ifname, action, src, dst, nexthop, note=bypass)
            passes.append(Pass(ns, route, oif))
            nxt = self._egress(state, oif, lookup.route, nexthop, src, dst, iif is None, **kw)
            if nxt is None:
                return None
            came_from = ns
            ns, iif = nxt
        self._hop(direction, ns, None, None, "broken", src, dst, note="too many hops (routing loop?)")
        return None

    def _check_source(self, state: NetnsState, src: str, dst: str, iif: Link, what: str, own: bool,
                      **kw) -> C.Finding:
        """The reverse-path check; when strict rp_filter fails because the route back to the source
        does not lead back to it at all, the route is the fault (loosening rp_filter would only let
        the request through to replies that never get back)."""
        suggestion = self._suggest_route(state.name, src, iif.ifindex)
        finding = C.check_source(state, src, dst, iif, what, suggestion, own=own, **kw)
        if finding.cause != "rp_filter" or self.probing:
            return finding
        back = fib_lookup(state, src, dst).route
        if back is None or back.type != "unicast" or self._reaches(state.name, dst, src):
            return finding
        return C.check_return_route(state, src, iif, back, suggestion, what, **kw)

    def _look_ahead(self, direction: str, ns: str, src: str, dst: str) -> Optional[str]:
        """Where a packet from ns to dst ends up (a walk of its own whose findings are dropped)."""
        probe = Walker(self.snap, self.payload, self.max_hops, self.home)
        probe.probing = True
        return probe._direction(direction, ns, src, dst, None)

    def _reaches(self, ns: str, src: str, dst: str) -> bool:
        """Does a packet from ns (source src) reach the namespace that owns dst?"""
        end = self._look_ahead("reply", ns, src, dst)
        return end is not None and end != ns and self.snap.ns(end).owns(dst) is not None

    def _locate(self, state: NetnsState, address: str, src: Optional[str]) -> Optional[str]:
        """Where a packet from state to address is delivered (a VXLAN port's remote VTEP)."""
        return None if self.probing else self._look_ahead("request", state.name, src or address, address)

    @staticmethod
    def _bound_note(state: NetnsState, bound: Optional[Link], dst: str, lookup) -> str:
        """SO_BINDTODEVICE: the output lookup takes only routes through the bound device, so it skips
        the local route of an address on another device, and the packet leaves by the bound one."""
        if bound is None:
            return ""
        text = f"bound to {bound.ifname} (ping -I {bound.ifname}, SO_BINDTODEVICE)"
        local = fib_lookup(state, dst).route
        if local is not None and local.type == "local":
            text += (f": {dst} is an address of this namespace (on {state.ifname(local.oif)}), but the lookup "
                     f"skips its local route (device {state.ifname(local.oif)}) and sends the request out of "
                     f"{bound.ifname}")
        if lookup.route is not None and lookup.route.table == 0:
            text += f"; no route via {bound.ifname}: the kernel assumes {dst} is on-link"
        return text

    # -- leaving a namespace ------------------------------------------------------------------------
    def _egress(self, state: NetnsState, oif: Link, route, nexthop: str, src: str, dst: str,
                originated: bool, **kw) -> Optional[Tuple[str, Link]]:
        direction = kw["direction"]
        self._add(C.check_link(state, oif, "outgoing interface", **kw))
        for finding in C.check_programs(state, oif, **kw):
            self._add(finding)
        if oif.master is not None:
            self._add(C.check_bridge_port_address(state, oif, **kw))
        arp_src = src if state.owns(src) else self._arp_source(state, oif, nexthop)
        if oif.kind in L3_KINDS:   # no link layer: the packet goes to the tunnel's endpoint
            landed = self.tunnels.enter(state, oif, None, False, None, src, dst, self.size, **kw)
            return (landed[0].name, landed[1]) if landed else None
        if oif.kind == "tun":
            return self._to_program(state, oif, **kw)
        if oif.ifname == "lo":   # `ping -I lo`: the kernel delivers it locally; which socket sees the reply
            self._stop("leave", f"sent through lo (bound to it): delivered back into {state.name} as local; "
                       "not modelled further")
            return None
        if oif.kind not in ("veth", "bridge") + L2_KINDS and not is_upper(oif):
            self._leave(state, oif, nexthop, src, dst, direction)
            return None
        station = self._next_hop_station(state, oif, route, nexthop, arp_src, src, dst, **kw)
        if station is None:
            return None
        rstate, receiver = station.state, station.link
        if not self._cross(state, oif, station, src, dst, nexthop, **kw):
            return None
        self._add(C.check_neighbour(state, oif, nexthop, receiver, rstate, **kw))
        entry = state.neighbour(oif.ifindex, nexthop)
        asks = not oif.noarp and not (entry is not None and entry.state in ("permanent", "noarp"))
        if arp_src and asks and family_of(nexthop) == 4:  # NDP has no source validation
            self._add(self._check_source(rstate, arp_src, nexthop, receiver, "ARP request", rstate.name == state.name,
                                         **kw))
        return rstate.name, receiver

    def _leave(self, state: NetnsState, oif: Link, nexthop: str, src: str, dst: str, direction: str) -> None:
        """The path leaves through an interface we cannot follow (a physical NIC, a dummy)."""
        why = oif.kind or "a physical interface"
        note = f"the path leaves through {oif.ifname} ({why}); not followed further"
        self.result.left_machine = f"{oif.ifname} in {state.name}"
        if self.outer is not None:
            note = leaving_note(self.outer, oif, nexthop, *self._inner_ends(direction))
            self.result.left_machine += f" ({note})"
        last = self.result.hops[-1] if self.result.hops else None
        if last is not None and (last.netns, last.oif, last.direction) == (state.name, oif.ifname, direction):
            last.action, last.note = "leave", f"{last.note}; {note}" if last.note else note   # the hop that sends it
            return
        self._hop(direction, state.name, None, oif.ifname, "leave", src, dst, nexthop, note=note)

    def _inner_ends(self, direction: str) -> Tuple[str, str]:
        """The ping's own source and destination in this direction (under the outer packets)."""
        first = next(h for h in self.result.hops if h.direction == direction)
        return first.src, first.dst

    def _firewall(self, state: NetnsState, pkt: Packet, **kw) -> C.Finding:
        """The ping's packet at a netfilter hook, or the tunnel's outer packet that carries it."""
        if self.outer is None:
            return C.check_firewall(state, pkt, **kw)
        pkt.proto, pkt.dport = self.outer.proto, self.outer.dport
        if pkt.proto == "udp":   # its source port hashes the inner flow: each way is a new flow
            pkt.ctstate = "NEW"
        return C.check_tunnel_firewall(state, pkt, describe(self.outer), **kw)

    def _outer_walk(self, ns: str, outer: Outer, bound: Optional[Link], size: int) -> Optional[str]:
        """The outer packet from ns to its endpoint through the underlay: the namespace it is
        delivered in (its `decap` hop is the last), or None."""
        saved = (self.outer, self.size)
        self.outer, self.size = outer, size
        direction = self.result.hops[-1].direction
        try:
            src = outer.src or ("::" if family_of(outer.dst) == 6 else "0.0.0.0")
            return self._direction(direction, ns, src, outer.dst, None, bound=bound)
        finally:
            self.outer, self.size = saved

    @staticmethod
    def _arp_source(state: NetnsState, oif: Link, nexthop: str) -> Optional[str]:
        addrs = state.addrs_on(oif.ifindex, family_of(nexthop))
        for addr in addrs:
            if ipaddress.ip_address(nexthop) in addr.network:
                return addr.address
        return addrs[0].address if addrs else None

    def _next_hop_station(self, state: NetnsState, oif: Link, route, nexthop: str, arp_src: Optional[str],
                          src: str, dst: str, **kw) -> Optional[Station]:
        """Resolve the next hop as ARP/NDP does; a packet goes only to the station that would take it."""
        resolution = resolve(self.snap, state, oif, nexthop, arp_src, self._locate)
        entry = state.neighbour(oif.ifindex, nexthop)
        if entry is not None and entry.state in ("permanent", "noarp") or oif.noarp:
            # no ARP is asked: the frame goes out anyway; check_neighbour judges the static entry
            owner = resolution.answer.station if resolution.answer else None
            owner = owner or next((s for s in resolution.segment.stations if s.state.owns(nexthop)), None)
            if owner is not None:
                return owner
        seg = resolution.segment
        if resolution.answer is None and not seg.unseen and seg.programs:   # a VM's TAP port: its program
            self._hand_to_program(seg.programs[0][1])
            return None
        self._add(C.check_nexthop_owner(state, oif, route, nexthop, resolution, **kw))
        if resolution.station is not None:
            return resolution.station
        if resolution.answer is None and seg.exits:   # behind a tunnel: its outer packet leaves the machine
            self._cross(state, oif, seg.exits[0], src, dst, nexthop, **kw)
            return None
        if resolution.answer is None and seg.unseen:
            self._stop("leave", f"{nexthop} may be behind {seg.unseen[0]}" + (
                f"; {leaving_note(self.outer, oif, nexthop, *self._inner_ends(kw['direction']))}" if self.outer else
                "; not followed further"))
            self.result.left_machine = seg.unseen[0]
            return None
        why = resolution.answer.detail if resolution.answer else f"nobody on {seg.describe(oif)} has {nexthop}"
        self._stop("broken", f"{C.neighbour_protocol(nexthop)} for {nexthop} goes unanswered: {why}")
        return None

    def _stop(self, action: str, note: str) -> None:
        """The walk ends at the hop just recorded (the one that sends towards the next hop)."""
        hop = self.result.hops[-1]
        hop.action, hop.note = action, f"{hop.note}; {note}" if hop.note else note

    def _cross(self, state: NetnsState, oif: Link, station: Station, src: str, dst: str, nexthop: str,
               **kw) -> bool:
        """The links between oif and the station: each bridge crossed is a hop, each tunnel crossed
        its outer packet's hops; checks on every link."""
        direction = kw["direction"]
        icmp = ECHO_TYPES[family_of(dst)][direction]
        before = len(self.result.findings)
        sent_mtu = oif.mtu
        frame = min(self.size, sent_mtu)
        mac, arp = self._frame_mac(state, oif, nexthop, station)
        sender = (state, oif)
        if is_tunnel(oif):   # a routed tunnel device (Flannel's flannel.1): the frame is encapsulated here
            if self.tunnels.enter(state, oif, mac, arp, _landing(station, -1), src, dst, frame, **kw) is None:
                return False
        for i, c in enumerate(station.crossings):
            if c.port_in is not None:
                role = _role(c.port_in, oif)
                self._rx_checks(c.state, c.port_in, frame, sent_mtu, role, **kw)
                out = c.port_out or c.bridge
                self._hop(direction, c.state.name, c.port_in.ifname, out.ifname, "bridge", src, dst, nexthop,
                          note=f"{c.port_in.ifname} is a port of {c.bridge.ifname}")
            self._add(C.check_link(c.state, c.bridge, "bridge", **kw))
            if c.port_out is None:
                frame = min(frame, c.bridge.mtu)
                continue
            self._add(C.check_link(c.state, c.port_out, "bridge port", **kw))
            if c.port_in is not None:
                pkt = Packet("forward", src, dst, icmp, c.bridge.ifname, c.bridge.ifname,
                             "NEW" if direction == "request" else "ESTABLISHED", c.port_in.ifname, c.port_out.ifname)
                self._add(C.check_bridge_netfilter(c.state, c.bridge, pkt, **kw))
            if is_tunnel(c.port_out):   # a tunnel port (VXLAN): the frame crosses to the far node
                self._add(mtu_finding(c.state, c.port_out, frame, *sender, **kw))
                landed = self.tunnels.enter(c.state, c.port_out, mac, arp, _landing(station, i), src, dst, frame, **kw)
                if landed is None:
                    return False
                oif, sent_mtu = landed[1], landed[1].mtu
                frame = min(frame, c.port_out.mtu)
                continue
            peer = peer_of(self.snap, c.state, c.port_out)
            self._add(C.check_mtu(c.state, c.port_out, frame, f"bridge port of {c.bridge.ifname}",
                                  max(peer[1].mtu if peer else frame, frame), **kw))
            oif, sent_mtu = c.port_out, c.port_out.mtu
            frame = min(frame, sent_mtu)
        if station.link.kind != "bridge" or not station.crossings:
            role = f"{station.link.kind} child on the wire of {oif.ifname}" if is_upper(station.link) else \
                _role(station.link, oif)
            self._rx_checks(station.state, station.link, frame, sent_mtu, role, **kw)
        return all(f.ok for f in self.result.findings[before:] if f.check == "link")

    @staticmethod
    def _frame_mac(state: NetnsState, oif: Link, nexthop: str, station: Station) -> Tuple[Optional[str], bool]:
        """The frame's destination MAC (a neighbour entry's, else the station's), and whether it
        must be resolved first (ARP/NDP broadcast)."""
        entry = state.neighbour(oif.ifindex, nexthop)
        static = entry is not None and entry.state in ("permanent", "noarp")   # never asked again (Flannel's)
        if entry is not None and entry.lladdr and entry.state not in ("failed", "incomplete"):
            return entry.lladdr.lower(), not static and not oif.noarp
        return (station.link.mac or "").lower() or None, not oif.noarp

    def _rx_checks(self, state: NetnsState, link: Link, frame: int, sent_mtu: int, role: str, **kw) -> None:
        """The receiving veth end: up, its programs, and an MTU that fits what the other end sent
        (veth drops what does not fit the receiving end; a tunnel's decapsulated frame is not checked)."""
        self._add(C.check_link(state, link, role, **kw))
        for finding in C.check_programs(state, link, **kw):
            self._add(finding)
        if is_tunnel(link):
            return
        self._add(C.check_mtu(state, link, min(self.size, frame), f"the {role}, whose MTU is {sent_mtu}: veth drops "
                              "what does not fit the receiving end", max(sent_mtu, self.size), **kw))

    def _to_program(self, state: NetnsState, tun: Link, **kw) -> None:
        """A TUN/TAP device: the packets go to the program holding it; the walk ends there."""
        if not self._add(C.check_tun(state, tun, **kw)).ok:
            self._stop("broken", f"no program holds {tun.ifname}: its queue drops the packets")
            return None
        self._hand_to_program(tun)
        return None

    def _hand_to_program(self, tun: Link) -> None:
        self.result.handed_to = self.result.left_machine = tuntap.holder_text(tun)
        self._stop("program", f"handed to {self.result.handed_to} (user space); not followed further")

    # -- fixes for missing routes -----------------------------------------------------------------------
    def _suggest_routes(self, ns: str, dst: str, prefer_ifindex: Optional[int] = None) -> List[C.RouteSuggestion]:
        return suggest_routes(self.snap, ns, dst, prefer_ifindex, self._locate)

    def _suggest_route(self, ns: str, dst: str, prefer_ifindex: Optional[int]) -> Optional[C.RouteSuggestion]:
        """The likeliest: a neighbour namespace that owns dst or forwards and has a route to it."""
        found = self._suggest_routes(ns, dst, prefer_ifindex)
        return found[0] if found else None

    def _route_check(self, state: NetnsState, lookup, dst: str, cause: str, prefer: Optional[int],
                     **kw) -> C.Finding:
        """check_route with the likeliest route as its fix, the other suggestions as alternatives."""
        suggestions = self._suggest_routes(state.name, dst, prefer)
        finding = C.check_route(state, lookup, dst, cause, suggestions[0] if suggestions else None, **kw)
        if not finding.ok and finding.cause == cause:
            finding.alternatives = [[in_ns(state.name, argv, self.home) for argv in
                                     C.refusal_fix(state, lookup) + C.route_fix(s, dst)] for s in suggestions[1:]]
        return self._add(finding)
