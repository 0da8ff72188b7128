"""Docker's iptables rules, understood where they decide a ping's fate.

In the namespace where dockerd runs, Docker sets the filter FORWARD policy to DROP and sends
FORWARD through DOCKER-USER (the administrator's own rules, first), DOCKER-ISOLATION-STAGE-1/2
(no traffic between two Docker networks), per-network accept rules, and, for a network created
with `com.docker.network.bridge.enable_icc=false`, a DROP for traffic within its bridge.
`explain` turns a firewall drop there into the precise cause, with fixes that leave Docker's own
chains alone: ACCEPT rules in DOCKER-USER with a precise match (Docker never writes to that
chain and keeps it first in FORWARD)."""
from __future__ import annotations

import shlex
from typing import List, Optional

from ..commands import Argv, argv_of
from .firewall import Packet, Story, Verdict, filter_chain_exists
from .state import NetnsState

USER_CHAIN = "DOCKER-USER"
ISOLATION_CHAINS = ("DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2")
REPLIES = argv_of("-m conntrack --ctstate RELATED,ESTABLISHED")


DockerCause = Story


def manages(state: NetnsState) -> bool:
    """Docker runs in (and writes the firewall of) this namespace."""
    return filter_chain_exists(state.iptables_save, USER_CHAIN)


def network_name(state: NetnsState, bridge: str) -> str:
    """`ddnet (br-58eaa6481d35)`, or the bridge alone where the Engine's networks are not known."""
    network = state.docker_networks.get(bridge)
    return f"Docker network {network['name']} ({bridge})" if network else f"Docker's bridge {bridge}"


def _accept(iif: str, oif: str, src: Optional[str] = None, dst: Optional[str] = None, extra: Argv = ()) -> Argv:
    words = argv_of("iptables -I {} -i {} -o {}", USER_CHAIN, iif, oif)
    words += argv_of("-s {}/32 -d {}/32", src, dst) if src and dst else ()
    return words + tuple(extra) + ("-j", "ACCEPT")


def _as_request(pkt: Packet, direction: str) -> Packet:
    """The request's view (a, b, in, out) whichever direction was checked: both give one fix."""
    if direction == "request":
        return pkt
    return Packet(pkt.hook, pkt.dst, pkt.src, 8, pkt.oif, pkt.iif, "NEW", pkt.physdev_out, pkt.physdev_in)


def _both_ways(req: Packet, precise: bool) -> List[Argv]:
    """Requests one way, replies back: between two interfaces Docker's FORWARD rules accept neither."""
    src, dst = (req.src, req.dst) if precise else (None, None)
    return [_accept(req.iif, req.oif, src, dst), _accept(req.oif, req.iif, dst, src, REPLIES)]


def explain(state: NetnsState, pkt: Packet, verdict: Verdict, direction: str) -> Optional[DockerCause]:
    """The Docker story behind an iptables FORWARD drop, or None when Docker's rules did not decide."""
    if pkt.hook != "forward" or not verdict.where.startswith("iptables filter") or not manages(state):
        return None
    req = _as_request(pkt, direction)
    kind = "echo-request" if pkt.icmp_type == 8 else "echo-reply"
    if verdict.rule == "policy DROP":
        if pkt.physdev_in:
            return DockerCause("bridge_netfilter", (
                f"Docker set the FORWARD policy to DROP (it does when it starts), and with "
                f"net.bridge.bridge-nf-call-iptables = 1 frames bridged by {pkt.iif} ({pkt.physdev_in} -> "
                f"{pkt.physdev_out}) go through iptables FORWARD, where no rule accepts them; allow the bridge in "
                f"{USER_CHAIN}, the chain Docker keeps for your rules"), [_accept(pkt.iif, pkt.oif)])
        return DockerCause("netfilter_drop", (
            f"Docker set the FORWARD policy to DROP (it does when it starts), and no rule accepts the ICMP {kind} "
            f"{pkt.src} -> {pkt.dst} routed from {pkt.iif} to {pkt.oif}; allow it in {USER_CHAIN}, the chain "
            "Docker keeps for your rules"), _both_ways(req, precise=False))
    words = shlex.split(verdict.rule)
    chain = words[1] if len(words) > 1 and words[0] == "-A" else ""
    if chain == USER_CHAIN:
        return DockerCause("netfilter_drop", (
            f"a rule in {USER_CHAIN} (the chain for your own rules, which Docker evaluates before its own) drops "
            f"the ICMP {kind} {pkt.src} -> {pkt.dst}: {verdict.rule}"), verdict.fix)
    if chain in ISOLATION_CHAINS:
        source, target = network_name(state, req.iif), network_name(state, req.oif)
        return DockerCause("docker_isolation", (
            f"Docker isolates its networks from each other: {chain} drops traffic from {source} to {target} "
            f"({verdict.rule}); connecting one container to the other's network (`docker network connect`) or "
            f"allowing this pair in {USER_CHAIN} lets them talk"), _both_ways(req, precise=True))
    if chain == "FORWARD" and pkt.iif == pkt.oif and words[2:] == ["-i", pkt.iif, "-o", pkt.oif, "-j", "DROP"]:
        return DockerCause("docker_icc_disabled", (
            f"{network_name(state, pkt.iif)} was created with com.docker.network.bridge.enable_icc=false: "
            f"Docker drops traffic between its containers ({verdict.rule}); allow this pair in {USER_CHAIN} "
            f"(replies pass Docker's own RELATED,ESTABLISHED rule), or recreate the network without that option"),
            [_accept(req.iif, req.oif, req.src, req.dst)])
    return None
