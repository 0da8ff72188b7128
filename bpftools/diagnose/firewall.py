"""Would this namespace's netfilter rules drop an ICMP echo (request or reply), or a tunnel's
outer packet carrying one (VXLAN/GENEVE in UDP, GRE, IP-in-IP, IPv6-in-IPv4)?

Evaluates the rules facts/netfilter.py parsed from `iptables-save` text and `nft -j list
ruleset` JSON (tables that iptables-nft manages appear in both; they are evaluated once, from
the iptables text). A match we do not understand makes the rule "uncertain": it never
produces a drop verdict on its own. The packet's family decides what is read: IPv4 meets
iptables and nft `ip`/`inet` chains, IPv6 (ICMPv6 echo, types 128/129) ip6tables and nft
`ip6`/`inet` chains; nft `bridge` chains see both. Protocols are compared by number: the names
iptables-save and nft print come from /etc/protocols, where `ipip` is 94 and IP-in-IP (4), the
protocol of the kernel's ipip tunnels, is `ipencap`."""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

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
ICMP_PROTOCOLS = {4: "icmp", 6: "ipv6-icmp"}
NFT_FAMILIES = {4: ("ip", "inet"), 6: ("ip6", "inet")}
# IANA numbers of the protocol names iptables-save and nft print (/etc/protocols), and the aliases
# iptables accepts; a name not here is a match we cannot judge
PROTOCOL_NUMBERS = {"all": 0, "icmp": 1, "ipencap": 4, "tcp": 6, "udp": 17, "ipv6": 41, "gre": 47, "esp": 50,
                    "ah": 51, "ipv6-icmp": 58, "icmpv6": 58, "icmp6": 58, "ipip": 94, "sctp": 132, "udplite": 136}
# Packet.proto -> IP protocol number (the outer packet's: ipip is IPPROTO_IPIP, sit's is IPPROTO_IPV6)
PACKET_PROTOCOLS = {"udp": 17, "gre": 47, "ipip": 4, "ipv6": 41}
# how a fix names the packet's protocol: numbers where the name misleads (`ipip` is 94, not 4)
PROTOCOL_WORDS = {"udp": "udp", "gre": "gre", "ipip": "4", "ipv6": "41"}


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

    @property
    def protocol(self) -> int:
        """The IP protocol number (ICMP: 1, ICMPv6: 58)."""
        if self.proto == "icmp":
            return 58 if self.family == 6 else 1
        return PACKET_PROTOCOLS[self.proto]

    def describe(self) -> str:
        """`ICMP echo-request`, `UDP to port 4789`, `GRE`, `IP protocol 4 (IP-in-IP)`: for messages."""
        if self.proto == "icmp":
            return f"{'ICMPv6' if self.family == 6 else 'ICMP'} {self.kind}"
        if self.proto == "udp":
            return "UDP" + (f" to port {self.dport}" if self.dport is not None else "")
        return {"gre": "GRE", "ipip": "IP protocol 4 (IP-in-IP)", "ipv6": "IP protocol 41 (IPv6-in-IPv4)"}[self.proto]


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


def protocol_number(word) -> Optional[int]:
    """A protocol as iptables or nft name it (a name of /etc/protocols, or a number); None: unknown."""
    if isinstance(word, int):
        return word
    word = str(word).lower()
    return int(word) if word.isdigit() else PROTOCOL_NUMBERS.get(word)


def _protocol_match(word, pkt: Packet) -> Optional[bool]:
    number = protocol_number(word)
    return None if number is None else number in (0, pkt.protocol)


def _port_match(value: str, port: Optional[int]) -> Optional[bool]:
    """`4789`, `1000:2000`, `4789:`, `:1024`; a packet without ports matches none. A service name
    (iptables-save prints numbers) cannot be judged."""
    if port is None:
        return False
    low, sep, high = value.partition(":")
    if not all(part.isdigit() for part in (low, high) if part) or not (low or high):
        return None
    if not sep:
        return port == int(low)
    return int(low or 0) <= port <= int(high or 65535)


