"""Every check the path walk makes at a hop: each returns a `Finding` (ok or not) and, when
something breaks the ping, the cause and the commands that fix it in that namespace."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import List, Optional

from ..commands import HOST_LABEL, Argv, Command, argv_of, in_ns
from . import cni, docker, tuntap
from .firewall import Packet, bridge_family_verdict, firewall_verdict
from .routing import SourceCheck, describe_refusal, validate_source, without_refusal
from .state import Link, NetnsState, conf_sysctl, family_of, is_link_local

# How sure a failed check makes us that it is why the ping fails.
CERTAIN = 0.9      # the configuration alone breaks the ping
LIKELY = 0.6       # a symptom (neighbour FAILED, an XDP program on the path) that has other explanations
WEAK = 0.3

CAUSES = ("rp_filter", "netfilter_drop", "bridge_netfilter", "ip_forward_disabled", "no_route", "no_return_route",
          "local_source", "bridge_port_address", "neighbor_unreachable", "link_down", "mtu", "xdp_drop", "tc_drop",
          "docker_isolation", "docker_icc_disabled", "cni_chain_drop", "echo_ignored", "arp_ignore", "routing_loop",
          "macvlan_parent_isolation", "macvlan_mode", "tun_no_program",
          # tunnels (issue 21): the outer packet or the tunnel ends do not meet
          "tunnel_firewall", "tunnel_id_mismatch", "tunnel_port_mismatch", "tunnel_no_fdb", "tunnel_underlay_route",
          "tunnel_remote_not_local", "unknown")

@dataclass
class Finding:
    netns: str
    check: str
    ok: bool
    detail: str
    cause: Optional[str] = None
    ifname: Optional[str] = None
    fix: List[Command] = field(default_factory=list)
    confidence: float = CERTAIN
    direction: str = "request"
    symptom: bool = False   # what any fault that stops ARP/NDP looks like (a FAILED entry): never an "also"
    alternatives: List[List[Command]] = field(default_factory=list)   # other fixes, tried when `fix` is not proven
    missing: str = ""       # without a fix: what a command would need that bpftools cannot know (said, not guessed)

    def to_dict(self) -> dict:
        return {"netns": self.netns, "check": self.check, "ok": self.ok, "detail": self.detail}


def ok(state: NetnsState, check: str, detail: str, ifname: Optional[str] = None, direction: str = "request"):
    return Finding(state.name, check, True, detail, ifname=ifname, direction=direction)


def bad(state: NetnsState, check: str, cause: str, detail: str, fix: List[Argv], ifname: Optional[str] = None,
        confidence: float = CERTAIN, direction: str = "request", home: str = HOST_LABEL,
        symptom: bool = False) -> Finding:
    assert cause in CAUSES, cause
    return Finding(state.name, check, False, detail, cause, ifname, [in_ns(state.name, c, home) for c in fix],
                   confidence, direction, symptom)


# -- links -----------------------------------------------------------------------------------------

def check_link(state: NetnsState, link: Link, role: str, **kw) -> Finding:
    """Administratively up (and with carrier unless its peer is the one that is down)."""
    if not link.admin_up:
        return bad(state, "link", "link_down", f"{link.ifname} ({role}) is administratively down",
                   [argv_of("ip link set dev {} up", link.ifname)], link.ifname, **kw)
    return ok(state, "link", f"{link.ifname} ({role}) is up", link.ifname, kw.get("direction", "request"))


def check_tun(state: NetnsState, link: Link, **kw) -> Finding:
    """A TUN/TAP device hands the packets to the program holding it; with none, its queue drops
    them (no command: which program should hold it cannot be known)."""
    why = tuntap.unheld_detail(link)
    if why is None:
        return ok(state, "tun", f"{link.ifname} ({link.tun_type or 'tun'}) is held by {', '.join(link.tun_holders)}",
                  link.ifname, kw.get("direction", "request"))
    return bad(state, "tun", "tun_no_program", why, [], link.ifname, **kw)


def check_mtu(state: NetnsState, link: Link, size: int, why: str, fix_mtu: int, **kw) -> Finding:
    if size > link.mtu:
        return bad(state, "mtu", "mtu", f"{size}-byte packets do not fit the {link.mtu}-byte MTU of {link.ifname} "
                   f"({why})", [argv_of("ip link set dev {} mtu {}", link.ifname, fix_mtu)], link.ifname, **kw)
    return ok(state, "mtu", f"{size}-byte packets fit the MTU of {link.ifname} ({link.mtu})", link.ifname,
              kw.get("direction", "request"))


def check_bridge_port_address(state: NetnsState, link: Link, **kw) -> Finding:
    """Sending from an address that sits on a bridge port: the replies are taken by the bridge."""
    if link.master is None:
        return ok(state, "bridge_port_address", f"{link.ifname} is not a bridge port", link.ifname,
                  kw.get("direction", "request"))
    bridge = state.link(link.master)
    br = bridge.ifname if bridge else "the bridge"
    moved = [a for a in state.addrs_on(link.ifindex) if not is_link_local(a.address)]  # fe80:: is per port
    fix = [argv_of("ip addr del {}/{} dev {}", a.address, a.prefixlen, link.ifname) for a in moved]
    fix += [argv_of("ip addr add {}/{} dev {}", a.address, a.prefixlen, br) for a in moved]
    return bad(state, "bridge_port_address", "bridge_port_address",
               f"{link.ifname} is a port of {br} and the route uses it: frames arriving on a port go to the "
               f"bridge, so ARP replies and echo replies never reach {link.ifname}; the address belongs on {br}",
               fix, link.ifname, **kw)


# -- forwarding, routes ------------------------------------------------------------------------------

def check_forwarding(state: NetnsState, iif: Link, family: int = 4, **kw) -> Finding:
    if state.forwarding(iif.ifname, family):
        return ok(state, "ip_forward", f"IPv{family} forwarding is enabled on {iif.ifname}", iif.ifname,
                  kw.get("direction", "request"))
    key = "net.ipv6.conf.all.forwarding" if family == 6 else "net.ipv4.ip_forward"
    return bad(state, "ip_forward", "ip_forward_disabled",
               f"this namespace routes the packet (it arrives on {iif.ifname} for another host) but "
               f"{key} = 0", [argv_of("sysctl -w {}=1", key)], iif.ifname, **kw)


def deletes_used(command: Command, finding: Finding, addresses, routes) -> bool:
    """Would this fix command delete an address or route the working part of the path uses?
    (Moving an address, `del` then `add` of the same address, is not deleting it.) It reads the
    command's argv: the namespace it runs in is the finding's, whatever prefix prints it."""
    words = list(command.argv)
    if words[:3] == ["ip", "addr", "del"] and len(words) > 3:
        address = words[3].split("/")[0]
        moved = any(list(c.argv[:4]) == ["ip", "addr", "add", words[3]] for c in finding.fix)
        return (finding.netns, address) in addresses and not moved
    if words[:3] == ["ip", "route", "del"] and len(words) > 3:
        rest = words[3:]
        if rest[0] in ("unicast", "local", "blackhole", "unreachable", "prohibit", "throw"):
            rest = rest[1:]
        prefix = rest[0] if "/" in rest[0] else f"{rest[0]}/32"
        table = int(rest[rest.index("table") + 1]) if "table" in rest and rest[rest.index("table") + 1].isdigit() \
            else 254
        return (finding.netns, prefix, table) in routes
    return False


def route_fix(suggestion: Optional["RouteSuggestion"], dst: str, replace=None) -> List[Argv]:
    """A host route to dst. `replace`: the wrong route in use; when it is that very host route it is
    replaced, else the new one is added beside it (more specific: nothing else changes path)."""
    if suggestion is None:   # no neighbour has a way to dst: nothing to print (no template to fill in)
        return []
    target = argv_of("dev {}", suggestion.dev) if not suggestion.gateway else \
        argv_of("via {} dev {}", suggestion.gateway, suggestion.dev) + (("onlink",) if suggestion.onlink else ())
    host = 32 if family_of(dst) == 4 else 128
    if replace is not None and replace.dst == dst and replace.dst_len == host:
        table = argv_of("table {}", replace.table) if replace.table != 254 else ()
        return [argv_of("ip route replace {}/{}", dst, host) + target + table]
    return [argv_of("ip route add {}", dst) + target]


def check_return_route(state: NetnsState, src: str, iif: Link, back, suggestion: Optional["RouteSuggestion"],
                       what: str, **kw) -> Finding:
    """Strict rp_filter fails, and the route back to the source does not lead to it at all."""
    via = f" via {back.gateway}" if back.gateway else ""
    detail = (f"{what} from {src} arrives on {iif.ifname}, but the route back to {src} ({back.dst}/{back.dst_len}"
              f"{via} dev {state.ifname(back.oif)}) does not lead back to it: rp_filter = {state.rp_filter(iif.ifname)} "
              "drops it here, and replies could not get back that way either")
    return bad(state, f"source_{what}", "no_return_route", detail, route_fix(suggestion, src, replace=back),
               iif.ifname, **kw)


@dataclass
class RouteSuggestion:
    dev: str
    gateway: Optional[str]
    onlink: bool = False   # the gateway is in no subnet of dev: `via GW dev IF onlink`


def check_route(state: NetnsState, lookup, dst: str, cause: str, suggestion: Optional[RouteSuggestion],
                **kw) -> Finding:
    if lookup.ok:
        route = lookup.route
        via = f" via {route.gateway}" if route.gateway else ""
        return ok(state, "route", f"route to {dst}: {route.type} {route.dst}/{route.dst_len}{via} dev "
                  f"{state.ifname(route.oif)} (table {route.table})", state.ifname(route.oif),
                  kw.get("direction", "request"))
    what = describe_refusal(lookup)
    detail = f"{what} to {dst}" if lookup.route is None else f"{what} refuses {dst}"
    if cause == "no_return_route":
        detail = (f"{what} back to {dst}" if lookup.route is None else f"{what} refuses the way back to {dst}") \
            + f": the echo reply cannot leave {state.name}"
    down = [l.ifname for l in state.links if not l.admin_up and any(
        ipaddress.ip_address(dst) in a.network for a in state.addrs_on(l.ifindex))]
    if down:
        return bad(state, "route", "link_down", f"{detail}: {down[0]}, which has the subnet, is down",
                   [argv_of("ip link set dev {} up", down[0])], down[0], **kw)
    fix = refusal_fix(state, lookup) + _route_fix_after(state, lookup, suggestion, dst)
    finding = bad(state, "route", cause, detail, fix, suggestion.dev if suggestion else None, **kw)
    if not fix:
        finding.missing = _no_route_known(state, dst)
    return finding


def _no_route_known(state: NetnsState, dst: str) -> str:
    """Why no route can be suggested: nothing to send through, or nobody known to forward it."""
    if not any(l.ifname != "lo" and state.addrs_on(l.ifindex) for l in state.links):
        return (f"{state.name} has no network interface with an address but lo: it must be connected to a network "
                "first (a Docker container: `docker network connect`), then routed")
    return (f"no namespace on {state.name}'s links owns or forwards {dst}: the gateway to route it through is "
            "not known here")


def refusal_fix(state: NetnsState, lookup) -> List[Argv]:
    """Remove the blackhole/unreachable/prohibit route or rule that refused the lookup."""
    route = lookup.route
    if route is None:
        return []
    if lookup.refused_by_rule:  # `ip rule` alone is IPv4's rules
        return [("ip",) + (("-6",) if lookup.rule.family == 6 else ()) +
                argv_of("rule del priority {}", lookup.rule.priority)]
    if route.table:
        return [argv_of("ip route del {} {}/{} table {}", route.type, route.dst, route.dst_len, route.table)]
    return []


def _route_fix_after(state: NetnsState, lookup, suggestion: Optional[RouteSuggestion], dst: str) -> List[Argv]:
    """A route to add, unless removing the refusal already lets the lookup find one."""
    if lookup.route is not None and refusal_fix(state, lookup) and without_refusal(state, lookup).ok:
        return []
    return route_fix(suggestion, dst)


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
        fix = [argv_of("sysctl -w {}=1", conf_sysctl(iif.ifname, "accept_local"))] + rp_filter_loosening(state, iif)
        return bad(state, check, "local_source", detail, fix, iif.ifname, **kw)
    if result.problem == "local_source":
        owner = state.owns(src)
        dev = state.ifname(owner.ifindex) if owner else "?"
        fix = [argv_of("ip addr del {}/{} dev {}", src, owner.prefixlen, dev)] if owner else []
        detail += (f"; {src} is also configured on {dev} here: remove the duplicate (accept_local=1 alone "
                   "would deliver the replies to this namespace itself)")
        return bad(state, check, "local_source", detail, fix, iif.ifname, **kw)
    if result.problem == "no_return_route":
        return bad(state, check, "no_return_route", detail, route_fix(suggestion, src), iif.ifname, **kw)
    detail += " (loose mode 2 accepts it; or make the route back to the source use this interface)"
    return bad(state, check, "rp_filter", detail, rp_filter_loosening(state, iif), iif.ifname, **kw)


def rp_filter_loosening(state: NetnsState, iif: Link) -> List[Argv]:
    """Strict (1) -> loose (2), touching only the settings that are strict: raising conf/all from 0
    would make every other interface stricter."""
    if state.rp_filter(iif.ifname) != 1:
        return []
    fix = [argv_of("sysctl -w net.ipv4.conf.all.rp_filter=2")] if state.conf("all", "rp_filter") == 1 else []
    return fix + [argv_of("sysctl -w {}=2", conf_sysctl(iif.ifname, "rp_filter"))]


def check_stray_source(state: NetnsState, src_ns: str, src: str, **kw) -> Finding:
    """The echo reply is delivered in `state`, which also has the ping's source address (IPv6, or
    IPv4 with accept_local: nothing drops such a request, the reply just never leaves)."""
    owner = state.owns(src)
    detail = f"the reply to {src} is delivered in {state.name}, not in {src_ns} where the ping waits"
    if owner is None:
        return bad(state, "reply", "no_return_route", detail, [], direction="reply", **kw)
    dev = state.ifname(owner.ifindex) or "?"
    return bad(state, "reply", "local_source", f"{detail}: {src} is also configured on {dev} here, so the echo "
               "request's source is an address of this namespace and the reply stays in it",
               [argv_of("ip addr del {}/{} dev {}", src, owner.prefixlen, dev)], dev, direction="reply", **kw)


# -- the echo itself --------------------------------------------------------------------------------

def echo_ignore_sysctl(family: str = "ipv4", broadcast: bool = False) -> str:
    """The switch that makes a namespace ignore echo requests (IPv6: net.ipv6.icmp.echo_ignore_*)."""
    if family == "ipv6":
        return "net.ipv6.icmp.echo_ignore_multicast" if broadcast else "net.ipv6.icmp.echo_ignore_all"
    return "net.ipv4.icmp_echo_ignore_broadcasts" if broadcast else "net.ipv4.icmp_echo_ignore_all"


def check_echo(state: NetnsState, dst: str, family: str = "ipv4", broadcast: bool = False, **kw) -> Finding:
    """The echo request arrived: does the namespace answer it? icmp_echo_ignore_all (and for a
    broadcast/multicast destination icmp_echo_ignore_broadcasts) make it stay silent: the kernel
    consumes the request, so no drop is traced anywhere."""
    keys = [echo_ignore_sysctl(family)] + ([echo_ignore_sysctl(family, broadcast=True)] if broadcast else [])
    on = [k for k in keys if state.sysctl(k)]
    if not on:
        return ok(state, "echo", f"{state.name} answers echo requests to {dst} ({keys[0]} = 0)", None,
                  kw.get("direction", "request"))
    silently = "the kernel frees it as INVALID_PROTO" if on[0] != keys[0] else "nothing is dropped, so nothing is traced"
    return bad(state, "echo", "echo_ignored", f"{on[0]} = {state.sysctl(on[0])}: {state.name} receives the echo "
               f"request for {dst} and ignores it ({silently})",
               [argv_of("sysctl -w {}=0", k) for k in on], **kw)


# -- firewall --------------------------------------------------------------------------------------

def _ruleset_text(state: NetnsState, pkt: Packet) -> str:
    """The iptables-save text of the packet's family."""
    return state.ip6tables_save if pkt.family == 6 else state.iptables_save


