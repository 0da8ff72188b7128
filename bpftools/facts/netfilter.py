"""A namespace's netfilter ruleset, read once: `iptables-save -c` text (iptables and
ip6tables, either backend) and `nft -j list ruleset` JSON (never nft's text output).

One parser per source. Its records serve both users: trace-drops' hints take the rule and
policy counters (`IptablesRuleset.counters()`, `nft_counters()`), diagnose evaluates the
rules against an echo packet (diagnose/firewall.py walks `IptTable.chains` and the nft rules).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Set, Tuple

IPV4, IPV6 = "ipv4", "ipv6"
DROP_TARGETS = ("DROP", "REJECT")


@dataclass(frozen=True)
class NfCounter:
    """One counter of a namespace's ruleset: a rule, or a chain's policy."""
    tool: str       # iptables-nft, iptables-legacy (ip6tables-… for IPv6), nft
    table: str      # filter, or "ip filter" for nft
    chain: str
    rule: str       # rule text; for a policy, the policy
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


# -- iptables-save ---------------------------------------------------------------------------------

@dataclass
class IptRule:
    chain: str
    args: List[str]        # the words after `-A CHAIN`
    position: int          # 1-based, as `iptables -L --line-numbers` counts
    packets: int = 0       # with `-c`; 0 otherwise
    bytes: int = 0
    line: str = ""         # `-A CHAIN …` as iptables-save printed it

    @property
    def text(self) -> str:
        return self.line or " ".join(shlex.quote(a) for a in ["-A", self.chain] + self.args)

    @property
    def target(self) -> str:
        for flag in ("-j", "--jump", "-g", "--goto"):
            if flag in self.args[:-1]:
                return self.args[self.args.index(flag) + 1]
        return ""

    @property
    def drops(self) -> bool:
        return self.target in DROP_TARGETS


@dataclass
class IptChain:
    name: str
    policy: Optional[str] = None   # ACCEPT/DROP for built-in chains, None for user chains
    packets: int = 0               # the policy's counter
    bytes: int = 0
    rules: List[IptRule] = field(default_factory=list)


@dataclass
class IptTable:
    name: str
    chains: Dict[str, IptChain] = field(default_factory=dict)

    def chain(self, name: str) -> IptChain:
        return self.chains.setdefault(name, IptChain(name))

    @property
    def policies(self) -> Dict[str, str]:
        return {c.name: c.policy for c in self.chains.values() if c.policy}

    def rules(self) -> Iterator[IptRule]:
        for chain in self.chains.values():
            yield from chain.rules


@dataclass
class IptablesRuleset:
    """What one `iptables-save` (or `ip6tables-save`) printed."""
    family: str = IPV4
    tool: str = "iptables"
    tables: Dict[str, IptTable] = field(default_factory=dict)
    incompatible: Set[str] = field(default_factory=set)   # tables iptables-nft could not list whole

    def counters(self) -> List[NfCounter]:
        """Every built-in chain policy, then every rule, with its counter."""
        result: List[NfCounter] = []
        for table in self.tables.values():
            for chain in table.chains.values():
                if chain.policy:
                    result.append(NfCounter(self.tool, table.name, chain.name, chain.policy, "policy",
                                            chain.packets, chain.policy in DROP_TARGETS))
            for rule in table.rules():
                result.append(NfCounter(self.tool, table.name, rule.chain, rule.text, str(rule.position),
                                        rule.packets, rule.drops))
        return result

    def coverage(self) -> Tuple[Set[str], Set[Tuple[str, str]]]:
        """What an iptables-nft save reported of the nf_tables ruleset: the tables it listed whole,
        and the (table, chain) pairs it listed from tables it calls incompatible. Such a table
        ("# Table `filter' is incompatible" / "contains incompatible base-chains") also holds native
        nft chains that only nft shows; an older iptables lists nothing of it at all."""
        whole = {name for name in self.tables if name not in self.incompatible}
        chains = {(name, chain) for name in self.incompatible for chain in self.tables.get(name, IptTable(name)).chains}
        return whole, chains


_POLICY = re.compile(r"^:(\S+) (\S+)(?: \[(\d+):(\d+)\])?")
_COUNTED_RULE = re.compile(r"^\[(\d+):(\d+)\] (-A .*)$")
_INCOMPATIBLE = re.compile(r"^# Table `([^']+)'.*\bincompatible\b")


def parse_iptables_save(text: str, tool: str = "iptables", family: str = IPV4) -> IptablesRuleset:
    """`iptables-save [-c]` / `ip6tables-save [-c]` output -> tables, chains, policies, rules, counters."""
    result = IptablesRuleset(family, tool)
    table: Optional[IptTable] = None
    for raw in text.splitlines():
        line = raw.strip()
        match = _INCOMPATIBLE.match(line)
        if match:
            result.incompatible.add(match.group(1))
            continue
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = result.tables.setdefault(line[1:], IptTable(line[1:]))
            continue
        if table is None:
            continue
        match = _POLICY.match(line)
        if match:
            chain = table.chain(match.group(1))
            chain.policy = None if match.group(2) == "-" else match.group(2)
            chain.packets, chain.bytes = int(match.group(3) or 0), int(match.group(4) or 0)
            continue
        packets = nbytes = 0
        match = _COUNTED_RULE.match(line)
        if match:
            packets, nbytes, line = int(match.group(1)), int(match.group(2)), match.group(3)
        if not line.startswith("-A "):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        chain = table.chain(words[1])
        chain.rules.append(IptRule(words[1], words[2:], len(chain.rules) + 1, packets, nbytes, line))
    return result


# -- nft -j ----------------------------------------------------------------------------------------

def nft_objects(ruleset: dict, kind: str) -> List[dict]:
    """The `table`/`chain`/`rule`/`set` objects of `nft -j list ruleset`."""
    return [item[kind] for item in (ruleset or {}).get("nftables", []) if kind in item]


_VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return", "continue", "queue")


def nft_verdict(rule: dict) -> Optional[dict]:
    """The rule's verdict expression ({"drop": null}, {"jump": {"target": …}}, …), if any."""
    for expr in rule.get("expr", []):
        if any(k in expr for k in _VERDICTS):
            return expr
    return None