def _ports_match(value: str, ports: List[Optional[int]]) -> Optional[bool]:
    """multiport's `4789,8472,6000:6100` against any of the packet's ports."""
    results = [_port_match(item, port) for item in value.split(",") for port in ports]
    return True if True in results else (None if None in results else False)


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
            apply(_protocol_match(val, pkt))
        elif opt in ("--icmp-type", "--icmpv6-type"):
            wanted = _icmp_type(val, 6 if opt == "--icmpv6-type" else 4)
            apply(pkt.proto == "icmp" and (wanted is None or wanted == pkt.icmp_type))
        elif opt in ("--dport", "--destination-port", "--sport", "--source-port"):
            apply(_port_match(val, pkt.dport if opt.startswith("--d") else pkt.sport))
        elif opt in ("--dports", "--destination-ports", "--sports", "--source-ports", "--ports"):
            ports = {"--dports": [pkt.dport], "--destination-ports": [pkt.dport], "--ports": [pkt.sport, pkt.dport]}
            apply(_ports_match(val, ports.get(opt, [pkt.sport])))
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
                           _ipt_policy_fix(table, chain, pkt), uncertain)
        return Verdict(False, uncertain=uncertain)
    if verdict == "drop":
        words = shlex.split(text)  # the rule may sit in a chain FORWARD jumps to (DOCKER-USER)
        return Verdict(True, f"{tool} filter {chain}", text, [argv_of("{} -t filter -D", tool) + tuple(words[1:])],
                       uncertain)
    return Verdict(False, uncertain=uncertain)


def _ipt_drops(table: IptTable, chain: str, pkt: Packet) -> bool:
    verdict = eval_ipt_chain(table, chain, pkt)[0]
    return verdict == "drop" or (verdict == "return" and table.policies.get(chain) == "DROP")


def _ipt_policy_fix(table: IptTable, chain: str, pkt: Packet) -> List[Argv]:
    tool = TOOL[pkt.family]
    if pkt.physdev_in:  # bridged traffic: what Docker users add (`-i br0 -o br0`)
        return [argv_of("{} -I {} -i {} -o {} -j ACCEPT", tool, chain, pkt.iif, pkt.oif)]
    return [argv_of("{} -I {}", tool, chain) + a.iptables_words(pkt.family) + ("-j", "ACCEPT")
            for a in accepts_for(pkt, lambda p: _ipt_drops(table, chain, p))]


# -- what a policy fix lets through ------------------------------------------------------------

@dataclass(frozen=True)
class Accept:
    """What a fix for a drop policy lets through: a protocol (as the fix names it), from one sender,
    to one UDP port. One description, written for iptables and for nft."""
    protocol: str                  # icmp, ipv6-icmp, udp, gre, 4 (IP-in-IP), 41 (IPv6-in-IPv4)
    src: Optional[str] = None
    dport: Optional[int] = None

    def iptables_words(self, family: int) -> Argv:
        words = argv_of("-s {}/{}", self.src, 128 if family == 6 else 32) if self.src else ()
        words += ("-p", self.protocol)
        return words + (argv_of("-m udp --dport {}", self.dport) if self.dport is not None else ())

    def nft_words(self, family: int, chain_family: str) -> Argv:
        words = argv_of("{} saddr {}", "ip6" if family == 6 else "ip", self.src) if self.src else ()
        if self.dport is not None:
            return words + argv_of("udp dport {}", self.dport)
        if chain_family == "ip":
            return words + argv_of("ip protocol {}", self.protocol)
        return words + argv_of("meta l4proto {}", self.protocol)


