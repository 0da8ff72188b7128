"""Every check the path walk makes at a hop: each returns a `Finding` (ok or not) and, when
something breaks the ping, the cause and the commands that fix it in that namespace."""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field
from typing import List, Optional

from . import docker
from .firewall import Packet, bridge_family_verdict, firewall_verdict
from .routing import SourceCheck, validate_source
from .state import Link, NetnsState

# How sure a failed check makes us that it is why the ping fails.
CERTAIN = 0.9      # the configuration alone breaks the ping
LIKELY = 0.6       # a symptom (neighbour FAILED, an XDP program on the path) that has other explanations
WEAK = 0.3

CAUSES = ("rp_filter", "netfilter_drop", "bridge_netfilter", "ip_forward_disabled", "no_route", "no_return_route",
          "local_source", "bridge_port_address", "neighbor_unreachable", "link_down", "mtu", "xdp_drop", "tc_drop",
          "docker_isolation", "docker_icc_disabled", "unknown")

HOST_LABEL = "host"


@dataclass
class Finding:
    netns: str
    check: str
    ok: bool
    detail: str
    cause: Optional[str] = None
    ifname: Optional[str] = None
    fix: List[str] = field(default_factory=list)
    confidence: float = CERTAIN
    direction: str = "request"

    def to_dict(self) -> dict:
        return {"netns": self.netns, "check": self.check, "ok": self.ok, "detail": self.detail}


def in_ns(netns: str, command: str, home: str = HOST_LABEL) -> str:
    """A shell command to run inside the namespace labelled `netns` (ours needs no prefix). Containers
    are entered by the PID Docker reports when the command runs, so the command outlives a restart."""
    if netns == home:
        return command
    if netns == HOST_LABEL:
        return f"nsenter -n -t 1 {command}"
    if netns.startswith("docker:"):
        pid = shlex.quote("{{.State.Pid}}")
        return f'nsenter -n -t "$(docker inspect -f {pid} {shlex.quote(netns[len("docker:"):])})" {command}'
    if netns.startswith("pid:"):
        return f"nsenter -n -t {netns[len('pid:'):].split()[0]} {command}"
    return f"ip netns exec {shlex.quote(netns)} {command}"


def ok(state: NetnsState, check: str, detail: str, ifname: Optional[str] = None, direction: str = "request"):
    return Finding(state.name, check, True, detail, ifname=ifname, direction=direction)


def bad(state: NetnsState, check: str, cause: str, detail: str, fix: List[str], ifname: Optional[str] = None,
        confidence: float = CERTAIN, direction: str = "request", home: str = HOST_LABEL) -> Finding:
    assert cause in CAUSES, cause
    return Finding(state.name, check, False, detail, cause, ifname, [in_ns(state.name, c, home) for c in fix],
                   confidence, direction)


# -- links -----------------------------------------------------------------------------------------

def check_link(state: NetnsState, link: Link, role: str, **kw) -> Finding:
    """Administratively up (and with carrier unless its peer is the one that is down)."""
    if not link.admin_up:
        return bad(state, "link", "link_down", f"{link.ifname} ({role}) is administratively down",
                   [f"ip link set dev {link.ifname} up"], link.ifname, **kw)
    return ok(state, "link", f"{link.ifname} ({role}) is up", link.ifname, kw.get("direction", "request"))


def check_mtu(state: NetnsState, link: Link, size: int, why: str, fix_mtu: int, **kw) -> Finding:
    if size > link.mtu:
        return bad(state, "mtu", "mtu", f"{size}-byte packets do not fit the {link.mtu}-byte MTU of {link.ifname} "
                   f"({why})", [f"ip link set dev {link.ifname} mtu {fix_mtu}"], link.ifname, **kw)
    return ok(state, "mtu", f"{size}-byte packets fit the MTU of {link.ifname} ({link.mtu})", link.ifname,
              kw.get("direction", "request"))


def check_bridge_port_address(state: NetnsState, link: Link, **kw) -> Finding:
    """Sending from an address that sits on a bridge port: the replies are taken by the bridge."""
    if link.master is None:
        return ok(state, "bridge_port_address", f"{link.ifname} is not a bridge port", link.ifname,
                  kw.get("direction", "request"))
    bridge = state.link(link.master)
    br = bridge.ifname if bridge else "the bridge"
    moved = state.addrs_on(link.ifindex)
    fix = [f"ip addr del {a.address}/{a.prefixlen} dev {link.ifname}" for a in moved]
    fix += [f"ip addr add {a.address}/{a.prefixlen} dev {br}" for a in moved]
    return bad(state, "bridge_port_address", "bridge_port_address",
               f"{link.ifname} is a port of {br} and the route uses it: frames arriving on a port go to the "
               f"bridge, so ARP replies and echo replies never reach {link.ifname}; the address belongs on {br}",
               fix, link.ifname, **kw)


