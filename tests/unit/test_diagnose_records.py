"""The typed records of a diagnosis (records.py): the JSON made from them in one place, with the
documented fields in their order; the tunnel hop in the story; and no printed fix or advice is a
template: every recorded fixture through replay + verdict, and causes without a command say what
a command would need instead of printing one."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from bpftools.diagnose import conclude, prover_for, replay
from bpftools.diagnose.live import LiveResult
from bpftools.diagnose.records import Cause, Drop, Hop, HopCounts, Outer, Result
from bpftools.diagnose.state import Snapshot
from bpftools.diagnose.verdict import exit_status, story, verdict
from bpftools.drop_events import Encap, Flow

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"
RECORDED = sorted(FIXTURES.rglob("*.json"))   # every recording: each topology, ipv6/, the overlays
DOCS = Path(__file__).parents[2] / "docs" / "diagnose.md"
PLACEHOLDER = re.compile(r"<[^<>\s]*>")   # <gateway>, <dev>, <…>


def _id(path: Path) -> str:
    return "-".join(path.relative_to(FIXTURES).with_suffix("").parts)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _printed_commands(text: str):
    """The command lines of the story: under `fix:`, `advice (…):` and each `also (…)`."""
    return [line.strip() for line in text.splitlines() if line.startswith("    ")]


@pytest.mark.parametrize("path", RECORDED, ids=_id)
def test_no_printed_fix_or_advice_is_a_template(path):
    """As the CLI runs it (the fixes proven) and unproven (the candidates as the checks made
    them): neither the story nor the JSON holds a placeholder in a command."""
    data = _load(path)
    for prove in (prover_for(data), None):
        result = verdict(data["target"], data["netns"], replay(data), 3, 0, [], prove)
        assert result.causes, "a failed ping always has a cause (unknown at least)"
        text = story(result)
        assert not [c for c in _printed_commands(text) if PLACEHOLDER.search(c)], text
        for cause in result.to_json()["causes"]:
            words = cause["fix"] + cause["advice"] + [w for c in cause["fix_argv"] + cause["advice_argv"]
                                                       for w in c["argv"]]
            assert not [w for w in words if PLACEHOLDER.search(w)], cause


def _lonely(data: dict, label: str) -> dict:
    """`label` with nothing but lo (a container run with --network none), pinging out of it."""
    data = copy.deepcopy(data)
    state = data["namespaces"][label]
    state["links"] = [link for link in state["links"] if link["ifname"] == "lo"]
    state["addrs"] = [a for a in state["addrs"] if a["ifindex"] == 1]
    state["routes"] = [r for r in state["routes"] if r["oif"] == 1]
    data["netns"] = label
    return data


@pytest.mark.parametrize("family, target", [("", "10.70.0.1"), ("ipv6", "fd00:70::1")])
def test_a_namespace_with_only_lo_gets_no_fix_and_is_told_what_is_missing(family, target):
    data = _lonely(_load(FIXTURES / family / "veth-healthy.json"), "bpftlab-veth-ns1")
    data["target"] = target
    result = verdict(target, data["netns"], replay(data), 1, 0, [], prover_for(data))
    first = result.first
    assert (first.cause, first.netns, first.fix, first.advice, first.proven) == (
        "no_route", "bpftlab-veth-ns1", [], [], False)
    text = story(result)
    assert "  fix:" not in text and "advice" not in text, text
    assert "no fix: bpftlab-veth-ns1 has no network interface with an address but lo" in text
    assert "`docker network connect`" in text and not PLACEHOLDER.search(text)
    assert exit_status(result) == 1


def test_a_destination_nobody_on_the_links_routes_says_the_gateway_is_not_known():
    data = _load(FIXTURES / "veth-healthy.json")
    data["target"] = "10.99.0.1"
    result = verdict(data["target"], data["netns"], replay(data), 1, 0, [], prover_for(data))
    assert (result.first.cause, result.first.fix) == ("no_route", [])
    assert "no fix: no namespace on bpftlab-veth-host's links owns or forwards 10.99.0.1: the gateway to route it " \
           "through is not known here" in story(result)


# -- the JSON, made in one place -------------------------------------------------------------------------------

def _documented(field: str) -> list:
    """The keys docs/diagnose.md lists for `field` (`| `path` | … `{"a", "b"}` |`)."""
    row = next(line for line in DOCS.read_text().splitlines() if line.startswith(f"| `{field}` |"))
    return re.findall(r'"(\w+)"', row.split("{", 1)[1].split("}", 1)[0])


def _counted(path: Path):
    """A recording concluded as diagnose_ping does, with every hop's echo packets counted once."""
    data = _load(path)
    walk = replay(data)
    snapshot = Snapshot.from_dict(data["namespaces"])
    live = LiveResult(sent=3, received=0, hop_counts={}, notes=["a note"])
    drops = [Drop(walk.hops[-1].netns, walk.hops[-1].iif, "NETFILTER_DROP", "nft_do_chain+0x5ad", "ipv4", "icmp",
                  walk.src, data["target"], 8, None, 3)]
    return conclude(data["target"], data["netns"], walk, live, drops, snapshot, prover_for(data), "eth0")