def accepts_for(pkt: Packet, drops) -> List[Accept]:
    """What to accept so `pkt` passes a chain whose policy drops it. The ping: all of ICMP (IPv6: of
    ICMPv6, so neighbour discovery passes too). A tunnel's outer packets: their protocol (UDP: to
    their port) from their sender only, plus ICMPv6 when `drops` (the chain's verdict on a packet)
    says neighbour solicitations between the endpoints are dropped too: IPv6 endpoints that cannot
    resolve each other exchange nothing."""
    if pkt.proto == "icmp":
        return [Accept(ICMP_PROTOCOLS[pkt.family])]
    flow = Accept(PROTOCOL_WORDS[pkt.proto], pkt.src, pkt.dport if pkt.proto == "udp" else None)
    solicitation = replace(pkt, proto="icmp", icmp_type=135, ctstate="UNTRACKED", dport=None, sport=None)
    if pkt.family == 6 and pkt.hook != "forward" and drops(solicitation):
        return [Accept(ICMP_PROTOCOLS[6]), flow]
    return [flow]


# -- nftables ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Field:
    """What the left side of an nft match reads from the packet, and how its right side compares."""
    kind: str        # addr, iface, proto, port, icmp_type, ctstate, word
    value: object
    family: int = 4  # icmp_type: whose names (ICMP or ICMPv6)


_UNKNOWN = object()   # a field we cannot read: the match is not judged
_ABSENT = object()    # a header the packet has not (a `tcp dport` match on UDP): the match fails
_TRANSPORT = ("tcp", "udp", "udplite", "sctp", "dccp")


def _nft_value(left: dict, pkt: Packet):
    six = pkt.family == 6
    if "meta" in left:
        key = left["meta"].get("key")
        fields = {"iifname": _Field("iface", pkt.iif), "oifname": _Field("iface", pkt.oif),
                  "l4proto": _Field("proto", pkt.protocol), "protocol": _Field("word", "ip6" if six else "ip"),
                  "nfproto": _Field("word", "ipv6" if six else "ipv4")}
        return fields.get(key, _UNKNOWN)
    if "payload" in left:
        return _nft_payload(left["payload"].get("protocol"), left["payload"].get("field"), pkt)
    if "ct" in left and left["ct"].get("key") == "state":
        return _Field("ctstate", pkt.ctstate.lower())
    return _UNKNOWN


def _nft_payload(proto: Optional[str], fld: Optional[str], pkt: Packet):
    six = pkt.family == 6
    header, other, icmp = ("ip6", "ip", "icmpv6") if six else ("ip", "ip6", "icmp")
    if proto == header:
        return {"saddr": _Field("addr", pkt.src), "daddr": _Field("addr", pkt.dst),
                "protocol" if not six else "nexthdr": _Field("proto", pkt.protocol)}.get(fld, _UNKNOWN)
    if proto in (other, "icmp", "icmpv6"):
        if proto != icmp or pkt.proto != "icmp":
            return _ABSENT
        return _Field("icmp_type", pkt.icmp_type, pkt.family) if fld == "type" else _UNKNOWN
    if proto in _TRANSPORT + ("th",):
        if pkt.proto != "udp":   # `th` reads the bytes where ports would be: of ICMP or GRE, unknown
            return _UNKNOWN if proto == "th" else _ABSENT
        if proto not in ("udp", "th"):
            return _ABSENT
        return {"dport": _Field("port", pkt.dport), "sport": _Field("port", pkt.sport)}.get(fld, _UNKNOWN)
    return _UNKNOWN


_NFT_ICMP = {"echo-request": 8, "echo-reply": 0, "destination-unreachable": 3}
_NFT_ICMPV6 = {"echo-request": 128, "echo-reply": 129, "destination-unreachable": 1, "packet-too-big": 2,
               "nd-neighbor-solicit": 135, "nd-neighbor-advert": 136}


def _any3(results) -> Optional[bool]:
    """Three-valued OR: True wins, then None."""
    results = list(results)
    return True if True in results else (None if None in results else False)


