"""The CNI reference plugins' iptables rules, understood where they decide a ping's fate.

On a Kubernetes node whose pods come from the reference plugins (containerd's or CRI-O's CNI
config: bridge + host-local, with portmap and firewall), the node's namespace holds:
- the firewall plugin's filter chains: FORWARD jumps to CNI-FORWARD, whose first rule jumps to
  CNI-ADMIN (the administrators' rules: the plugin creates the chain and never writes to it),
  then accepts traffic from each pod (`-s POD_IP`) and replies to it (`-d POD_IP` RELATED,ESTABLISHED);
- the portmap plugin's nat chains (CNI-HOSTPORT-DNAT, CNI-HOSTPORT-SETMARK, CNI-HOSTPORT-MASQ,
  one CNI-DN-… per pod with host ports);
- the bridge plugin's masquerade: POSTROUTING jumps to one CNI-… chain per pod (`ipMasq`).
The plugins rewrite their chains as pods come and go, so `explain` names a drop in them and puts
the fix in CNI-ADMIN, which the plugins leave alone and evaluate first."""
from __future__ import annotations

import re
import shlex
from typing import List, Optional

from ..commands import Argv, argv_of
from ..facts.netfilter import IptChain, parse_iptables_save
from .firewall import Packet, Story, Verdict, filter_chain_exists
from .state import NetnsState

ADMIN_CHAIN = "CNI-ADMIN"
FORWARD_CHAIN = "CNI-FORWARD"
_PER_POD_MASQUERADE = re.compile(r"^CNI-[0-9a-f]{24}$")


def manages(state: NetnsState) -> bool:
    """The CNI firewall plugin wrote this namespace's filter table (a node's namespace)."""
    return filter_chain_exists(state.iptables_save, FORWARD_CHAIN)


def owner(chain: str) -> Optional[str]:
    """Which CNI plugin writes a chain, None for a chain CNI does not own."""
    if chain == ADMIN_CHAIN:
        return "the administrators (the CNI firewall plugin creates it and never writes to it)"
    if chain == FORWARD_CHAIN:
        return "the CNI firewall plugin"
    if chain.startswith(("CNI-HOSTPORT-", "CNI-DN-")):
        return "the CNI portmap plugin"
    if _PER_POD_MASQUERADE.match(chain):
        return "the CNI bridge plugin (its per-pod masquerade, ipMasq)"
    return None


def _admin_first(chain: IptChain, drop_args: List[str]) -> bool:
    """Whether the chain jumps to CNI-ADMIN before it reaches the dropping rule (then an ACCEPT
    there wins over the drop)."""
    for rule in chain.rules:
        if rule.args == drop_args:
            return False
        if rule.args[-2:] == ["-j", ADMIN_CHAIN]:
            return True
    return False


def _admin_accept(pkt: Packet) -> Argv:
    return argv_of("iptables -I {} -s {}/32 -d {}/32 -p icmp -j ACCEPT", ADMIN_CHAIN, pkt.src, pkt.dst)


def explain(state: NetnsState, pkt: Packet, verdict: Verdict, direction: str) -> Optional[Story]:
    """The CNI story behind an iptables filter drop, or None when no CNI chain decided."""
    if not verdict.where.startswith("iptables filter") or not manages(state):
        return None
    words = shlex.split(verdict.rule)
    chain = words[1] if len(words) > 1 and words[0] == "-A" else ""
    kind = "echo-request" if pkt.icmp_type == 8 else "echo-reply"
    if chain == ADMIN_CHAIN:
        return Story("netfilter_drop", (
            f"a rule in {ADMIN_CHAIN}, the chain the CNI firewall plugin leaves to administrators (CNI-FORWARD "
            f"jumps to it first), drops the ICMP {kind} {pkt.src} -> {pkt.dst}: {verdict.rule}"), verdict.fix)
    who = owner(chain)
    if who is None:
        return None
    table = parse_iptables_save(state.iptables_save).tables["filter"]
    if chain == FORWARD_CHAIN and _admin_first(table.chains[chain], words[2:]):
        return Story("cni_chain_drop", (
            f"{chain}, a chain {who} rewrites as pods come and go, drops the ICMP {kind} {pkt.src} -> {pkt.dst} "
            f"({verdict.rule}); allow it in {ADMIN_CHAIN}, which the plugin leaves to you and evaluates first "
            f"(an edit of {chain} itself is undone by the next pod)"), [_admin_accept(pkt)])
    return Story("cni_chain_drop", (
        f"{chain}, a chain {who} writes, drops the ICMP {kind} {pkt.src} -> {pkt.dst} ({verdict.rule}) before "
        f"{ADMIN_CHAIN} is consulted: delete that rule (the plugin does not write DROP rules of its own)"),
        verdict.fix)
