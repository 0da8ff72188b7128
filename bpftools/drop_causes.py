"""What each kernel drop reason means, in ONE table used by trace-drops' hints and by
`diagnose` alike, so the two can never disagree about the same drop.

A `DropCause` per reason (names as the running kernel's tracepoint format prints them, with
SKB_DROP_REASON_ removed; the numbering is never hard-coded) gives:
- `cause`: the diagnose cause the drop names on its own (None: it only supports one);
- `confirms`: the diagnose causes (found by the path walk's checks) a drop of this reason confirms;
- `summary`: what the drop means, in a few words (diagnose's detail);
- `facts(event, inspector)`: what to read in the drop's namespace (facts/namespace.py);
- `explain(event, facts)`: the hint line;
- `fix(event, facts)`: commands to run in the drop's namespace (no `ip netns exec` prefix), only
  where the drop alone proves them safe; the walk's checks give the other fixes.
The texts are pure functions of (event, facts): unit-testable without a kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from .commands import Argv, Command, argv_of, in_netns_of, in_ns, render
from .facts.namespace import forwarding_sysctl
from .facts.netfilter import nft_policy_guess
from .names import conf_sysctl
from .namespaces import find_inode, own_inode



def _iface(event) -> str:
    return event.ifname or f"if{event.ifindex}"


def _where(event) -> str:
    return f"netns {event.netns}"


def _in_drop_ns(event, argv: Argv) -> Command:
    """`argv` run in the drop's namespace: by its name or label, else as discovery knows its inode."""
    if event.netns_name:
        return in_ns(event.netns_name, argv, home=None)
    return in_netns_of(find_inode(event.netns_inode), argv, own_inode())


def _shown(event, argv: Argv) -> str:
    """A command inside a hint's prose, in backticks."""
    return f"`{render(_in_drop_ns(event, argv))}`"


def _cmd(event, template: str, *values) -> str:
    """`_shown` of argv_of(template, *values)."""
    return _shown(event, argv_of(template, *values))


def _route_text(route: Optional[dict]) -> str:
    if not route:
        return "unknown"
    if route.get("error"):
        return route["error"]
    text = route.get("type", "unicast")
    text = "" if text == "unicast" else text + " "
    if route.get("gateway"):
        text += f"via {route['gateway']} "
    return (text + f"dev {route.get('dev') or '?'}").strip()


def _rp_mode(value: Optional[int]) -> str:
    return {0: "off", 1: "strict", 2: "loose"}.get(value, "unknown") if value is not None else "unknown"


def explain_rpfilter(event, facts: dict) -> str:
    all_v, if_v = facts.get("rp_filter_all"), facts.get("rp_filter_iface")
    effective = max(v for v in (all_v, if_v, 0) if v is not None)
    route = facts.get("reverse_route")
    text = (f"reverse-path filter: rp_filter on {_iface(event)} is {_rp_mode(effective)} "
            f"(max(all={all_v}, {_iface(event)}={if_v}) = {effective}) in {_where(event)}; ")
    if route and route.get("error"):
        text += f"there is no route back to {event.src} ({route['error']})"
    elif route:
        text += (f"the route back to {event.src} is {_route_text(route)}, not {_iface(event)}"
                 if route.get("dev") != event.ifname else
                 f"the route back to {event.src} is {_route_text(route)} (changed since the drop?)")
    loose = " and ".join(_shown(event, c) for c in fix_rpfilter(event, facts))
    text += (f". Check {_cmd(event, 'ip route get {}', event.src)}; fix the return route (asymmetric routing) "
             f"or use loose mode: {loose}")
    return text


def explain_netfilter(event, facts: dict) -> str:
    hook = facts.get("hook")
    culprits = facts.get("culprits") or []
    head = f"netfilter dropped it at {hook or 'a hook'} in {_where(event)}"
    if culprits:
        counter, grown = culprits[0]
        sure = "" if facts.get("exact") else "likely "
        text = f"{head}: {sure}{counter.describe()} (+{grown} packet{'s' if grown != 1 else ''})"
        if len(culprits) > 1:
            text += f"; also counting: {culprits[1][0].describe()}"
    elif facts.get("policy"):
        text = f"{head}: {facts['policy'].describe()} (no drop rule counted it)"
    else:
        text = f"{head}: no drop rule counter moved (rules without counters, or another netfilter user)"
    save = argv_of("ip6tables-save -c") if event.family == "ipv6" else argv_of("iptables-save -c")
    return f"{text}. Check {_shown(event, save)} and {_cmd(event, 'nft list ruleset')}"