def _nft_scalar(field_: _Field, right) -> Optional[object]:
    """The right side as a value comparable with the field's (None: cannot say)."""
    kind = field_.kind
    if kind == "proto":
        return protocol_number(right)
    if kind == "port":
        return right if isinstance(right, int) else (int(right) if str(right).isdigit() else None)
    if kind == "icmp_type":
        if isinstance(right, int):
            return right
        return (_NFT_ICMPV6 if field_.family == 6 else _NFT_ICMP).get(str(right), None)
    if kind == "addr":
        return ipaddress.ip_address(right) if isinstance(right, str) and _is_ip(right) else None
    return str(right).lower() if kind in ("ctstate", "word") else right


def _nft_right_matches(field_: _Field, right, sets: Dict[str, list]) -> Optional[bool]:
    """Does the field's value match the right side (a value, set, named set, range or prefix)?"""
    if isinstance(right, dict) and "set" in right:
        return _any3(_nft_right_matches(field_, r, sets) for r in right["set"])
    if isinstance(right, list):
        return _any3(_nft_right_matches(field_, r, sets) for r in right)
    if isinstance(right, str) and right.startswith("@"):
        elements = sets.get(right[1:])
        return None if elements is None else _any3(_nft_right_matches(field_, r, sets) for r in elements)
    if isinstance(right, dict) and "elem" in right:     # a set element with options (timeout, counter)
        return _nft_right_matches(field_, right["elem"].get("val"), sets)
    value = field_.value
    if field_.kind == "addr":
        value = ipaddress.ip_address(value) if value and _is_ip(value) else None
    if value is None:
        return False    # the packet has no such field (no input interface, no ports)
    if isinstance(right, dict) and "prefix" in right:
        net = f"{right['prefix']['addr']}/{right['prefix']['len']}"
        return field_.kind == "addr" and value.version == ipaddress.ip_network(net, strict=False).version \
            and value in ipaddress.ip_network(net, strict=False)
    if isinstance(right, dict) and "range" in right:
        low, high = (_nft_scalar(field_, end) for end in right["range"])
        if low is None or high is None or field_.kind in ("iface", "word", "ctstate"):
            return None
        try:
            return low <= value <= high
        except TypeError:     # an IPv4 range against an IPv6 address
            return False
    if isinstance(right, dict):
        return None
    if field_.kind == "iface" and isinstance(right, str) and right.endswith("*"):
        return value.startswith(right[:-1])
    wanted = _nft_scalar(field_, right)
    return None if wanted is None else wanted == value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _nft_compare(op: str, field_: _Field, right, sets: Dict[str, list]) -> Optional[bool]:
    if op in ("==", "in"):
        return _nft_right_matches(field_, right, sets)
    if op == "!=":
        hit = _nft_right_matches(field_, right, sets)
        return None if hit is None else not hit
    if op in ("<", ">", "<=", ">=") and field_.kind in ("port", "proto", "icmp_type") and field_.value is not None:
        wanted = _nft_scalar(field_, right)
        if wanted is None:
            return None
        value = field_.value
        return {"<": value < wanted, ">": value > wanted, "<=": value <= wanted, ">=": value >= wanted}[op]
    return None


def match_nft_rule(exprs: List[dict], pkt: Packet, sets: Optional[Dict[str, list]] = None
                   ) -> Tuple[Optional[bool], Optional[dict]]:
    """(True/False/None for unknown, the verdict expression). `sets`: the elements of the rule's
    table's named sets (`@name`)."""
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
                ok = _nft_compare(m.get("op", "=="), value, m.get("right"), sets or {})
            result = _and3(result, ok)
        elif any(k in expr for k in ("accept", "drop", "reject", "jump", "goto", "return")):
            verdict = expr
        elif any(k in expr for k in ("counter", "log", "comment", "limit")):
            continue
        elif "xt" in expr:
            result = _and3(result, None)
    return result, verdict