def nft_rule_drops(rule: dict) -> bool:
    verdict = nft_verdict(rule) or {}
    return "drop" in verdict or "reject" in verdict


def _nft_value_text(value) -> str:
    if isinstance(value, dict):
        if "set" in value:
            return "{ " + ", ".join(_nft_value_text(v) for v in value["set"]) + " }"
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "range" in value:
            low, high = value["range"]
            return f"{_nft_value_text(low)}-{_nft_value_text(high)}"
        if "payload" in value:
            p = value["payload"]
            return f"{p.get('protocol', '@' + str(p.get('base', '')))} {p.get('field', '')}".strip()
        if "meta" in value:
            return f"meta {value['meta'].get('key')}"
        if "ct" in value:
            return f"ct {value['ct'].get('key')}"
        key = next(iter(value), "?")
        return key if value[key] in (None, {}) else f"{key} {_nft_value_text(value[key])}"
    if isinstance(value, list):
        return ",".join(_nft_value_text(v) for v in value)
    return str(value)


def nft_rule_text(rule: dict) -> str:
    """A rule the way `nft list ruleset` prints it, near enough to recognise (counters left out)."""
    words = []
    for expr in rule.get("expr", []):
        if "match" in expr:
            m = expr["match"]
            op = "" if m.get("op") in ("==", "in") else f"{m.get('op')} "
            words.append(f"{_nft_value_text(m.get('left'))} {op}{_nft_value_text(m.get('right'))}")
        elif "counter" in expr:
            continue
        elif "reject" in expr:
            how = expr["reject"] or {}
            words.append("reject" + (f" with {how.get('type', 'icmp')} {how['expr']}" if how.get("expr") else ""))
        elif any(k in expr for k in ("jump", "goto")):
            key = "jump" if "jump" in expr else "goto"
            words.append(f"{key} {expr[key].get('target')}")
        else:
            words.append(_nft_value_text(expr))
    return " ".join(words)


def nft_counters(ruleset: dict) -> List[NfCounter]:
    """Counters of rules with a `counter`, and base chains whose policy drops (nft keeps no
    policy counter: packets 0, attributed by elimination)."""
    hooks = {(c["family"], c["table"], c["name"]): c.get("hook", "") for c in nft_objects(ruleset, "chain")}
    result = []
    for chain in nft_objects(ruleset, "chain"):
        if chain.get("hook") and chain.get("policy") == "drop":
            result.append(NfCounter("nft", f"{chain['family']} {chain['table']}", chain["name"], "drop", "policy", 0,
                                    True, chain["hook"]))
    for rule in nft_objects(ruleset, "rule"):
        counter = next((e["counter"] for e in rule.get("expr", []) if "counter" in e), None)
        if not isinstance(counter, dict):
            continue
        key = (rule["family"], rule["table"], rule["chain"])
        result.append(NfCounter("nft", f"{rule['family']} {rule['table']}", rule["chain"], nft_rule_text(rule),
                                str(rule.get("handle", "?")), int(counter.get("packets", 0)), nft_rule_drops(rule),
                                hooks.get(key, "")))
    return result


def native_nft_counters(counters: List[NfCounter], family: str,
                        iptables_nft: Optional[IptablesRuleset]) -> List[NfCounter]:
    """The nft counters that can count a packet of `family` and that the iptables-nft save (None
    when iptables is not on nf_tables) did not report already: iptables-nft's own tables show up
    in both. A native table named like one of iptables' (`table ip filter`) stays, unless
    iptables-nft listed it."""
    own, other = ("ip6", "ip") if family == IPV6 else ("ip", "ip6")
    whole, chains = iptables_nft.coverage() if iptables_nft is not None else (set(), set())
    result = []
    for counter in counters:
        table_family, _, name = counter.table.partition(" ")
        if table_family == other:
            continue  # an ip6 table never sees an IPv4 packet, nor an ip table an IPv6 one
        if table_family == own and (name in whole or (name, counter.chain) in chains):
            continue
        result.append(counter)
    return result


def iptables_managed_tables(rulesets: List[IptablesRuleset]) -> Set[Tuple[str, str]]:
    """(nft family, table) pairs whose rules the iptables rulesets already hold."""
    family = {IPV4: "ip", IPV6: "ip6"}
    return {(family[r.family], name) for r in rulesets for name in r.tables}


# -- attribution -----------------------------------------------------------------------------------

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