def _forwarding_name(event) -> str:
    """How the hints name that switch."""
    return "net.ipv6.conf.all.forwarding" if event.family == "ipv6" else "ip_forward"


def explain_inaddrerrors(event, facts: dict) -> str:
    fwd, name = facts.get("forwarding"), _forwarding_name(event)
    if fwd == 0:
        return (f"{event.dst} is not a local address of {_where(event)} and {name}=0 there, so it will not "
                f"route the packet: enable forwarding with {_shown(event, fix_inaddrerrors(event, facts)[0])} "
                f"or send it to the right host")
    return (f"address error for {event.dst} in {_where(event)} ({name}={fwd}, route "
            f"{_route_text(facts.get('route'))}): check the destination and "
            f"{_cmd(event, 'ip route get {}', event.dst)}")


def explain_noroute(event, facts: dict) -> str:
    route = facts.get("route")
    return (f"no route to {event.dst} in {_where(event)} (route lookup now: {_route_text(route)}; "
            f"{_forwarding_name(event)}={facts.get('forwarding')}): add a route or a default route, see "
            f"{_cmd(event, 'ip route get {}', event.dst)}")


def explain_local_source(event, facts: dict) -> str:
    return (f"martian source: {event.src} is an address of {_where(event)} itself, arriving on {_iface(event)} "
            f"(accept_local all={facts.get('accept_local_all')}, {_iface(event)}={facts.get('accept_local_iface')}): "
            f"a looped or spoofed packet, or a duplicate address; check {_cmd(event, 'ip -br addr')} on both ends "
            f"or set accept_local=1 if intended")


def explain_invalid_source(event, facts: dict) -> str:
    return (f"martian source {event.src} on {_iface(event)} in {_where(event)} (route back: "
            f"{_route_text(facts.get('reverse_route'))}): broadcast/multicast/0.0.0.0 sources or one the routes "
            f"do not allow here; check {_cmd(event, 'ip route get {}', event.src)} and log_martians")


def explain_neigh(event, facts: dict) -> str:
    route = facts.get("route")
    hop = (route or {}).get("gateway") or event.dst
    state = facts.get("neigh_state") or "none"
    what = {"NEIGH_FAILED": "ARP/ND for", "NEIGH_DEAD": "the neighbour entry died for"}.get(
        event.reason, "queue full while resolving")
    return (f"{what} next hop {hop} on {(route or {}).get('dev') or _iface(event)} got no answer "
            f"(neighbour state {state}) in {_where(event)}: is {hop} up and on the same L2 segment? "
            f"Check {_cmd(event, 'ip neigh show {}', hop)}" +
            (f"; {_neigh_sysctl(event, 'unres_qlen_bytes').replace('/', '.')}={facts.get('unres_qlen_bytes')}"
             if event.reason == "NEIGH_QUEUEFULL" else ""))


def _neigh_sysctl(event, key: str) -> str:
    """net/ipv4/neigh/IFACE/KEY (ARP) or net/ipv6/neigh/IFACE/KEY (neighbour discovery)."""
    return f"net/{'ipv6' if event.family == 'ipv6' else 'ipv4'}/neigh/{_iface(event)}/{key}"


def explain_otherhost(event, facts: dict) -> str:
    return (f"the frame on {_iface(event)} in {_where(event)} was for another MAC address (pkt_type OTHERHOST, "
            f"interface MAC {facts.get('mac') or '?'}): a stale neighbour entry on the sender or promiscuous "
            f"capture; check `ip neigh` on the sender")


def explain_no_socket(event, facts: dict) -> str:
    if event.proto in ("icmp", "icmpv6"):
        return (f"no ping socket (ICMP datagram socket) wanted this {event.proto} message in {_where(event)}; for "
                f"echo replies this is harmless when the pinger uses a raw socket (iputils ping as root gets its "
                f"copy there, and the ping-socket layer frees the original)")
    listening = facts.get("listening")
    state = ("nothing listens there now" if listening is False else
             "a socket listens there now" if listening else "listening state unknown")
    proto = event.proto or "?"
    endpoint = f"[{event.dst}]:{event.dport}" if event.family == "ipv6" else f"{event.dst}:{event.dport}"
    return (f"no {proto} socket for {endpoint} in {_where(event)} ({state}): start the service "
            f"or fix the port; check {_cmd(event, 'ss -lnptu')}")