def nft_sets(ruleset: dict) -> Dict[Tuple[str, str], Dict[str, list]]:
    """(family, table) -> named set -> its elements."""
    found: Dict[Tuple[str, str], Dict[str, list]] = {}
    for item in nft_objects(ruleset, "set"):
        found.setdefault((item.get("family"), item.get("table")), {})[item.get("name")] = list(item.get("elem", []))
    return found


def nft_verdicts(ruleset: dict, pkt: Packet, families=("ip", "inet"), skip_tables=()) -> List[Verdict]:
    chains = [c for c in nft_objects(ruleset, "chain")
              if c.get("hook") == pkt.hook and c.get("family") in families
              and (c["family"], c["table"]) not in skip_tables]
    rules = nft_objects(ruleset, "rule")
    sets = nft_sets(ruleset)
    result = []
    for chain in sorted(chains, key=lambda c: c.get("prio", 0)):
        verdict, rule, uncertain = _eval_nft_chain(chain, rules, sets, pkt, 0)
        where = f"nft {chain['family']} {chain['table']} {chain['name']}"
        if verdict == "drop":
            fix = [argv_of("nft delete rule {} {} {} handle {}", rule["family"], rule["table"], rule["chain"],
                           rule["handle"])]
            result.append(Verdict(True, where, _nft_rule_text(rule), fix, uncertain))
        elif verdict == "return" and chain.get("policy") == "drop":
            result.append(Verdict(True, where, "policy drop", _nft_policy_fix(chain, rules, sets, pkt), uncertain))
    return result


def _nft_policy_fix(chain: dict, rules: List[dict], sets, pkt: Packet) -> List[Argv]:
    def drops(other: Packet) -> bool:
        verdict = _eval_nft_chain(chain, rules, sets, other, 0)[0]
        return verdict == "drop" or (verdict == "return" and chain.get("policy") == "drop")

    return [argv_of("nft insert rule {} {} {}", chain["family"], chain["table"], chain["name"])
            + a.nft_words(pkt.family, chain["family"]) + ("accept",) for a in accepts_for(pkt, drops)]


def _eval_nft_chain(chain: dict, rules: List[dict], sets, pkt: Packet, depth: int):
    uncertain: List[str] = []
    if depth > 16:
        return "return", None, uncertain
    table_sets = sets.get((chain["family"], chain["table"]), {})
    for rule in rules:
        if (rule["family"], rule["table"], rule["chain"]) != (chain["family"], chain["table"], chain["name"]):
            continue
        matched, verdict = match_nft_rule(rule.get("expr", []), pkt, table_sets)
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
        v, r, more = _eval_nft_chain(sub, rules, sets, pkt, depth + 1)
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


# -- the matches fixes write, as nft -j lists them ----------------------------------------------

_NFT_LEFT = {("meta", "l4proto"): {"meta": {"key": "l4proto"}}}
_NFT_PAYLOADS = {"ip": ("saddr", "daddr", "protocol"), "ip6": ("saddr", "daddr", "nexthdr"),
                 "udp": ("dport", "sport"), "th": ("dport", "sport")}


def nft_match_exprs(words: Sequence[str]) -> Optional[List[dict]]:
    """`ip saddr 10.0.0.2 udp dport 4789` -> the match expressions `nft -j list ruleset` shows for
    them (values: numbers as numbers); None for words outside the matches fixes write (`meta
    l4proto P`, `ip protocol P`, `ip6 nexthdr P`, `ip|ip6 saddr|daddr A`, `udp|th dport|sport N`)."""
    if not words or len(words) % 3:
        return None
    exprs = []
    for i in range(0, len(words), 3):
        header, key, value = words[i:i + 3]
        left = _NFT_LEFT.get((header, key))
        if left is None and key in _NFT_PAYLOADS.get(header, ()):
            left = {"payload": {"protocol": header, "field": key}}
        if left is None:
            return None
        exprs.append({"match": {"op": "==", "left": left, "right": int(value) if value.isdigit() else value}})
    return exprs
