"""One table per drop reason: trace-drops' hint and diagnose's cause and fix for the same drop
come from the same DropCause entry, so they can never disagree (table-driven; no root)."""
from __future__ import annotations

from pathlib import Path

import pytest

from bpftools.commands import Command, in_ns, join, rendered
from bpftools.diagnose.checks import Finding
from bpftools.diagnose.records import Drop
from bpftools.diagnose.verdict import build_causes
from bpftools.drop_causes import DROP_CAUSES
from bpftools.drop_events import DropEvent
from bpftools.drop_hints import HintEngine
from bpftools.kernel.drop_reasons import parse_format

FIXTURES = Path(__file__).parent / "fixtures"
ENTRIES = list(DROP_CAUSES.values())


def drop(reason: str) -> DropEvent:
    return DropEvent(ts=0.0, netns="bt-agree-r", netns_inode=1, netns_name="bt-agree-r", ifname="eth0", ifindex=2,
                     reason=reason, reason_code=0, location="ip_rcv_finish", family="ipv4", proto="icmp",
                     src="10.9.1.2", dst="10.9.2.2", sport=None, dport=None, icmp_type=8, icmp_code=0, len=84)


def hint(event: DropEvent) -> str:
    """What trace-drops prints for it, facts unreadable (as in an unnamed namespace)."""
    engine = HintEngine()
    engine.inspector = lambda e: None
    return engine.hint(event)


def test_every_reason_is_a_kernel_reason():
    known = set()
    for version in ("5.17", "6.1", "6.18"):
        known |= set(parse_format((FIXTURES / f"kfree_skb-{version}.format").read_text()).reasons.values())
    assert {e.reason for e in ENTRIES} - known == set()


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.reason)
def test_hint_and_diagnose_come_from_the_same_entry(entry):
    event = drop(entry.reason)
    text = hint(event)
    assert text == entry.explain(event, {})
    commands = entry.fix(event, {})
    for command in commands:
        assert join(command) in text, (command, text)  # the hint shows the fix diagnose prints
    causes = build_causes([], [Drop.from_json(event.as_json())])
    if entry.cause is None:
        assert causes == []  # a supporting reason names no cause on its own
        return
    assert [c.cause for c in causes] == [entry.cause]
    assert rendered(causes[0].fix) == rendered(in_ns(event.netns, c) for c in commands)
    assert causes[0].fix == [in_ns(event.netns, c) for c in commands]
    assert causes[0].detail.endswith(entry.summary)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.confirms], ids=lambda e: e.reason)
def test_a_drop_confirms_the_causes_its_entry_names(entry):
    """A drop adds evidence to a cause the walk found, when the entry says it confirms it."""
    event = drop(entry.reason)
    for confirmed in entry.confirms:
        finding = Finding("bt-agree-r", "x", False, "the check's finding", confirmed, "eth0", [Command(("true",))],
                          0.6)
        causes = build_causes([finding], [Drop.from_json(event.as_json())])
        assert causes[0].cause == confirmed and rendered(causes[0].fix) == ["true"]
        assert any(e.startswith(f"drop {entry.reason} in bt-agree-r") for e in causes[0].evidence)


def test_a_diagnose_drop_is_the_event_the_table_takes():
    event = drop("XDP")
    back = Drop.from_json(event.as_json()).event()
    assert (back.reason, back.netns_name, back.ifname, back.src, back.dst) == ("XDP", "bt-agree-r", "eth0",
                                                                               "10.9.1.2", "10.9.2.2")
