"""Drop-reason names come from the tracepoint format; numbering differs between kernels.

kfree_skb-6.18.format is this machine's file; the 5.17 and 6.1 files are reconstructed from
those kernels' `enum skb_drop_reason` (trimmed), 5.10 has no reason field at all.
"""
from pathlib import Path

import pytest

from bpftools.kernel.drop_reasons import UNKNOWN, parse_format

FIXTURES = Path(__file__).parent / "fixtures"


def load(version: str):
    return parse_format((FIXTURES / f"kfree_skb-{version}.format").read_text())


@pytest.mark.parametrize("version, code, name", [
    ("6.18", 2, "NOT_SPECIFIED"),
    ("6.18", 12, "NETFILTER_DROP"),
    ("6.18", 16, "IP_RPFILTER"),
    ("6.18", 127, "RECURSION_LIMIT"),
    ("6.1", 8, "NETFILTER_DROP"),
    ("6.1", 12, "IP_RPFILTER"),
    ("5.17", 0, "NOT_SPECIFIED"),
    ("5.17", 1, "NO_SOCKET"),
])
def test_reason_names_follow_the_kernel(version, code, name):
    assert load(version).reason_name(code) == name


def test_same_name_has_different_codes_on_different_kernels():
    assert load("6.18").reason_code("NETFILTER_DROP") != load("6.1").reason_code("NETFILTER_DROP")


def test_field_offsets_are_read_from_the_format():
    assert load("6.18").fields["reason"] == 36
    assert load("6.1").fields["reason"] == 28
    assert load("6.18").fields["skbaddr"] == 8


def test_kernel_without_reason_field_reports_unknown():
    fmt = load("5.10")
    assert not fmt.has_reason
    assert fmt.reasons == {}
    assert fmt.reason_name(3) == UNKNOWN
    assert fmt.reason_name(None) == UNKNOWN


def test_unlisted_code_still_gets_a_name():
    assert load("6.18").reason_name(4000) == "REASON_4000"


def test_reason_code_accepts_kernel_prefix_and_any_case():
    fmt = load("6.18")
    assert fmt.reason_code("SKB_DROP_REASON_IP_RPFILTER") == 16
    assert fmt.reason_code("ip_rpfilter") == 16
    assert fmt.reason_code("NO_SUCH_REASON") is None


def test_symbolic_names_without_numbers_use_enum_order():
    text = ('field:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n'
            'print fmt: "%s", __print_symbolic(REC->reason, { SKB_DROP_REASON_NOT_SPECIFIED, "NOT_SPECIFIED" }, '
            '{ SKB_DROP_REASON_NO_SOCKET, "NO_SOCKET" })')
    assert parse_format(text).reasons == {0: "NOT_SPECIFIED", 1: "NO_SOCKET"}
