"""Would this namespace's netfilter rules drop an ICMP echo (request or reply)?

Evaluates the rules facts/netfilter.py parsed from `iptables-save` text and `nft -j list
ruleset` JSON (tables that iptables-nft manages appear in both; they are evaluated once, from
the iptables text). A match we do not understand makes the rule "uncertain": it never
produces a drop verdict on its own. The packet's family decides what is read: IPv4 meets
iptables and nft `ip`/`inet` chains, IPv6 (ICMPv6 echo, types 128/129) ip6tables and nft
`ip6`/`inet` chains; nft `bridge` chains see both."""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..commands import Argv, argv_of
from ..facts.netfilter import IPV4, IPV6, IptTable, iptables_managed_tables, nft_objects, parse_iptables_save
from .state import family_of

ICMP_TYPES = {"echo-request": 8, "echo-reply": 0, "destination-unreachable": 3, "any": None}
ICMPV6_TYPES = {"echo-request": 128, "echo-reply": 129, "destination-unreachable": 1, "packet-too-big": 2,
                "time-exceeded": 3, "neighbour-solicitation": 135, "neighbor-solicitation": 135,
                "neighbour-advertisement": 136, "neighbor-advertisement": 136, "any": None}
HOOK_CHAINS = {"input": "INPUT", "forward": "FORWARD", "output": "OUTPUT"}
# per family: iptables tool, the protocol words that name ICMP(v6), the nft families whose chains see it
TOOL = {4: "iptables", 6: "ip6tables"}
ICMP_PROTOCOLS = {4: ("icmp", "1"), 6: ("ipv6-icmp", "icmpv6", "icmp6", "58")}
NFT_FAMILIES = {4: ("ip", "inet"), 6: ("ip6", "inet")}


@dataclass
class Packet:
    hook: str                      # input, forward, output
    src: str
    dst: str
    icmp_type: int                 # 8 request, 0 reply
    iif: str = ""
    oif: str = ""
    ctstate: str = "NEW"           # NEW for the request, ESTABLISHED for the reply
    physdev_in: str = ""           # bridged traffic (br_netfilter)
    physdev_out: str = ""
    # the layer-4 protocol: icmp (the ping itself; icmp_type says which), or a tunnel's outer
    # packet: udp (vxlan/geneve, `dport`), gre, ipip (IPPROTO_IPIP, 4), ipv6 (sit, 41)
    proto: str = "icmp"
    dport: Optional[int] = None
    sport: Optional[int] = None

    @property
    def family(self) -> int:
        return family_of(self.dst)

    @property
    def kind(self) -> str:
        """ICMP echo-request / echo-reply (the same words for ICMPv6)."""
        return "echo-request" if self.icmp_type in (8, 128) else "echo-reply"


@dataclass
class Verdict:
    dropped: bool
    where: str = ""                # "iptables filter FORWARD" / "nft inet fw forward"
    rule: str = ""                 # the rule text, or "policy DROP"
    fix: List[Argv] = field(default_factory=list)   # argv of commands, run in the namespace checked
    uncertain: List[str] = field(default_factory=list)


@dataclass
class Story:
    """What a runtime's own rules (Docker's, the CNI plugins') make of a drop: the precise cause,
    and fixes that leave the chains the runtime rewrites alone."""
    cause: str
    detail: str
    fix: List[Argv]  # run in the namespace checked


def filter_chain_exists(iptables_save: str, chain: str) -> bool:
    """The iptables filter table has this chain (a runtime that writes it runs in the namespace)."""
    table = parse_iptables_save(iptables_save).tables.get("filter")
    return table is not None and chain in table.chains


# -- iptables ----------------------------------------------------------------------------------