# -- forwarding, routes ------------------------------------------------------------------------------

def check_forwarding(state: NetnsState, iif: Link, **kw) -> Finding:
    if state.forwarding(iif.ifname):
        return ok(state, "ip_forward", f"forwarding is enabled on {iif.ifname}", iif.ifname,
                  kw.get("direction", "request"))
    return bad(state, "ip_forward", "ip_forward_disabled",
               f"this namespace routes the packet (it arrives on {iif.ifname} for another host) but "
               f"net.ipv4.ip_forward = 0", ["sysctl -w net.ipv4.ip_forward=1"], iif.ifname, **kw)


def route_fix(suggestion: Optional["RouteSuggestion"], dst: str) -> List[str]:
    if suggestion is None:
        return [f"ip route add {dst} via <gateway> dev <interface>"]
    if suggestion.gateway:
        return [f"ip route add {dst} via {suggestion.gateway} dev {suggestion.dev}"]
    return [f"ip route add {dst} dev {suggestion.dev}"]


@dataclass
class RouteSuggestion:
    dev: str
    gateway: Optional[str]


def check_route(state: NetnsState, lookup, dst: str, cause: str, suggestion: Optional[RouteSuggestion],
                **kw) -> Finding:
    if lookup.ok:
        route = lookup.route
        via = f" via {route.gateway}" if route.gateway else ""
        return ok(state, "route", f"route to {dst}: {route.type} {route.dst}/{route.dst_len}{via} dev "
                  f"{state.ifname(route.oif)} (table {route.table})", state.ifname(route.oif),
                  kw.get("direction", "request"))
    what = "no route" if lookup.route is None else f"a {lookup.route.type} route"
    detail = f"{what} to {dst}"
    if cause == "no_return_route":
        detail = f"{what} back to {dst}: the echo reply cannot leave {state.name}"
    down = [l.ifname for l in state.links if not l.admin_up and any(
        ipaddress.ip_address(dst) in a.network for a in state.addrs_on(l.ifindex))]
    if down:
        return bad(state, "route", "link_down", f"{detail}: {down[0]}, which has the subnet, is down",
                   [f"ip link set dev {down[0]} up"], down[0], **kw)
    fix = route_fix(suggestion, dst)
    if lookup.route is not None and lookup.route.table:
        fix = [f"ip route del {lookup.route.type} {lookup.route.dst}/{lookup.route.dst_len} table "
               f"{lookup.route.table}"] + fix
    return bad(state, "route", cause, detail, fix, suggestion.dev if suggestion else None, **kw)


def check_source(state: NetnsState, src: str, dst: str, iif: Link, what: str,
                 suggestion: Optional[RouteSuggestion] = None, own: bool = False, **kw) -> Finding:
    """rp_filter (effective = max(all, iface)), martian local sources, accept_local. `own`: the
    packet was sent by this namespace itself and comes back in over a veth pair (both ends here)."""
    result: SourceCheck = validate_source(state, src, dst, iif)
    check = f"source_{what}"
    if result.ok:
        return ok(state, check, f"{what} from {src} on {iif.ifname}: {result.detail}", iif.ifname,
                  kw.get("direction", "request"))
    detail = f"{what} from {src} arriving on {iif.ifname}: {result.detail}"
    if result.problem == "local_source" and own:
        owner = state.owns(src)
        dev = state.ifname(owner.ifindex) if owner else "?"
        detail += (f"; this namespace sent it itself: it left by {dev} and came back in on {iif.ifname}, its veth "
                   f"peer, so its source is one of our own addresses; accept_local = 1 on {iif.ifname} accepts it")
        fix = [f"sysctl -w net.ipv4.conf.{iif.ifname}.accept_local=1"] + rp_filter_loosening(state, iif)
        return bad(state, check, "local_source", detail, fix, iif.ifname, **kw)
    if result.problem == "local_source":
        owner = state.owns(src)
        dev = state.ifname(owner.ifindex) if owner else "?"
        fix = [f"ip addr del {src}/{owner.prefixlen} dev {dev}"] if owner else []
        detail += (f"; {src} is also configured on {dev} here: remove the duplicate (accept_local=1 alone "
                   "would deliver the replies to this namespace itself)")
        return bad(state, check, "local_source", detail, fix, iif.ifname, **kw)
    if result.problem == "no_return_route":
        return bad(state, check, "no_return_route", detail, route_fix(suggestion, src), iif.ifname, **kw)
    detail += " (loose mode 2 accepts it; or make the route back to the source use this interface)"
    return bad(state, check, "rp_filter", detail, rp_filter_loosening(state, iif), iif.ifname, **kw)


