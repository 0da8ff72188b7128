"""Bad input: one line on stderr, non-zero exit, no traceback, nothing attached."""
import subprocess
import sys
from pathlib import Path

import pytest
from bcc import BPF

from bpftools import attach
from bpftools.errors import BpftoolsError
from bpftools.netlink import resolve_interface, xdp_prog_id
from bpftools.program import BpfProgram
from bpftools_proc import cli

HERE = Path(__file__).parent


def assert_one_line_error(proc, text):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpftools: error:"), proc.stderr
    assert text in lines[0]


def test_unknown_namespace():
    assert_one_line_error(cli("detach", "eth0", "--netns", "no-such-ns-bt"), "network namespace 'no-such-ns-bt' not found")


def test_unknown_interface(veth_pair):
    with pytest.raises(BpftoolsError, match=r"interface 'nope0' not found in network namespace"):
        resolve_interface("nope0", veth_pair.ns_a)


def test_not_root_is_refused():
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                           sys.executable, "-m", "bpftools", "doctor"], capture_output=True, text=True)
    assert_one_line_error(proc, "needs root")


def test_compile_failure_shows_the_compiler_error(monkeypatch):
    monkeypatch.setattr("bpftools.program.BPF_DIR", HERE / "fixtures")
    with pytest.raises(BpftoolsError) as err:
        BpfProgram("broken.bpf.c").compile()
    message = str(err.value)
    assert "undeclared_identifier" in message and "error" in message and "\n" not in message


def test_missing_kernel_feature_native_xdp_on_a_device_without_it(topo):
    ns = topo.netns("nf")
    from bpftools.topology import run

    run("ip", "link", "add", "dm0", "type", "bridge", netns=ns)  # bridges have no native XDP
    iface = resolve_interface("dm0", ns)
    with BpfProgram("probe.bpf.c") as prog:
        fd = prog.load("bpftools_xdp", BPF.XDP)
        with pytest.raises(BpftoolsError, match="cannot attach XDP in native mode to dm0"):
            attach.XdpAttachment(fd, iface, mode="native").attach()
    assert xdp_prog_id(iface) == 0