def _addr_match(value: str, address: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(value, strict=False)


def _iface_match(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def _icmp_type(value: str, family: int = 4) -> Optional[int]:
    value = value.split("/")[0]
    names = ICMPV6_TYPES if family == 6 else ICMP_TYPES
    if value in names:
        return names[value]
    return int(value) if value.isdigit() else -1


def _and3(result: Optional[bool], ok: Optional[bool]) -> Optional[bool]:
    """Three-valued AND of rule matches: False wins, then None (a match we cannot judge)."""
    if result is False or ok is False:
        return False
    return None if result is None or ok is None else True


def match_ipt_rule(args: List[str], pkt: Packet) -> Tuple[Optional[bool], str]:
    """(True/False/None for unknown, target). Options follow iptables-save's canonical order."""
    result: Optional[bool] = True
    target = ""
    negate = False
    i = 0

    def apply(ok: Optional[bool]) -> None:
        nonlocal result, negate
        if ok is not None and negate:
            ok = not ok
        negate = False
        result = _and3(result, ok)

    while i < len(args):
        opt = args[i]
        val = args[i + 1] if i + 1 < len(args) else ""
        if opt == "!":
            negate = True
            i += 1
            continue
        step = 2
        if opt in ("-s", "--source"):
            apply(_addr_match(val, pkt.src))
        elif opt in ("-d", "--destination"):
            apply(_addr_match(val, pkt.dst))
        elif opt in ("-i", "--in-interface"):
            apply(_iface_match(val, pkt.iif))
        elif opt in ("-o", "--out-interface"):
            apply(_iface_match(val, pkt.oif))
        elif opt in ("-p", "--protocol"):
            apply(val.lower() in ICMP_PROTOCOLS[pkt.family] + ("all", "0"))
        elif opt in ("--icmp-type", "--icmpv6-type"):
            wanted = _icmp_type(val, 6 if opt == "--icmpv6-type" else 4)
            apply(True if wanted is None else wanted == pkt.icmp_type)
        elif opt in ("--ctstate", "--state"):
            apply(pkt.ctstate in val.split(","))
        elif opt == "--physdev-in":
            apply(_iface_match(val, pkt.physdev_in) if pkt.physdev_in else False)
        elif opt == "--physdev-out":
            apply(_iface_match(val, pkt.physdev_out) if pkt.physdev_out else False)
        elif opt == "--physdev-is-bridged":
            apply(bool(pkt.physdev_in))
            step = 1
        elif opt in ("-m", "--match", "--comment", "--reject-with", "--log-prefix", "--log-level"):
            pass
        elif opt in ("-j", "--jump", "-g", "--goto"):
            target = val
        else:
            apply(None)
            step = 1 if val.startswith("-") or not val else 2
        i += step
    return result, target


def eval_ipt_chain(table: IptTable, chain: str, pkt: Packet, depth: int = 0) -> Tuple[str, str, List[str]]:
    """('accept'|'drop'|'return', rule text, uncertain rules) for one chain."""
    uncertain: List[str] = []
    if depth > 16:
        return "return", "", uncertain
    for rule in (table.chains[chain].rules if chain in table.chains else []):
        matched, target = match_ipt_rule(rule.args, pkt)
        if matched is None:
            if target in ("DROP", "REJECT"):
                uncertain.append(rule.text)
            continue
        if not matched:
            continue
        if target == "ACCEPT":
            return "accept", rule.text, uncertain
        if target in ("DROP", "REJECT"):
            return "drop", rule.text, uncertain
        if target == "RETURN":
            return "return", rule.text, uncertain
        if target in table.chains:
            verdict, text, more = eval_ipt_chain(table, target, pkt, depth + 1)
            uncertain += more
            if verdict != "return":
                return verdict, text, uncertain
    return "return", "", uncertain


def iptables_verdict(tables: Dict[str, IptTable], pkt: Packet) -> Verdict:
    chain = HOOK_CHAINS[pkt.hook]
    table = tables.get("filter")
    tool = TOOL[pkt.family]
    if table is None or chain not in table.policies:
        return Verdict(False)
    verdict, text, uncertain = eval_ipt_chain(table, chain, pkt)
    if verdict == "return":
        if table.policies[chain] == "DROP":
            return Verdict(True, f"{tool} filter {chain}", "policy DROP",
                           [_ipt_policy_fix(chain, pkt)], uncertain)
        return Verdict(False, uncertain=uncertain)
    if verdict == "drop":
        words = shlex.split(text)  # the rule may sit in a chain FORWARD jumps to (DOCKER-USER)
        return Verdict(True, f"{tool} filter {chain}", text, [argv_of("{} -t filter -D", tool) + tuple(words[1:])],
                       uncertain)
    return Verdict(False, uncertain=uncertain)


def _ipt_policy_fix(chain: str, pkt: Packet) -> str:
    tool = TOOL[pkt.family]
    if pkt.physdev_in:  # bridged traffic: what Docker users add (`-i br0 -o br0`)
        return argv_of("{} -I {} -i {} -o {} -j ACCEPT", tool, chain, pkt.iif, pkt.oif)
    # IPv6: all of ICMPv6, so neighbour discovery passes too
    return argv_of("{} -I {} -p {} -j ACCEPT", tool, chain, ICMP_PROTOCOLS[pkt.family][0])


# -- nftables ----------------------------------------------------------------------------------

def _nft_value(left: dict, pkt: Packet):
    six = pkt.family == 6
    if "meta" in left:
        key = left["meta"].get("key")
        return {"iifname": pkt.iif, "oifname": pkt.oif, "l4proto": "ipv6-icmp" if six else "icmp",
                "protocol": "ip6" if six else "ip", "nfproto": "ipv6" if six else "ipv4"}.get(key, _UNKNOWN)
    if "payload" in left:
        p = left["payload"]
        proto, fld = p.get("protocol"), p.get("field")
        header, icmp = ("ip6", "icmpv6") if six else ("ip", "icmp")
        if proto == header:
            return {"saddr": pkt.src, "daddr": pkt.dst, "protocol": "icmp",
                    "nexthdr": "ipv6-icmp"}.get(fld, _UNKNOWN)
        if proto == icmp and fld == "type":
            return pkt.icmp_type
        if proto in ("tcp", "udp", "ip", "ip6", "icmp", "icmpv6", "sctp"):
            return _ABSENT
        return _UNKNOWN
    if "ct" in left and left["ct"].get("key") == "state":
        return pkt.ctstate.lower()
    return _UNKNOWN


_UNKNOWN = object()
_ABSENT = object()
_NFT_ICMP = {"echo-request": 8, "echo-reply": 0}
_NFT_ICMPV6 = {"echo-request": 128, "echo-reply": 129, "packet-too-big": 2, "nd-neighbor-solicit": 135,
               "nd-neighbor-advert": 136}
_PROTOCOL_ALIASES = {"icmpv6": "ipv6-icmp", "58": "ipv6-icmp", "1": "icmp"}


def _nft_right_matches(value, right) -> bool:
    if isinstance(right, dict) and "set" in right:
        return any(_nft_right_matches(value, r) for r in right["set"])
    if isinstance(right, list):
        return any(_nft_right_matches(value, r) for r in right)
    if isinstance(right, dict) and "prefix" in right:
        net = f"{right['prefix']['addr']}/{right['prefix']['len']}"
        return isinstance(value, str) and _is_ip(value) and _addr_match(net, value)
    if isinstance(right, dict) and "range" in right:
        return False
    if isinstance(value, int) and isinstance(right, str):
        names = _NFT_ICMPV6 if value >= 128 else _NFT_ICMP   # echo: 8/0 in ICMP, 128/129 in ICMPv6
        return names.get(right, -1) == value
    if isinstance(value, str) and value in ("icmp", "ipv6-icmp") and isinstance(right, int):
        return right == (58 if value == "ipv6-icmp" else 1)
    if isinstance(right, str) and isinstance(value, str):
        if right.endswith("*"):
            return value.startswith(right[:-1])
        if _is_ip(right) and _is_ip(value):
            return ipaddress.ip_address(right) == ipaddress.ip_address(value)
        return _PROTOCOL_ALIASES.get(right.lower(), right.lower()) == value.lower()
    return right == value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def match_nft_rule(exprs: List[dict], pkt: Packet) -> Tuple[Optional[bool], Optional[dict]]:
    result: Optional[bool] = True
    verdict = None
    for expr in exprs:
        if "match" in expr:
            m = expr["match"]
            value = _nft_value(m.get("left", {}), pkt)
            if value is _ABSENT:
                ok: Optional[bool] = False
            elif value is _UNKNOWN:
                ok = None
            else:
                hit = _nft_right_matches(value, m.get("right"))
                if m.get("op") == "!=":
                    hit = not hit
                ok = hit
            result = _and3(result, ok)
        elif any(k in expr for k in ("accept", "drop", "reject", "jump", "goto", "return")):
            verdict = expr
        elif any(k in expr for k in ("counter", "log", "comment", "limit")):
            continue
        elif "xt" in expr:
            result = _and3(result, None)
    return result, verdict


def nft_verdicts(ruleset: dict, pkt: Packet, families=("ip", "inet"), skip_tables=()) -> List[Verdict]:
    chains = [c for c in nft_objects(ruleset, "chain")
              if c.get("hook") == pkt.hook and c.get("family") in families
              and (c["family"], c["table"]) not in skip_tables]
    rules = nft_objects(ruleset, "rule")
    result = []
    for chain in sorted(chains, key=lambda c: c.get("prio", 0)):
        verdict, rule, uncertain = _eval_nft_chain(chain, rules, pkt, 0)
        where = f"nft {chain['family']} {chain['table']} {chain['name']}"
        if verdict == "drop":
            fix = [argv_of("nft delete rule {} {} {} handle {}", rule["family"], rule["table"], rule["chain"],
                           rule["handle"])]
            result.append(Verdict(True, where, _nft_rule_text(rule), fix, uncertain))
        elif verdict == "return" and chain.get("policy") == "drop":
            if pkt.family == 6:  # all of ICMPv6: neighbour discovery too
                match = argv_of("meta l4proto ipv6-icmp")
            else:
                match = argv_of("meta l4proto icmp") if chain["family"] != "ip" else argv_of("ip protocol icmp")
            fix = [argv_of("nft insert rule {} {} {}", chain["family"], chain["table"], chain["name"]) + match
                   + ("accept",)]
            result.append(Verdict(True, where, "policy drop", fix, uncertain))
    return result


def _eval_nft_chain(chain: dict, rules: List[dict], pkt: Packet, depth: int):
    uncertain: List[str] = []
    if depth > 16:
        return "return", None, uncertain
    for rule in rules:
        if (rule["family"], rule["table"], rule["chain"]) != (chain["family"], chain["table"], chain["name"]):
            continue
        matched, verdict = match_nft_rule(rule.get("expr", []), pkt)
        if verdict is None or matched is False:
            continue
        if matched is None:
            if "drop" in verdict or "reject" in verdict:
                uncertain.append(_nft_rule_text(rule))
            continue
        if "accept" in verdict:
            return "accept", rule, uncertain
        if "drop" in verdict or "reject" in verdict:
            return "drop", rule, uncertain
        if "return" in verdict:
            return "return", rule, uncertain
        target = (verdict.get("jump") or verdict.get("goto") or {}).get("target")
        sub = {"family": chain["family"], "table": chain["table"], "name": target}
        v, r, more = _eval_nft_chain(sub, rules, pkt, depth + 1)
        uncertain += more
        if v != "return":
            return v, r, uncertain
    return "return", None, uncertain


def _nft_rule_text(rule: dict) -> str:
    return f"{rule['family']} {rule['table']} {rule['chain']} handle {rule.get('handle')}"


# -- both --------------------------------------------------------------------------------------

def firewall_verdict(iptables_save: str, nft_ruleset: dict, pkt: Packet, bridged: bool = False) -> Verdict:
    """The first drop the packet meets at this hook, or a pass (with rules we could not judge).
    `iptables_save`: the text of the packet's family (ip6tables-save for IPv6)."""
    ruleset = parse_iptables_save(iptables_save, TOOL[pkt.family], IPV6 if pkt.family == 6 else IPV4)
    verdicts = [iptables_verdict(ruleset.tables, pkt)]
    managed = iptables_managed_tables([ruleset])
    verdicts += nft_verdicts(nft_ruleset, pkt, NFT_FAMILIES[pkt.family], managed)
    uncertain = [u for v in verdicts for u in v.uncertain]
    for v in verdicts:
        if v.dropped:
            return v
    return Verdict(False, uncertain=uncertain)


def bridge_family_verdict(nft_ruleset: dict, pkt: Packet) -> Verdict:
    """nft `bridge` family forward chains see bridged frames whatever br_netfilter says."""
    for v in nft_verdicts(nft_ruleset, pkt, ("bridge",)):
        if v.dropped:
            return v
    return Verdict(False)