def rp_filter_loosening(state: NetnsState, iif: Link) -> List[str]:
    """Strict (1) -> loose (2), touching only the settings that are strict: raising conf/all from 0
    would make every other interface stricter."""
    if state.rp_filter(iif.ifname) != 1:
        return []
    fix = ["sysctl -w net.ipv4.conf.all.rp_filter=2"] if state.conf("all", "rp_filter") == 1 else []
    return fix + [f"sysctl -w net.ipv4.conf.{iif.ifname}.rp_filter=2"]


# -- firewall --------------------------------------------------------------------------------------

def check_firewall(state: NetnsState, pkt: Packet, **kw) -> Finding:
    verdict = firewall_verdict(state.iptables_save, state.nft_ruleset, pkt)
    kind = "echo-request" if pkt.icmp_type == 8 else "echo-reply"
    check = f"netfilter_{pkt.hook}"
    if not verdict.dropped:
        detail = f"{pkt.hook.upper()} accepts the ICMP {kind} {pkt.src} -> {pkt.dst}"
        if verdict.uncertain:
            detail += f" (rules not judged: {'; '.join(verdict.uncertain[:3])})"
        return ok(state, check, detail, pkt.iif or pkt.oif, kw.get("direction", "request"))
    story = docker.explain(state, pkt, verdict, kw.get("direction", "request"))
    if story is not None:
        return bad(state, check, story.cause, story.detail, story.fix, pkt.iif or pkt.oif, **kw)
    return bad(state, check, "netfilter_drop", f"{verdict.where} drops the ICMP {kind} {pkt.src} -> {pkt.dst}: "
               f"{verdict.rule}", verdict.fix, pkt.iif or pkt.oif, **kw)


def check_bridge_netfilter(state: NetnsState, bridge: Link, pkt: Packet, **kw) -> Finding:
    """Bridged IPv4 goes through iptables FORWARD when net.bridge.bridge-nf-call-iptables = 1."""
    kind = "echo-request" if pkt.icmp_type == 8 else "echo-reply"
    family = bridge_family_verdict(state.nft_ruleset, pkt)
    if family.dropped:
        return bad(state, "bridge_netfilter", "bridge_netfilter", f"{family.where} drops bridged ICMP {kind} "
                   f"on {bridge.ifname}: {family.rule}", family.fix, bridge.ifname, **kw)
    call = state.bridge_nf_call_iptables()
    if not call:
        why = "br_netfilter is not loaded" if call is None else "net.bridge.bridge-nf-call-iptables = 0"
        return ok(state, "bridge_netfilter", f"bridged traffic on {bridge.ifname} skips iptables ({why})",
                  bridge.ifname, kw.get("direction", "request"))
    verdict = firewall_verdict(state.iptables_save, state.nft_ruleset, pkt, bridged=True)
    if not verdict.dropped:
        return ok(state, "bridge_netfilter", f"net.bridge.bridge-nf-call-iptables = 1 and FORWARD accepts bridged "
                  f"ICMP {kind} on {bridge.ifname}", bridge.ifname, kw.get("direction", "request"))
    story = docker.explain(state, pkt, verdict, kw.get("direction", "request"))
    if story is not None:
        return bad(state, "bridge_netfilter", story.cause, story.detail, story.fix, bridge.ifname, **kw)
    return bad(state, "bridge_netfilter", "bridge_netfilter",
               f"net.bridge.bridge-nf-call-iptables = 1, so frames bridged by {bridge.ifname} ({pkt.physdev_in} -> "
               f"{pkt.physdev_out}) go through iptables FORWARD, and {verdict.where} drops them: {verdict.rule} "
               "(Docker sets FORWARD to DROP; alternatively `sysctl -w net.bridge.bridge-nf-call-iptables=0`)",
               verdict.fix, bridge.ifname, **kw)


# -- neighbours ------------------------------------------------------------------------------------

