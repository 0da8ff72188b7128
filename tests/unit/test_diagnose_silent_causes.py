"""Causes that drop nothing (issue 11, item 4): echo requests ignored by sysctl, owners that
arp_ignore/arp_filter keep silent, and blackhole/unreachable/prohibit routes and policy rules
shown as what they are. Recorded lab state and hand-built namespaces; no root."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpftools.commands import rendered
from bpftools.diagnose import replay
from bpftools.diagnose.checks import echo_ignore_sysctl
from bpftools.diagnose.routing import fib_lookup, rule_text
from bpftools.diagnose.state import Addr, Route, Rule, Snapshot, default_rules
from bpftools.diagnose.verdict import build_causes, verdict
from bpftools.diagnose.walk import Walker

from test_diagnose_checks import ns, veth

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"


def _first(name: str) -> dict:
    causes = build_causes(replay(json.loads((FIXTURES / f"{name}.json").read_text())).findings, [])
    return causes[0]


def _pair(**b_sysctls):
    a = ns("a", [veth(2, "eth0", "b", 2)], [Addr(2, "10.8.0.1", 24)])
    b = ns("b", [veth(2, "eth0", "a", 2)], [Addr(2, "10.8.0.2", 24), Addr(1, "10.8.0.3", 32)], sysctls=b_sysctls)
    return Snapshot({"a": a, "b": b})


def test_recorded_echo_ignored_names_the_sysctl_and_resets_it():
    first = _first("veth-echo_ignored")
    assert first.cause == "echo_ignored" and first.netns.endswith("-veth-ns1")
    assert "net.ipv4.icmp_echo_ignore_all = 1" in first.detail and "nothing is dropped" in first.detail
    assert rendered(first.fix) == [f"ip netns exec {first.netns} sysctl -w net.ipv4.icmp_echo_ignore_all=0"]


def test_echo_ignored_is_checked_where_the_request_is_delivered():
    walk = Walker(_pair(**{"net.ipv4.icmp_echo_ignore_all": 1})).walk("a", "10.8.0.2")
    assert walk.request_delivered  # the request arrives; the silence is the cause
    assert [(c.cause, c.netns) for c in build_causes(walk.findings, [])] == [("echo_ignored", "b")]
    assert [f for f in Walker(_pair()).walk("a", "10.8.0.2").findings if not f.ok] == []


def test_ipv6_echo_switch_is_named_for_the_ipv6_hook():
    assert echo_ignore_sysctl("ipv6") == "net.ipv6.icmp.echo_ignore_all"
    assert echo_ignore_sysctl("ipv4", broadcast=True) == "net.ipv4.icmp_echo_ignore_broadcasts"


def test_recorded_arp_ignore_names_the_owner_and_its_setting():
    first = _first("veth-arp_ignore")
    assert first.cause == "arp_ignore" and first.netns.endswith("-veth-ns1") and first.ifname == "eth0"
    assert "10.70.0.3 is on lo, not on eth0" in first.detail and "arp_ignore = 1" in first.detail
    assert [c.split(" sysctl ")[1] for c in rendered(first.fix)] == ["-w net.ipv4.conf.all.arp_ignore=0",
                                                              "-w net.ipv4.conf.eth0.arp_ignore=0"]


def test_arp_filter_is_an_arp_ignore_cause_with_its_own_fix():
    snap = _pair(**{"net.ipv4.conf.all.arp_filter": 1})
    b = snap.ns("b")
    b.routes.append(Route(dst="10.8.0.1", dst_len=32, oif=1))   # the way back to the asker is not eth0
    first = build_causes(Walker(snap).walk("a", "10.8.0.2").findings, [])[0]
    assert first.cause == "arp_ignore" and first.netns == "b"
    assert "arp_filter = 1" in first.detail
    assert rendered(first.fix) == ["ip netns exec b sysctl -w net.ipv4.conf.all.arp_filter=0",
                            "ip netns exec b sysctl -w net.ipv4.conf.eth0.arp_filter=0"]


def test_recorded_blackhole_in_a_policy_table_is_shown_as_what_it_is():
    first = _first("veth-no_route")
    assert first.cause == "no_route"
    assert first.detail == ("route type blackhole 10.70.0.0/24 in table 100 chosen by rule 1000: from all to "
                               "10.70.0.0/24 lookup 100 refuses 10.70.0.2")
    # deleting the blackhole is enough (the lookup falls through to main): no route is added
    assert rendered(first.fix) == [f"ip netns exec {first.netns} ip route del blackhole 10.70.0.0/24 table 100"]


def test_recorded_prohibit_rule_on_the_way_back():
    first = _first("bridge-no_return_route")
    assert first.cause == "no_return_route" and first.netns.endswith("-bridge-b")
    assert first.detail.startswith("rule 900: from all to 10.71.0.1/32 prohibit (a prohibit rule: no table is "
                                      "consulted) refuses the way back to 10.71.0.1")
    assert rendered(first.fix) == [f"ip netns exec {first.netns} ip rule del priority 900"]


@pytest.mark.parametrize("kind", ["blackhole", "unreachable", "prohibit"])
def test_route_types_chosen_by_a_source_rule(kind):
    rules = [Rule(1000, 100, src="10.0.0.0", src_len=8)] + default_rules()
    a = ns("a", [veth(2, "eth0", "b", 2)], [Addr(2, "10.8.0.1", 24)],
           routes=[Route(dst="10.9.0.0", dst_len=16, table=100, type=kind)], rules=rules)
    walk = Walker(Snapshot({"a": a})).walk("a", "10.9.1.1")
    first = build_causes(walk.findings, [])[0]
    assert first.cause == "no_route"
    assert first.detail == (f"route type {kind} 10.9.0.0/16 in table 100 chosen by rule 1000: from 10.0.0.0/8 "
                               "lookup 100 refuses 10.9.1.1")
    assert rendered(first.fix)[0] == f"ip netns exec a ip route del {kind} 10.9.0.0/16 table 100"
    assert fib_lookup(a, "10.9.1.1", "10.8.0.1").rule.priority == 1000


def test_rule_text_reads_like_ip_rule():
    assert rule_text(Rule(32766, 254)) == "32766: from all lookup main"
    assert rule_text(Rule(5, 0, action="unreachable", dst="10.1.0.0", dst_len=16, iif="eth1", invert=True)) == \
        "5: not from all to 10.1.0.0/16 iif eth1 unreachable"


def test_nothing_fits_stays_unknown():
    walk = Walker(_pair()).walk("a", "10.8.0.2")
    result = verdict("10.8.0.2", "a", walk, 3, 0, [])
    assert [c.cause for c in result.causes] == ["unknown"]


def _broadcast_lan(**b_sysctls):
    a = ns("a", [veth(2, "eth0", "b", 2)], [Addr(2, "10.8.0.1", 24)])
    b = ns("b", [veth(2, "eth0", "a", 2)], [Addr(2, "10.8.0.2", 24)],
           sysctls={"net.ipv4.icmp_echo_ignore_broadcasts": 0, **b_sysctls})
    a.routes.append(Route(dst="10.8.0.255", dst_len=32, table=255, type="broadcast", oif=2, prefsrc="10.8.0.1"))
    return Snapshot({"a": a, "b": b})


def test_a_broadcast_ping_is_answered_by_the_stations_of_that_subnet():
    walk = Walker(_broadcast_lan()).walk("a", "10.8.0.255")
    assert walk.broadcast and walk.request_delivered and walk.reply_delivered and walk.src == "10.8.0.1"
    assert [(h.netns, h.action) for h in walk.hops] == [("a", "send"), ("b", "deliver"), ("b", "send"),
                                                      ("a", "deliver")]
    assert [f for f in walk.findings if not f.ok] == []


def test_broadcast_echoes_ignored_everywhere_is_echo_ignored():
    walk = Walker(_broadcast_lan(**{"net.ipv4.icmp_echo_ignore_broadcasts": 1})).walk("a", "10.8.0.255")
    assert not walk.request_delivered
    first = build_causes(walk.findings, [])[0]
    assert (first.cause, first.netns) == ("echo_ignored", "b")
    assert rendered(first.fix) == ["ip netns exec b sysctl -w net.ipv4.icmp_echo_ignore_broadcasts=0"]