def _docker_story(state: NetnsState, pkt: Packet, verdict, direction: str):
    """Docker's or the CNI plugins' story behind a drop. Both write IPv4 rules (IPv6 is opt-in
    for Docker and not modelled here)."""
    if pkt.family != 4:
        return None
    return docker.explain(state, pkt, verdict, direction) or cni.explain(state, pkt, verdict, direction)


def check_firewall(state: NetnsState, pkt: Packet, **kw) -> Finding:
    check = f"netfilter_{pkt.hook}"
    verdict = firewall_verdict(_ruleset_text(state, pkt), state.nft_ruleset, pkt)
    kind = f"{'ICMPv6' if pkt.family == 6 else 'ICMP'} {pkt.kind}"
    if not verdict.dropped:
        detail = f"{pkt.hook.upper()} accepts the {kind} {pkt.src} -> {pkt.dst}"
        if verdict.uncertain:
            detail += f" (rules not judged: {'; '.join(verdict.uncertain[:3])})"
        return ok(state, check, detail, pkt.iif or pkt.oif, kw.get("direction", "request"))
    story = _docker_story(state, pkt, verdict, kw.get("direction", "request"))
    if story is not None:
        return bad(state, check, story.cause, story.detail, story.fix, pkt.iif or pkt.oif, **kw)
    return bad(state, check, "netfilter_drop", f"{verdict.where} drops the {kind} {pkt.src} -> {pkt.dst}: "
               f"{verdict.rule}", verdict.fix, pkt.iif or pkt.oif, **kw)