def check_neighbour(state: NetnsState, oif: Link, nexthop: str, receiver: Optional[Link],
                    receiver_state: Optional[NetnsState], **kw) -> Finding:
    """The ARP entry for the next hop, and whether anything on the other side answers ARP for it."""
    direction = kw.get("direction", "request")
    if oif.noarp or oif.kind in ("ipip", "gre", "sit"):
        return ok(state, "neighbour", f"{oif.ifname} does not use ARP", oif.ifname, direction)
    entry = state.neighbour(oif.ifindex, nexthop)
    if entry and entry.state in ("permanent", "noarp") and receiver and entry.lladdr and receiver.mac \
            and entry.lladdr.lower() != receiver.mac.lower():
        return bad(state, "neighbour", "neighbor_unreachable",
                   f"static ARP entry {nexthop} lladdr {entry.lladdr} on {oif.ifname}, but {nexthop} is "
                   f"{receiver.mac} ({receiver.ifname} in {receiver_state.name}): frames go to the wrong MAC",
                   [f"ip neigh del {nexthop} dev {oif.ifname}"], oif.ifname, **kw)
    if receiver is not None and receiver.noarp:
        return bad(receiver_state, "neighbour", "neighbor_unreachable",
                   f"{receiver.ifname} has ARP turned off (NOARP), so nobody answers who-has {nexthop}",
                   [f"ip link set dev {receiver.ifname} arp on"], receiver.ifname, **kw)
    if entry and entry.state in ("failed", "incomplete"):
        return bad(state, "neighbour", "neighbor_unreachable",
                   f"ARP for {nexthop} on {oif.ifname} is {entry.state.upper()}: nothing answered",
                   [f"ip neigh flush dev {oif.ifname} to {nexthop}"], oif.ifname, confidence=LIKELY, **kw)
    state_text = entry.state if entry else "not cached yet"
    return ok(state, "neighbour", f"ARP entry for {nexthop} on {oif.ifname}: {state_text}", oif.ifname, direction)


def check_nexthop_owner(state: NetnsState, oif: Link, route, nexthop: str, resolution, **kw) -> Finding:
    """ARP for the next hop over oif's segment (segment.resolve): who answers, or why nobody does."""
    direction = kw.get("direction", "request")
    found = resolution.answer
    if found is not None and found.ok:
        return ok(state, "nexthop", found.detail, oif.ifname, direction)
    if found is not None:   # the owner is there but would not answer
        return bad(found.station.state, "nexthop", found.cause, f"ARP for {nexthop} from {state.name} "
                   f"({oif.ifname}) is not answered: {found.detail}", found.fix, found.station.link.ifname, **kw)
    seg = resolution.segment
    if seg.unseen:
        return ok(state, "nexthop", f"nobody we can see on {seg.describe(oif)} has {nexthop}; it may be behind "
                  f"{seg.unseen[0]}", oif.ifname, direction)
    detail = f"nobody on {seg.describe(oif)} has the address {nexthop}: ARP goes unanswered"
    candidates = []
    if route is not None and route.gateway:
        mine = state.addrs_on(oif.ifindex)
        candidates = [a.address for s in seg.stations if s.state.forwarding(s.link.ifname)
                      for a in s.state.addrs_on(s.link.ifindex)
                      if any(ipaddress.ip_address(a.address) in m.network for m in mine)]
    if candidates:
        return bad(state, "nexthop", "neighbor_unreachable", f"{detail}; the gateway there is {candidates[0]}",
                   [f"ip route replace {route.dst}/{route.dst_len} via {candidates[0]} dev {oif.ifname}"
                    + (f" table {route.table}" if route.table != 254 else "")], oif.ifname, **kw)
    return bad(state, "nexthop", "neighbor_unreachable", detail, [], oif.ifname, **kw)


def check_programs(state: NetnsState, link: Link, **kw) -> List[Finding]:
    """XDP programs and tc filters on the path: they may drop the ping; only the live trace can tell,
    so these findings are ok=True notes that the verdict uses when nothing else explains a failure."""
    found = []
    direction = kw.get("direction", "request")
    if link.xdp_prog_id:
        found.append(Finding(state.name, "xdp", True, f"XDP program id {link.xdp_prog_id} is attached to "
                             f"{link.ifname}", "xdp_drop", link.ifname,
                             [in_ns(state.name, f"ip link set dev {link.ifname} xdp off", kw.get("home", HOST_LABEL))],
                             WEAK, direction))
    if link.tc_qdisc:
        found.append(Finding(state.name, "tc", True, f"{link.ifname} has a {link.tc_qdisc} qdisc (tc filters)",
                             "tc_drop", link.ifname,
                             [in_ns(state.name, f"tc filter del dev {link.ifname} ingress", kw.get("home", HOST_LABEL))],
                             WEAK, direction))
    return found