def test_the_json_has_the_documented_fields_in_their_order():
    data = _counted(FIXTURES / "veth-netfilter_drop.json").to_json()
    assert list(data) == ["target", "netns", "reachable", "sent", "received", "source", "path", "causes", "drops",
                          "checks", "device", "family", "netns_inode", "notes"]
    assert (data["device"], data["family"], data["notes"]) == ("eth0", 4, ["a note"])
    for hop in data["path"]:
        assert list(hop) == _documented("path") + ["netns_inode"]
        assert list(hop["packets"]) == ["in", "out", "unit"] and hop["outer"] is None
    for cause in data["causes"]:
        assert list(cause) == _documented("causes") + ["netns_inode"]
    assert set(_documented("drops")) - {"count"} <= set(data["drops"][0]) and data["drops"][0]["count"] == 3
    assert list(data["checks"][0]) == ["netns", "check", "ok", "detail", "netns_inode"]
    json.dumps(data)


def test_a_tunnel_drop_keeps_its_typed_tunnel_fields_in_the_json_order():
    inner = {"family": "ipv4", "proto": "icmp", "src": "10.1.0.2", "dst": "10.1.1.2", "sport": None, "dport": None,
             "icmp_type": 8, "icmp_code": 0}
    merged = {"netns": "r", "ifname": "eth0", "reason": "NETFILTER_DROP", "location": "nft_do_chain", "family": "ipv4",
              "proto": "udp", "src": "10.0.0.1", "dst": "10.0.0.2", "icmp_type": None, "netns_inode": 5, "count": 2,
              "sport": 40000, "dport": 4789, "encap": {"kind": "vxlan", "vni": 42, "key": None, "dport": 4789},
              "inner": inner}
    drop = Drop.from_json(merged)
    assert (drop.encap, drop.inner) == (Encap("vxlan", 42, None, 4789), Flow(**inner))
    assert json.dumps(drop.to_json()) == json.dumps(merged)
    event = drop.event()
    assert (event.reason, event.netns_name, event.sport, event.dport, event.encap) == (
        "NETFILTER_DROP", "r", 40000, 4789, drop.encap)
    plain = dict(merged, **{k: None for k in ("sport", "dport", "encap", "inner")})
    assert list(Drop.from_json(plain).to_json()) == list(Drop.FIELDS)   # no tunnel fields on a plain drop


def test_the_tunnel_hop_shows_its_outer_packet_in_story_and_json():
    outer = Outer("vxlan", "192.168.50.1", "192.168.50.2", "udp", 4789, 42)
    path = [Hop("request", "pod-a", None, "eth0", "send", "10.1.0.2", "10.1.1.2", packets=HopCounts(None, 3, "echo")),
            Hop("request", "node-a", "veth-a", "vxlan0", "tunnel", "10.1.0.2", "10.1.1.2", outer=outer,
                packets=HopCounts(3, 3, "echo")),
            Hop("request", "node-b", "vxlan0", None, "decap", "192.168.50.1", "192.168.50.2", outer=outer,
                packets=HopCounts(0, None, "echo"))]
    result = Result("10.1.1.2", "pod-a", False, 3, 0, "10.1.0.2", path, [Cause("tunnel_firewall", "node-b", "eth0",
                                                                                 "d", ["e"])], [], [])
    text = story(result)
    assert ("node-a (veth-a [rx 3] -> vxlan0 [tx 3]: encapsulated as vxlan VNI 42 UDP port 4789 192.168.50.1 -> "
            "192.168.50.2)") in text
    assert "node-b (vxlan0 [rx 0]: vxlan VNI 42 UDP port 4789 192.168.50.1 -> 192.168.50.2 decapsulated)" in text
    hop = result.to_json()["path"][1]
    assert (hop["action"], hop["outer"]) == ("tunnel", {"kind": "vxlan", "src": "192.168.50.1", "dst": "192.168.50.2",
                                                        "proto": "udp", "dport": 4789, "vni": 42, "key": None})


def test_ranking_state_stays_out_of_the_json():
    cause = Cause("mtu", "r", "eth0", "d", ["e"], confidence=0.9)
    cause.ranking.candidates = [[]]
    assert "ranking" not in cause.to_json() and "missing" not in cause.to_json()


def test_a_bridge_hop_into_the_bridge_device_itself_counts_nothing_sent():
    """Routed through a bridge (a pod's gateway on cni0): the frame goes up the bridge device's
    stack, nothing is transmitted on it, so its `out` is not counted (not 0: no false stop there)."""
    from bpftools.diagnose import hop_counts
    from bpftools.diagnose.state import Link, NetnsState

    node = NetnsState("node", links=[Link(2, "veth-pod", "veth", master=3), Link(3, "cni0", "bridge"),
                                     Link(4, "vxlan0", "vxlan", master=3)])
    live = LiveResult(hop_counts={("node", 2, "rx", 8): 2, ("node", 3, "rx", 8): 2, ("node", 4, "tx", 8): 2})
    snapshot = Snapshot({"node": node})
    up = Hop("request", "node", "veth-pod", "cni0", "bridge", "10.0.0.2", "10.0.1.2")
    across = Hop("request", "node", "veth-pod", "vxlan0", "bridge", "10.0.0.2", "10.0.1.2")
    assert hop_counts(up, live, snapshot) == HopCounts(2, None, "echo")
    assert hop_counts(across, live, snapshot) == HopCounts(2, 2, "echo")