def explain_qdisc(event, facts: dict) -> str:
    if facts.get("kind") == "tun":
        return explain_tun_queue(event, facts)
    return (f"the {facts.get('qdisc') or ''} qdisc on {_iface(event)} in {_where(event)} dropped it (queue full "
            f"or policed; txqueuelen {facts.get('txqlen')}): "
            f"check {_cmd(event, 'tc -s qdisc show dev {}', _iface(event))}")


def explain_tun_queue(event, facts: dict) -> str:
    """A drop on a TUN/TAP device's queue: the device's other end is a user-space program."""
    holders = facts.get("tun_holders") or []
    if not facts.get("carrier") or not holders:
        return (f"{_iface(event)} in {_where(event)} is a TUN/TAP device that no program holds (NO-CARRIER): "
                f"what is sent to it waits on its queue (txqueuelen {facts.get('txqlen')}) and is dropped; start "
                "the program that serves it (a VPN client; for a TAP, the VM): diagnose cause tun_no_program")
    return (f"{', '.join(holders)} holds {_iface(event)} in {_where(event)} but does not read fast enough: its "
            f"queue (txqueuelen {facts.get('txqlen')}) overflowed")


def explain_xdp(event, facts: dict) -> str:
    prog = facts.get("xdp_prog_id")
    text = (f"an XDP program on {_iface(event)} in {_where(event)} returned XDP_DROP/ABORTED"
            f" (prog id {prog})" if prog else f"an XDP program on {_iface(event)} dropped it")
    return text + f": check {_cmd(event, 'ip link show dev {}', _iface(event))} and `bpftool prog show`" + \
        _fix_text(event, fix_xdp(event, facts))


def _tc_direction(event) -> str:
    return "egress" if event.reason == "TC_EGRESS" else "ingress"


def explain_tc(event, facts: dict) -> str:
    direction = _tc_direction(event)
    return (f"a tc {direction} program/filter on {_iface(event)} in {_where(event)} dropped it (TC_ACT_SHOT): "
            f"check {_cmd(event, 'tc filter show dev {} {}', _iface(event), direction)} and `bpftool net`"
            + _fix_text(event, fix_tc(event, facts)))


def explain_too_big(event, facts: dict) -> str:
    return (f"{event.len}-byte packet exceeds the path MTU (out via {_route_text(facts.get('route'))}, mtu "
            f"{facts.get('mtu')}) in {_where(event)} and may not be fragmented (DF or IPv6): lower the MTU at the "
            f"sender or let ICMP 'fragmentation needed'/'packet too big' through")




def explain_ipv6_disabled(event, facts: dict) -> str:
    return (f"IPv6 is off on {_iface(event)} in {_where(event)}: disable_ipv6 = 1, or an MTU below 1280 (the "
            f"IPv6 minimum: the kernel then removes the link's IPv6 addresses); check "
            f"{_cmd(event, 'sysctl net.ipv6.conf.{}.disable_ipv6', _iface(event))} and the MTU")


def explain_ns_otherhost(event, facts: dict) -> str:
    return (f"a neighbour solicitation on {_iface(event)} in {_where(event)} asked for an address this interface does "
            f"not have: IPv6 answers only for addresses of the receiving interface (or proxy_ndp entries)")


def explain_link_down(event, facts: dict) -> str:
    state = "" if facts.get("up") is None else f" (now {'up' if facts['up'] else 'down'})"
    return (f"{_iface(event)} in {_where(event)} is down or not ready{state}: the packet had nowhere to go; "
            f"check {_cmd(event, 'ip link show dev {}', _iface(event))} and its peer")


def explain_invalid_proto(event, facts: dict) -> str:
    if event.proto == "icmp" and event.icmp_type == 8:
        return (f"{_where(event)} refused an echo request to {event.dst}: for a broadcast or multicast destination "
                f"that is net.ipv4.icmp_echo_ignore_broadcasts=1; "
                f"check {_cmd(event, 'sysctl net.ipv4.icmp_echo_ignore_broadcasts')}")
    return f"no handler in {_where(event)} accepts {event.proto or 'this'} packets (protocol not supported or refused)"