def check_tunnel_firewall(state: NetnsState, pkt: Packet, outer: str, **kw) -> Finding:
    """A tunnel's outer packet (`outer` describes it) at a netfilter hook of the underlay: a drop
    there drops every ping the tunnel carries (and its ARP/NDP)."""
    check = f"netfilter_{pkt.hook}"
    verdict = firewall_verdict(_ruleset_text(state, pkt), state.nft_ruleset, pkt)
    if not verdict.dropped:
        return ok(state, check, f"{pkt.hook.upper()} accepts the tunnel's outer packets, {outer}", pkt.iif or pkt.oif,
                  kw.get("direction", "request"))
    return bad(state, check, "tunnel_firewall", f"{verdict.where} drops the tunnel's outer packets, {outer}, which "
               f"carry the ping and its ARP/NDP: {verdict.rule}", verdict.fix, pkt.iif or pkt.oif, **kw)


def check_bridge_netfilter(state: NetnsState, bridge: Link, pkt: Packet, **kw) -> Finding:
    """Bridged IPv4 goes through iptables FORWARD when net.bridge.bridge-nf-call-iptables = 1
    (IPv6: ip6tables FORWARD with bridge-nf-call-ip6tables = 1)."""
    kind = f"{'ICMPv6' if pkt.family == 6 else 'ICMP'} {pkt.kind}"
    key = "net.bridge.bridge-nf-call-ip6tables" if pkt.family == 6 else "net.bridge.bridge-nf-call-iptables"
    tool = "ip6tables" if pkt.family == 6 else "iptables"
    family = bridge_family_verdict(state.nft_ruleset, pkt)
    if family.dropped:
        return bad(state, "bridge_netfilter", "bridge_netfilter", f"{family.where} drops bridged {kind} "
                   f"on {bridge.ifname}: {family.rule}", family.fix, bridge.ifname, **kw)
    call = state.bridge_nf_call_iptables(pkt.family)
    if not call:
        why = "br_netfilter is not loaded" if call is None else f"{key} = 0"
        return ok(state, "bridge_netfilter", f"bridged traffic on {bridge.ifname} skips {tool} ({why})",
                  bridge.ifname, kw.get("direction", "request"))
    verdict = firewall_verdict(_ruleset_text(state, pkt), state.nft_ruleset, pkt, bridged=True)
    if not verdict.dropped:
        return ok(state, "bridge_netfilter", f"{key} = 1 and FORWARD accepts bridged {kind} on {bridge.ifname}",
                  bridge.ifname, kw.get("direction", "request"))
    story = _docker_story(state, pkt, verdict, kw.get("direction", "request"))
    if story is not None:
        return bad(state, "bridge_netfilter", story.cause, story.detail, story.fix, bridge.ifname, **kw)
    return bad(state, "bridge_netfilter", "bridge_netfilter",
               f"{key} = 1, so frames bridged by {bridge.ifname} ({pkt.physdev_in} -> {pkt.physdev_out}) go through "
               f"{tool} FORWARD, and {verdict.where} drops them: {verdict.rule} "
               f"(Docker sets FORWARD to DROP; alternatively `sysctl -w {key}=0`)",
               verdict.fix, bridge.ifname, **kw)


