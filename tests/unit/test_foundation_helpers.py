"""Small pure helpers of the foundation: cflags, compiler error extraction, privileges, needs."""
import pytest

from bpftools.kernel.features import needs_met
from bpftools.kernel.offsets import offset_cflags
from bpftools.kernel.privileges import CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, has_bpf_privileges
from bpftools.program import define_cflags, first_error


def test_defines_become_cflags_and_false_is_omitted():
    assert define_cflags({"B": 3, "A": True, "C": False, "D": "x"}) == ["-DA", "-DB=3", "-DD=x"]


def test_offsets_become_offset_and_size_defines():
    assert offset_cflags({"SKB_DEV": (16, 8)}) == ["-DOFF_SKB_DEV=16", "-DSIZE_SKB_DEV=8"]


def test_first_error_prefers_clang_error_over_warnings():
    lines = ["In file included from <built-in>:4:", "x.h:1:2: warning: ignored", "/b/x.bpf.c:3:5: error: use of undeclared identifier 'foo'",
             "1 error generated."]
    assert first_error(lines) == "/b/x.bpf.c:3:5: error: use of undeclared identifier 'foo'"


def test_first_error_falls_back_to_loader_complaint():
    lines = ["x.h:1:2: warning: 'nocf_check' attribute ignored", "bpf: Failed to load program: Operation not permitted"]
    assert first_error(lines) == "bpf: Failed to load program: Operation not permitted"


@pytest.mark.parametrize("caps, ok", [
    (0, False),
    (1 << CAP_SYS_ADMIN, False),
    ((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN), True),
    ((1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN), True),
    ((1 << CAP_BPF) | (1 << CAP_NET_ADMIN), False),
])
def test_bpf_privileges(caps, ok):
    assert has_bpf_privileges(caps) is ok


def test_alternatives_in_capability_needs():
    assert needs_met(["tcx|tc_clsact"], {"tc_clsact": True})
    assert not needs_met(["tcx|tc_clsact"], {"tcx": False})
    assert not needs_met(["a", "b"], {"a": True})