def explain_no_tx_target(event, facts: dict) -> str:
    return (f"no device to transmit on in {_where(event)} (the route's device vanished or a bridge/tunnel had "
            f"no port): check {_cmd(event, 'ip route get {}', event.dst)}")


# -- fixes: commands to run in the drop's namespace ----------------------------------------------------------

def _fix_text(event, commands: List[Argv]) -> str:
    return ("; fix: " + " and ".join(_shown(event, c) for c in commands)) if commands else ""


def no_fix(event, facts: dict) -> List[Argv]:
    return []


def fix_rpfilter(event, facts: dict) -> List[Argv]:
    """Loose mode (2) keeps the reverse-path check but accepts asymmetric routes."""
    return [argv_of("sysctl -w net.ipv4.conf.all.rp_filter=2"),
            argv_of("sysctl -w {}=2", conf_sysctl(_iface(event), "rp_filter"))]


def fix_inaddrerrors(event, facts: dict) -> List[Argv]:
    """Only when the namespace is known not to forward."""
    if facts.get("forwarding") != 0:
        return []
    return [argv_of("sysctl -w {}=1", forwarding_sysctl(event.family).replace("/", "."))]


def fix_xdp(event, facts: dict) -> List[Argv]:
    return [argv_of("ip link set dev {} xdp off", event.ifname)] if event.ifname else []


def fix_tc(event, facts: dict) -> List[Argv]:
    return [argv_of("tc filter del dev {} {}", event.ifname, _tc_direction(event))] if event.ifname else []


# -- facts: what to read for a drop (from a facts.namespace.NamespaceInspector) -------------------------------

def no_facts(event, ns) -> dict:
    return {}


def facts_rpfilter(event, ns) -> dict:
    iface = event.ifname
    return {"rp_filter_all": ns.sysctl("net/ipv4/conf/all/rp_filter"),
            "rp_filter_iface": ns.sysctl(f"net/ipv4/conf/{iface}/rp_filter") if iface else None,
            "reverse_route": ns.route(event.src) if event.src else None}


def guess_hook(event, local_addresses: List[str]) -> str:
    """Which netfilter hook a NETFILTER_DROP most likely happened at (location is nf_hook_slow for all)."""
    if event.dst in local_addresses:
        return "INPUT"
    if event.src in local_addresses:
        return "OUTPUT"
    return "FORWARD"


def facts_netfilter(event, ns) -> dict:
    culprits, exact, counters = ns.netfilter_attribution(event.family or "ipv4")
    hook = guess_hook(event, ns.local_addresses())
    return {"hook": hook, "culprits": culprits, "exact": exact,
            "policy": None if culprits else nft_policy_guess(counters, hook)}


def facts_routing(event, ns) -> dict:
    return {"forwarding": ns.sysctl(forwarding_sysctl(event.family)),
            "route": ns.route(event.dst) if event.dst else None}


def facts_local_source(event, ns) -> dict:
    iface = event.ifname
    return {"accept_local_all": ns.sysctl("net/ipv4/conf/all/accept_local"),
            "accept_local_iface": ns.sysctl(f"net/ipv4/conf/{iface}/accept_local") if iface else None}


def facts_invalid_source(event, ns) -> dict:
    return {"reverse_route": ns.route(event.src) if event.src else None}


def facts_neigh(event, ns) -> dict:
    route = ns.route(event.dst) if event.dst else None
    hop = (route or {}).get("gateway") or event.dst
    return {"route": route, "neigh_state": ns.neigh_state(hop) if hop else None,
            "unres_qlen_bytes": ns.sysctl(_neigh_sysctl(event, "unres_qlen_bytes")) if event.ifname else None}


def facts_no_socket(event, ns) -> dict:
    return {"listening": ns.listening(event.proto, event.family, event.dport)}


def facts_link(event, ns) -> dict:
    return dict(ns.link(event.ifname) or {})


def facts_too_big(event, ns) -> dict:
    route = ns.route(event.dst) if event.dst else None
    return {"route": route, "mtu": (route or {}).get("mtu")}


# -- the table --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DropCause:
    reason: str
    cause: Optional[str]
    confirms: Tuple[str, ...]
    summary: str
    explain: Callable[..., str]
    facts: Callable[..., dict] = no_facts
    fix: Callable[..., List[Argv]] = no_fix


