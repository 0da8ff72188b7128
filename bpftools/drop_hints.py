"""What to check for a drop, with values read from the drop's namespace at that moment.

Two halves, so the texts are unit-testable without a kernel:
- `explain(event, facts)`: pure; a drop plus facts (sysctls, routes, the netfilter rule
  that counted it...) -> one line of explanation and what to check.
- `NamespaceInspector` / `HintEngine`: gather those facts inside the namespace (sysctls via
  /proc/sys from a thread inside it, routes via pyroute2 `route get`, netfilter counters via
  `iptables-save -c` / `iptables-legacy-save -c` / `nft -a list ruleset` run there with
  `ip netns exec`). Every lookup is cached per namespace and throttled, so a flood of
  drops does not fork a process per packet.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple

from .errors import survive
from .netlink import in_netns, interface_addresses, ipr, list_interfaces

log = logging.getLogger(__name__)

FACT_TTL = 1.0          # seconds a namespace fact is reused
NETFILTER_MIN_GAP = 0.5  # at most one ruleset read per namespace and family per this many seconds


# ---------------------------------------------------------------- netfilter counters

@dataclass(frozen=True)
class NfCounter:
    """One counter of a namespace's ruleset: a rule, or a chain's policy."""
    tool: str       # iptables-nft, iptables-legacy, nft
    table: str      # filter, or "ip filter" for nft
    chain: str
    rule: str       # rule text; "" for the chain policy
    position: str   # rule number (iptables) / handle (nft) / "policy"
    packets: int
    drops: bool     # the rule's verdict (or the policy) drops/rejects
    hook: str = ""  # nft base chain hook (input, forward...)

    @property
    def key(self) -> Tuple[str, str, str, str]:
        return self.tool, self.table, self.chain, self.position

    def describe(self) -> str:
        if self.position == "policy":
            return f"{self.tool}: policy {self.rule or 'DROP'} of chain {self.chain} (table {self.table})"
        where = f"rule {self.position}" if self.tool != "nft" else f"rule handle {self.position}"
        return f"{self.tool}: table {self.table} chain {self.chain} {where} `{self.rule}`"


_SAVE_POLICY = re.compile(r"^:(\S+) (\S+) \[(\d+):(\d+)\]")
_SAVE_RULE = re.compile(r"^\[(\d+):(\d+)\] (-A (\S+) .*)$")


def parse_iptables_save(text: str, tool: str) -> List[NfCounter]:
    """`iptables-save -c` output -> counters of every rule and built-in chain policy."""
    result, table, numbers = [], "", {}
    for line in text.splitlines():
        if line.startswith("*"):
            table, numbers = line[1:].strip(), {}
            continue
        match = _SAVE_POLICY.match(line)
        if match:
            chain, policy = match.group(1), match.group(2)
            if policy != "-":  # user chains have no policy
                result.append(NfCounter(tool, table, chain, policy, "policy", int(match.group(3)),
                                        policy in ("DROP", "REJECT")))
            continue
        match = _SAVE_RULE.match(line)
        if match:
            chain = match.group(4)
            numbers[chain] = numbers.get(chain, 0) + 1
            rule = match.group(3)
            drops = bool(re.search(r"-j (DROP|REJECT)\b", rule))
            result.append(NfCounter(tool, table, chain, rule, str(numbers[chain]), int(match.group(1)), drops))
    return result


_SAVE_INCOMPATIBLE = re.compile(r"^# Table `([^']+)'.*\bincompatible\b")


def iptables_nft_coverage(text: str) -> Tuple[Set[str], Set[Tuple[str, str]]]:
    """What an iptables-nft save (`iptables-save` / `ip6tables-save` on the nf_tables backend)
    reported of the nf_tables ruleset: the tables it listed whole, and the (table, chain) pairs
    it listed from tables it calls incompatible. Such a table ("# Table `filter' is
    incompatible" / "contains incompatible base-chains") also holds native nft chains that only
    `nft list ruleset` shows; an older iptables lists nothing of it at all."""
    listed: Dict[str, Set[str]] = {}
    incompatible: Set[str] = set()
    table = ""
    for line in text.splitlines():
        match = _SAVE_INCOMPATIBLE.match(line)
        if match:
            incompatible.add(match.group(1))
        elif line.startswith("*"):
            table = line[1:].strip()
            listed.setdefault(table, set())
        elif line.startswith(":") and table:
            listed[table].add(line[1:].split(" ", 1)[0])
    whole = {name for name in listed if name not in incompatible}
    chains = {(name, chain) for name in incompatible for chain in listed.get(name, ())}
    return whole, chains


def native_nft_counters(counters: List[NfCounter], family: str, iptables_nft_save: str) -> List[NfCounter]:
    """The `nft list ruleset` counters that can count a packet of `family` and that the
    iptables-nft save (its text; "" when iptables is not on nf_tables) did not report already:
    iptables-nft's own tables show up in both. A native table named like one of iptables'
    (`table ip filter`) stays, unless iptables-nft listed it."""
    own, other = ("ip6", "ip") if family == "ipv6" else ("ip", "ip6")
    whole, chains = iptables_nft_coverage(iptables_nft_save)
    result = []
    for counter in counters:
        table_family, _, name = counter.table.partition(" ")
        if table_family == other:
            continue  # an ip6 table never sees an IPv4 packet, nor an ip table an IPv6 one
        if table_family == own and (name in whole or (name, counter.chain) in chains):
            continue
        result.append(counter)
    return result


_NFT_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_NFT_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_NFT_BASE = re.compile(r"type \S+ hook (\S+) .*?(?:policy (\w+);)?\s*$")
_NFT_COUNTER = re.compile(r"\s*counter packets (\d+) bytes \d+")
_NFT_HANDLE = re.compile(r"\s*# handle (\d+)\s*$")


def parse_nft_ruleset(text: str) -> List[NfCounter]:
    """`nft -a list ruleset` -> counters of rules with a `counter`, and base chains whose
    policy drops (nft keeps no policy counter: packets 0, attributed by elimination)."""
    result, table, chain, hook = [], "", "", ""
    for line in text.splitlines():
        match = _NFT_TABLE.match(line)
        if match:
            table = f"{match.group(1)} {match.group(2)}"
            continue
        match = _NFT_CHAIN.match(line)
        if match:
            chain, hook = match.group(1), ""
            continue
        stripped = line.strip()
        match = _NFT_BASE.search(stripped) if stripped.startswith("type ") else None
        if match:
            hook = match.group(1)
            if match.group(2) == "drop":
                result.append(NfCounter("nft", table, chain, "drop", "policy", 0, True, hook))
            continue
        counter = _NFT_COUNTER.search(line)
        if counter and chain:
            handle = _NFT_HANDLE.search(line)
            rule = _NFT_HANDLE.sub("", _NFT_COUNTER.sub("", line)).strip()
            drops = bool(re.search(r"\b(drop|reject)\b", rule))
            result.append(NfCounter("nft", table, chain, rule, handle.group(1) if handle else "?",
                                    int(counter.group(1)), drops, hook))
    return result


def netfilter_culprits(before: List[NfCounter], after: List[NfCounter]) -> List[Tuple[NfCounter, int]]:
    """Drop rules/policies whose counters grew between two snapshots, biggest growth first."""
    old = {c.key: c.packets for c in before}
    grown = [(c, c.packets - old.get(c.key, 0)) for c in after if c.drops]
    return sorted([(c, d) for c, d in grown if d > 0], key=lambda item: -item[1])


def likely_culprits(counters: List[NfCounter]) -> List[Tuple[NfCounter, int]]:
    """Without an earlier snapshot: drop rules/policies that have counted anything."""
    return sorted([(c, c.packets) for c in counters if c.drops and c.packets > 0], key=lambda i: -i[1])


NFT_HOOKS = {"INPUT": "input", "FORWARD": "forward", "OUTPUT": "output", "PREROUTING": "prerouting",
             "POSTROUTING": "postrouting"}


def nft_policy_guess(counters: List[NfCounter], hook: Optional[str]) -> Optional[NfCounter]:
    """The nft base chain whose drop policy most likely dropped a packet at `hook`."""
    wanted = NFT_HOOKS.get(hook or "", "")
    for c in counters:
        if c.tool == "nft" and c.position == "policy" and (not wanted or c.hook == wanted):
            return c
    return None


# ---------------------------------------------------------------- texts (pure)

def _iface(event) -> str:
    return event.ifname or f"if{event.ifindex}"


def _where(event) -> str:
    return f"netns {event.netns}"


def _cmd(event, command: str) -> str:
    return f"`ip netns exec {event.netns_name} {command}`" if event.netns_name else f"`{command}`"


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
    text += (f". Check {_cmd(event, f'ip route get {event.src}')}; fix the return route (asymmetric routing) "
             f"or use loose mode: sysctl net.ipv4.conf.{{all,{_iface(event)}}}.rp_filter=2")
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
    save = "ip6tables-save -c" if event.family == "ipv6" else "iptables-save -c"
    return f"{text}. Check {_cmd(event, save)} and {_cmd(event, 'nft list ruleset')}"


def forwarding_sysctl(family: Optional[str]) -> str:
    """The /proc/sys path of the switch that lets a namespace forward packets of `family`."""
    return "net/ipv6/conf/all/forwarding" if family == "ipv6" else "net/ipv4/ip_forward"


def _forwarding_name(event) -> str:
    """How the hints name that switch."""
    return "net.ipv6.conf.all.forwarding" if event.family == "ipv6" else "ip_forward"


def explain_inaddrerrors(event, facts: dict) -> str:
    fwd, name = facts.get("forwarding"), _forwarding_name(event)
    if fwd == 0:
        setting = forwarding_sysctl(event.family).replace("/", ".")
        return (f"{event.dst} is not a local address of {_where(event)} and {name}=0 there, so it will not "
                f"route the packet: enable forwarding with {_cmd(event, f'sysctl -w {setting}=1')} "
                f"or send it to the right host")
    return (f"address error for {event.dst} in {_where(event)} ({name}={fwd}, route "
            f"{_route_text(facts.get('route'))}): check the destination and {_cmd(event, f'ip route get {event.dst}')}")


def explain_noroute(event, facts: dict) -> str:
    route = facts.get("route")
    return (f"no route to {event.dst} in {_where(event)} (route lookup now: {_route_text(route)}; "
            f"{_forwarding_name(event)}={facts.get('forwarding')}): add a route or a default route, see "
            f"{_cmd(event, f'ip route get {event.dst}')}")


def explain_local_source(event, facts: dict) -> str:
    return (f"martian source: {event.src} is an address of {_where(event)} itself, arriving on {_iface(event)} "
            f"(accept_local all={facts.get('accept_local_all')}, {_iface(event)}={facts.get('accept_local_iface')}): "
            f"a looped or spoofed packet, or a duplicate address; check {_cmd(event, f'ip -br addr')} on both ends "
            f"or set accept_local=1 if intended")


def explain_invalid_source(event, facts: dict) -> str:
    return (f"martian source {event.src} on {_iface(event)} in {_where(event)} (route back: "
            f"{_route_text(facts.get('reverse_route'))}): broadcast/multicast/0.0.0.0 sources or one the routes "
            f"do not allow here; check {_cmd(event, f'ip route get {event.src}')} and log_martians")


def explain_neigh(event, facts: dict) -> str:
    route = facts.get("route")
    hop = (route or {}).get("gateway") or event.dst
    state = facts.get("neigh_state") or "none"
    what = "ARP/ND for" if event.reason == "NEIGH_FAILED" else "queue full while resolving"
    return (f"{what} next hop {hop} on {(route or {}).get('dev') or _iface(event)} got no answer "
            f"(neighbour state {state}) in {_where(event)}: is {hop} up and on the same L2 segment? "
            f"Check {_cmd(event, f'ip neigh show {hop}')}" +
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
    return (f"the {facts.get('qdisc') or ''} qdisc on {_iface(event)} in {_where(event)} dropped it (queue full "
            f"or policed; txqueuelen {facts.get('txqlen')}): check {_cmd(event, f'tc -s qdisc show dev {_iface(event)}')}")


def explain_xdp(event, facts: dict) -> str:
    prog = facts.get("xdp_prog_id")
    return (f"an XDP program on {_iface(event)} in {_where(event)} returned XDP_DROP/ABORTED"
            f" (prog id {prog})" if prog else f"an XDP program on {_iface(event)} dropped it") + \
        f": check {_cmd(event, f'ip link show dev {_iface(event)}')} and `bpftool prog show`"


def explain_tc(event, facts: dict) -> str:
    direction = "ingress" if event.reason == "TC_INGRESS" else "egress"
    return (f"a tc {direction} program/filter on {_iface(event)} in {_where(event)} dropped it (TC_ACT_SHOT): "
            f"check {_cmd(event, f'tc filter show dev {_iface(event)} {direction}')} and `bpftool net`")


def explain_too_big(event, facts: dict) -> str:
    return (f"{event.len}-byte packet exceeds the path MTU (out via {_route_text(facts.get('route'))}, mtu "
            f"{facts.get('mtu')}) in {_where(event)} and may not be fragmented (DF or IPv6): lower the MTU at the "
            f"sender or let ICMP 'fragmentation needed'/'packet too big' through")


EXPLAINERS: Dict[str, Callable] = {
    "IP_RPFILTER": explain_rpfilter,
    "NETFILTER_DROP": explain_netfilter,
    "IP_INADDRERRORS": explain_inaddrerrors,
    "IP_INNOROUTES": explain_noroute,
    "IP_OUTNOROUTES": explain_noroute,
    "IP_LOCAL_SOURCE": explain_local_source,
    "IP_INVALID_SOURCE": explain_invalid_source,
    "NEIGH_FAILED": explain_neigh,
    "NEIGH_QUEUEFULL": explain_neigh,
    "OTHERHOST": explain_otherhost,
    "NO_SOCKET": explain_no_socket,
    "QDISC_DROP": explain_qdisc,
    "XDP": explain_xdp,
    "TC_INGRESS": explain_tc,
    "TC_EGRESS": explain_tc,
    "PKT_TOO_BIG": explain_too_big,
}


def explain(event, facts: dict) -> Optional[str]:
    """The hint line for a drop given the facts; None for reasons without an explanation."""
    explainer = EXPLAINERS.get(event.reason)
    return explainer(event, facts) if explainer else None


def guess_hook(event, local_addresses: List[str]) -> str:
    """Which netfilter hook a NETFILTER_DROP most likely happened at (location is nf_hook_slow for all)."""
    if event.dst in local_addresses:
        return "INPUT"
    if event.src in local_addresses:
        return "OUTPUT"
    return "FORWARD"


# ---------------------------------------------------------------- reading namespace state

def _netns_exec(ns: Optional[str], *cmd: str, timeout: float = 5) -> Optional[str]:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


class NamespaceInspector:
    """Facts of one namespace (`ip netns` name, None for ours), each cached for FACT_TTL."""

    def __init__(self, ns: Optional[str], clock: Callable[[], float] = time.monotonic):
        self.ns = ns
        self.clock = clock
        self._cache: Dict[tuple, Tuple[float, object]] = {}
        self._nf_snapshot: Dict[str, List[NfCounter]] = {}
        self._nf_read_at: Dict[str, float] = {}
        self._nf_last: Dict[str, List[Tuple[NfCounter, int]]] = {}

    def _cached(self, key: tuple, compute: Callable[[], object]):
        now = self.clock()
        hit = self._cache.get(key)
        if hit and now - hit[0] < FACT_TTL:
            return hit[1]
        value = None
        with survive(log, "reading %s in netns %s", key, self.ns):
            value = compute()
        self._cache[key] = (now, value)
        return value

    def sysctl(self, path: str) -> Optional[int]:
        """An integer under /proc/sys (e.g. net/ipv4/ip_forward) as seen inside the namespace."""
        def read():
            with in_netns(self.ns), open(os.path.join("/proc/sys", path)) as f:
                return int(f.read().split()[0])
        return self._cached(("sysctl", path), read)

    def proc_net(self, name: str) -> Optional[str]:
        def read():
            with in_netns(self.ns), open(f"/proc/thread-self/net/{name}") as f:
                return f.read()
        return self._cached(("proc_net", name), read)

    def route(self, dst: str) -> Optional[dict]:
        """`ip route get DST` there: {type, dev, gateway} or {error}."""
        return self._cached(("route", dst), lambda: self._route_get(dst))

    def _route_get(self, dst: str) -> dict:
        with ipr(self.ns) as sock:
            try:
                msg = sock.route("get", dst=dst)[0]
            except Exception as exc:  # pyroute2's NetlinkError carries the errno as .code
                code = getattr(exc, "code", None) or getattr(exc, "errno", None)
                return {"error": os.strerror(code) if code else str(exc)}
            oif = msg.get_attr("RTA_OIF")
            links = {m["index"]: m for m in sock.get_links(oif)} if oif else {}
            link = links.get(oif)
            types = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
            return {"type": types.get(msg["type"], str(msg["type"])), "dev": link.get_attr("IFLA_IFNAME") if link else None,
                    "gateway": msg.get_attr("RTA_GATEWAY"), "mtu": link.get_attr("IFLA_MTU") if link else None}

    def link(self, ifname: Optional[str]) -> Optional[dict]:
        def read():
            with ipr(self.ns) as sock:
                msg = sock.get_links(ifname=ifname)[0]
                xdp = msg.get_attr("IFLA_XDP")
                return {"mac": msg.get_attr("IFLA_ADDRESS"), "mtu": msg.get_attr("IFLA_MTU"),
                        "txqlen": msg.get_attr("IFLA_TXQLEN"), "qdisc": msg.get_attr("IFLA_QDISC"),
                        "xdp_prog_id": xdp.get_attr("IFLA_XDP_PROG_ID") if xdp else None}
        return self._cached(("link", ifname), read) if ifname else None

    def local_addresses(self) -> List[str]:
        """Every address of the namespace's interfaces: the local end on point-to-point links
        (IFA_LOCAL), not the peer, as interface_addresses() reads them."""
        def read():
            return [addr for iface in list_interfaces(self.ns) for addr in interface_addresses(iface)]
        return self._cached(("addrs",), read) or []

    def neigh_state(self, addr: str) -> Optional[str]:
        def read():
            states = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
                      0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT"}
            with ipr(self.ns) as sock:
                for msg in sock.get_neighbours(dst=addr):
                    return states.get(msg["state"], hex(msg["state"]))
            return None
        return self._cached(("neigh", addr), read)

    def listening(self, proto: Optional[str], family: Optional[str], port: Optional[int]) -> Optional[bool]:
        """Is a socket bound to `port` now (from /proc/net/{tcp,udp}[6] inside the namespace)?"""
        if proto not in ("tcp", "udp") or port is None:
            return None
        found = False
        for name in (proto, proto + "6"):
            text = self.proc_net(name)
            if text is None:
                continue
            for line in text.splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and int(fields[1].rsplit(":", 1)[1], 16) == port and \
                        (proto == "udp" or fields[3] == "0A"):  # 0A: TCP_LISTEN
                    found = True
        return found

    # netfilter -----------------------------------------------------------------

    def netfilter_counters(self, family: str) -> List[NfCounter]:
        v6 = family == "ipv6"
        counters: List[NfCounter] = []
        save = _netns_exec(self.ns, "ip6tables-save" if v6 else "iptables-save", "-c") or ""
        nft_backend = self._iptables_is_nft()
        if save:
            counters += parse_iptables_save(save, "iptables-nft" if nft_backend else "iptables-legacy")
        if nft_backend and self._legacy_tables(v6):
            text = _netns_exec(self.ns, "ip6tables-legacy-save" if v6 else "iptables-legacy-save", "-c")
            if text:
                counters += parse_iptables_save(text, "iptables-legacy")
        text = _netns_exec(self.ns, "nft", "-a", "list", "ruleset")
        if text:
            counters += native_nft_counters(parse_nft_ruleset(text), family, save if nft_backend else "")
        return counters

    def _iptables_is_nft(self) -> bool:
        def read():
            out = subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout
            return "nf_tables" in out
        return bool(self._cached(("iptables-nft",), read))

    def _legacy_tables(self, v6: bool) -> bool:
        text = self.proc_net("ip6_tables_names" if v6 else "ip_tables_names")
        return bool(text and text.strip())

    def prime_netfilter(self, family: str) -> None:
        """Take the baseline snapshot that later drops are diffed against."""
        self._nf_snapshot[family] = self.netfilter_counters(family)
        self._nf_read_at[family] = self.clock()

    def netfilter_attribution(self, family: str) -> Tuple[List[Tuple[NfCounter, int]], bool, List[NfCounter]]:
        """(culprits, exact, counters): the drop rules whose counters grew since the last look.
        At most one read per NETFILTER_MIN_GAP; in between the last answer stands."""
        now = self.clock()
        last_read = self._nf_read_at.get(family)
        if last_read is not None and now - last_read < NETFILTER_MIN_GAP and family in self._nf_last:
            return self._nf_last[family], True, self._nf_snapshot.get(family, [])
        after = self.netfilter_counters(family)
        before = self._nf_snapshot.get(family)
        if before is None:
            culprits, exact = likely_culprits(after), False
        else:
            culprits, exact = netfilter_culprits(before, after), True
            if not culprits and family in self._nf_last:
                culprits = self._nf_last[family]  # drops counted by an earlier read
        self._nf_snapshot[family], self._nf_read_at[family] = after, now
        self._nf_last[family] = culprits
        return culprits, exact, after


# ---------------------------------------------------------------- the engine

class HintEngine:
    """event -> hint text, reading facts from the event's namespace (cached, throttled)."""

    def __init__(self):
        self._inspectors: Dict[Optional[str], NamespaceInspector] = {}
        self._own_inode: Optional[int] = None

    def inspector(self, event) -> Optional[NamespaceInspector]:
        if self._own_inode is None:
            self._own_inode = os.stat("/proc/thread-self/ns/net").st_ino
        if event.netns_inode == self._own_inode:
            ns = None
        elif event.netns_name:
            ns = event.netns_name
        else:
            return None  # an unnamed namespace we cannot enter by name
        if ns not in self._inspectors:
            self._inspectors[ns] = NamespaceInspector(ns)
        return self._inspectors[ns]

    def prime(self, flt, names) -> None:
        """Baseline netfilter snapshots for the namespaces in scope (not for --all-netns)."""
        if flt.all_netns:
            return
        inodes = {i.netns_inode for i in flt.ifaces} | set(flt.netns_inodes)
        for inode in list(inodes)[:8]:
            ok, ns = names.netns_reachable(inode)
            if not ok:
                continue
            inspector = self._inspectors.setdefault(ns, NamespaceInspector(ns))
            for family in ("ipv4", "ipv6"):
                with survive(log, "reading the %s rulesets of netns %s", family, ns):
                    inspector.prime_netfilter(family)

    def facts(self, event, ns: NamespaceInspector) -> dict:
        reason, iface = event.reason, event.ifname
        if reason == "IP_RPFILTER":
            return {"rp_filter_all": ns.sysctl("net/ipv4/conf/all/rp_filter"),
                    "rp_filter_iface": ns.sysctl(f"net/ipv4/conf/{iface}/rp_filter") if iface else None,
                    "reverse_route": ns.route(event.src) if event.src else None}
        if reason == "NETFILTER_DROP":
            culprits, exact, counters = ns.netfilter_attribution(event.family or "ipv4")
            hook = guess_hook(event, ns.local_addresses())
            return {"hook": hook, "culprits": culprits, "exact": exact,
                    "policy": None if culprits else nft_policy_guess(counters, hook)}
        if reason in ("IP_INADDRERRORS", "IP_INNOROUTES", "IP_OUTNOROUTES"):
            return {"forwarding": ns.sysctl(forwarding_sysctl(event.family)),
                    "route": ns.route(event.dst) if event.dst else None}
        if reason == "IP_LOCAL_SOURCE":
            return {"accept_local_all": ns.sysctl("net/ipv4/conf/all/accept_local"),
                    "accept_local_iface": ns.sysctl(f"net/ipv4/conf/{iface}/accept_local") if iface else None}
        if reason == "IP_INVALID_SOURCE":
            return {"reverse_route": ns.route(event.src) if event.src else None}
        if reason in ("NEIGH_FAILED", "NEIGH_QUEUEFULL"):
            route = ns.route(event.dst) if event.dst else None
            hop = (route or {}).get("gateway") or event.dst
            return {"route": route, "neigh_state": ns.neigh_state(hop) if hop else None,
                    "unres_qlen_bytes": ns.sysctl(_neigh_sysctl(event, "unres_qlen_bytes")) if iface else None}
        if reason == "NO_SOCKET":
            return {"listening": ns.listening(event.proto, event.family, event.dport)}
        if reason in ("OTHERHOST", "QDISC_DROP", "XDP"):
            return dict(ns.link(iface) or {})
        if reason == "PKT_TOO_BIG":
            route = ns.route(event.dst) if event.dst else None
            return {"route": route, "mtu": (route or {}).get("mtu")}
        return {}

    def hint(self, event) -> Optional[str]:
        if event.reason not in EXPLAINERS:
            return None
        ns = self.inspector(event)
        facts = {}
        if ns is not None:
            with survive(log, "reading the facts for a %s drop", event.reason):
                facts = self.facts(event, ns)
        return explain(event, facts)