# -- neighbours ------------------------------------------------------------------------------------

def neighbour_protocol(address: str) -> str:
    """How a next hop's MAC is found: ARP (IPv4) or NDP (IPv6 neighbour discovery)."""
    return "NDP" if family_of(address) == 6 else "ARP"


def check_neighbour(state: NetnsState, oif: Link, nexthop: str, receiver: Optional[Link],
                    receiver_state: Optional[NetnsState], **kw) -> Finding:
    """The neighbour entry (ARP/NDP) for the next hop, and whether anything on the other side answers."""
    direction = kw.get("direction", "request")
    how = neighbour_protocol(nexthop)
    if oif.noarp or oif.kind in ("ipip", "sit", "ip6tnl", "gre", "ip6gre"):
        return ok(state, "neighbour", f"{oif.ifname} does not use {how}", oif.ifname, direction)
    entry = state.neighbour(oif.ifindex, nexthop)
    if entry and entry.state in ("permanent", "noarp") and receiver and entry.lladdr and receiver.mac \
            and entry.lladdr.lower() != receiver.mac.lower():
        return bad(state, "neighbour", "neighbor_unreachable",
                   f"static {how} entry {nexthop} lladdr {entry.lladdr} on {oif.ifname}, but {nexthop} is "
                   f"{receiver.mac} ({receiver.ifname} in {receiver_state.name}): frames go to the wrong MAC",
                   [argv_of("ip neigh del {} dev {}", nexthop, oif.ifname)], oif.ifname, **kw)
    if receiver is not None and receiver.noarp:
        return bad(receiver_state, "neighbour", "neighbor_unreachable",
                   f"{receiver.ifname} has ARP turned off (NOARP), so nobody answers {how} for {nexthop}",
                   [argv_of("ip link set dev {} arp on", receiver.ifname)], receiver.ifname, **kw)
    if entry and entry.state in ("failed", "incomplete"):
        return bad(state, "neighbour", "neighbor_unreachable",
                   f"{how} for {nexthop} on {oif.ifname} is {entry.state.upper()}: nothing answered",
                   [argv_of("ip neigh flush dev {} to {}", oif.ifname, nexthop)], oif.ifname, confidence=LIKELY,
                   symptom=True,
                   **kw)
    state_text = entry.state if entry else "not cached yet"
    return ok(state, "neighbour", f"{how} entry for {nexthop} on {oif.ifname}: {state_text}", oif.ifname,
              direction)