_NEIGH = ("neighbor_unreachable", "arp_ignore", "local_source", "rp_filter", "bridge_port_address")
_NO_ROUTE = ("no_route", "no_return_route", "link_down", "tunnel_underlay_route")

DROP_CAUSES: Dict[str, DropCause] = {c.reason: c for c in [
    DropCause("IP_RPFILTER", "rp_filter", ("rp_filter", "no_return_route"),
              "the reverse-path filter refused its source", explain_rpfilter, facts_rpfilter, fix_rpfilter),
    DropCause("NETFILTER_DROP", "netfilter_drop", ("netfilter_drop", "bridge_netfilter", "docker_isolation",
                                                   "docker_icc_disabled", "cni_chain_drop", "tunnel_firewall"),
              "a netfilter rule or policy dropped it", explain_netfilter, facts_netfilter),
    DropCause("IP_INADDRERRORS", None, ("ip_forward_disabled",),
              "it was not for this namespace, which does not forward", explain_inaddrerrors, facts_routing,
              fix_inaddrerrors),
    DropCause("IP_INNOROUTES", "no_route", _NO_ROUTE, "no route for it on input", explain_noroute, facts_routing),
    DropCause("IP_OUTNOROUTES", "no_route", _NO_ROUTE, "no route for it on output", explain_noroute, facts_routing),
    DropCause("IP_LOCAL_SOURCE", "local_source", ("local_source", "no_return_route", "no_route"),  # came back: a loop
              "its source is an address of the receiving namespace", explain_local_source, facts_local_source),
    DropCause("IP_INVALID_SOURCE", "local_source", ("local_source",), "its source is martian",
              explain_invalid_source, facts_invalid_source),
    DropCause("NEIGH_FAILED", "neighbor_unreachable", _NEIGH, "the next hop did not answer ARP/ND",
              explain_neigh, facts_neigh),
    DropCause("NEIGH_QUEUEFULL", "neighbor_unreachable", _NEIGH, "too many packets waited for ARP/ND",
              explain_neigh, facts_neigh),
    DropCause("NEIGH_DEAD", "neighbor_unreachable", _NEIGH, "the neighbour entry was removed while it waited",
              explain_neigh, facts_neigh),
    DropCause("OTHERHOST", None, ("neighbor_unreachable",), "the frame was for another MAC address",
              explain_otherhost, facts_link),
    DropCause("NO_SOCKET", None, ("tunnel_port_mismatch",), "no socket wanted it", explain_no_socket, facts_no_socket),
    DropCause("INVALID_PROTO", None, ("echo_ignored",), "the protocol handler refused it", explain_invalid_proto),
    DropCause("QDISC_DROP", None, ("link_down", "tun_no_program"), "the queueing discipline dropped it", explain_qdisc, facts_link),
    DropCause("NO_TX_TARGET", None, ("link_down", "neighbor_unreachable"), "there was no device to send it on",
              explain_no_tx_target),
    DropCause("XDP", "xdp_drop", ("xdp_drop",), "an XDP program dropped it", explain_xdp, facts_link, fix_xdp),
    DropCause("TC_INGRESS", "tc_drop", ("tc_drop",), "a tc ingress program dropped it", explain_tc,
              fix=fix_tc),
    DropCause("TC_EGRESS", "tc_drop", ("tc_drop",), "a tc egress program dropped it", explain_tc, fix=fix_tc),
    DropCause("PKT_TOO_BIG", "mtu", ("mtu",), "it was larger than the path MTU and may not be fragmented",
              explain_too_big, facts_too_big),
    DropCause("DEV_READY", "link_down", ("link_down",), "the device was not ready (down)", explain_link_down),
    DropCause("IPV6DISABLED", None, ("mtu", "link_down"), "IPv6 is disabled on the device", explain_ipv6_disabled,
              facts_link),
    DropCause("IPV6_NDISC_NS_OTHERHOST", None, ("neighbor_unreachable",),
              "a neighbour solicitation for an address the interface does not have", explain_ns_otherhost),
]}


def reason_name(reason: str) -> str:
    """`SKB_DROP_REASON_NETFILTER_DROP` or `netfilter_drop` -> `NETFILTER_DROP`."""
    reason = str(reason or "").upper()
    return reason[len("SKB_DROP_REASON_"):] if reason.startswith("SKB_DROP_REASON_") else reason


def drop_cause(reason: str) -> Optional[DropCause]:
    return DROP_CAUSES.get(reason_name(reason))