def check_nexthop_owner(state: NetnsState, oif: Link, route, nexthop: str, resolution, **kw) -> Finding:
    """ARP/NDP for the next hop over oif's segment (segment.resolve): who answers, or why nobody does."""
    direction = kw.get("direction", "request")
    found = resolution.answer
    how = neighbour_protocol(nexthop)
    if found is not None and found.ok:
        return ok(state, "nexthop", found.detail, oif.ifname, direction)
    if found is not None:   # the owner is there but would not answer
        return bad(found.station.state, "nexthop", found.cause, f"{how} for {nexthop} from {state.name} "
                   f"({oif.ifname}) is not answered: {found.detail}", found.fix, found.station.link.ifname, **kw)
    seg = resolution.segment
    if seg.unseen:
        return ok(state, "nexthop", f"nobody we can see on {seg.describe(oif)} has {nexthop}; it may be behind "
                  f"{seg.unseen[0]}", oif.ifname, direction)
    if seg.exits:   # a tunnel port with nowhere to send: the walk says so on its node (tunnel_no_fdb)
        exit_ = seg.exits[0]
        return ok(state, "nexthop", f"nobody we can see on {seg.describe(oif)} has {nexthop}; it may be behind "
                  f"{exit_.link.ifname} in {exit_.state.name}", oif.ifname, direction)
    detail = f"nobody on {seg.describe(oif)} has the address {nexthop}: {how} goes unanswered"
    candidates = []
    if route is not None and route.gateway:
        family = family_of(nexthop)
        mine = state.addrs_on(oif.ifindex, family)
        candidates = [a.address for s in seg.stations if s.state.forwarding(s.link.ifname, family)
                      for a in s.state.addrs_on(s.link.ifindex, family)
                      if any(ipaddress.ip_address(a.address) in m.network for m in mine)]
        candidates.sort(key=is_link_local)  # a global gateway reads better
    if candidates:
        return bad(state, "nexthop", "neighbor_unreachable", f"{detail}; the gateway there is {candidates[0]}",
                   [argv_of("ip route replace {}/{} via {} dev {}", route.dst, route.dst_len, candidates[0],
                            oif.ifname) + (argv_of("table {}", route.table) if route.table != 254 else ())],
                   oif.ifname, **kw)
    return bad(state, "nexthop", "neighbor_unreachable", detail, [], oif.ifname, **kw)


def check_programs(state: NetnsState, link: Link, **kw) -> List[Finding]:
    """XDP programs and tc filters on the path: they may drop the ping; only the live trace can tell,
    so these findings are ok=True notes that the verdict uses when nothing else explains a failure."""
    found = []
    direction = kw.get("direction", "request")
    if link.xdp_prog_id:
        found.append(Finding(state.name, "xdp", True, f"XDP program id {link.xdp_prog_id} is attached to "
                             f"{link.ifname}", "xdp_drop", link.ifname,
                             [in_ns(state.name, argv_of("ip link set dev {} xdp off", link.ifname),
                                    kw.get("home", HOST_LABEL))],
                             WEAK, direction))
    if link.tc_qdisc:
        found.append(Finding(state.name, "tc", True, f"{link.ifname} has a {link.tc_qdisc} qdisc (tc filters)",
                             "tc_drop", link.ifname,
                             [in_ns(state.name, argv_of("tc filter del dev {} ingress", link.ifname),
                                    kw.get("home", HOST_LABEL))],
                             WEAK, direction))
    return found
