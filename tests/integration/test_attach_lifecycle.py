"""Attach/detach of XDP and tc in a namespace: links, netlink fallback, kill -9, foreign programs."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bcc import BPF

from bpftools import attach
from bpftools.errors import BpftoolsError
from bpftools.netlink import resolve_interface, xdp_prog_id
from bpftools.program import BpfProgram
from bpftools.status import find_attachments
from bpftools_proc import READY_MARK, cli
from waiting import wait_until

HERE = Path(__file__).parent


@pytest.fixture
def probe_prog():
    with BpfProgram("probe.bpf.c") as prog:
        yield prog


@pytest.fixture
def iface(veth_pair):
    return resolve_interface(veth_pair.veth_a, veth_pair.ns_a)


def hooks(ns):
    return sorted((a["hook"], a["held_by"]) for a in find_attachments([ns]))


@pytest.mark.parametrize("force_netlink", [False, True], ids=["bpf_link", "netlink"])
def test_attach_and_detach_in_a_namespace(probe_prog, iface, monkeypatch, force_netlink):
    monkeypatch.setattr(attach, "FORCE_NETLINK", force_netlink)
    xdp_fd = probe_prog.load("bpftools_xdp", BPF.XDP)
    tc_fd = probe_prog.load("bpftools_tc", BPF.SCHED_CLS)
    with attach.XdpAttachment(xdp_fd, iface) as xdp, \
            attach.TcAttachment(tc_fd, iface, "ingress", "bpftools_tc") as tc_in, \
            attach.TcAttachment(tc_fd, iface, "egress", "bpftools_tc") as tc_out:
        expected = ("netlink", "clsact") if force_netlink else ("bpf_link", "tcx")
        assert (xdp.method, tc_in.method, tc_out.method) == (expected[0], expected[1], expected[1])
        assert len(hooks(iface.netns)) == 3
    assert hooks(iface.netns) == []
    assert xdp_prog_id(iface) == 0
    qdiscs = subprocess.run(["tc", "-n", iface.netns, "qdisc", "show", "dev", iface.ifname],
                            capture_output=True, text=True).stdout
    assert "clsact" not in qdiscs  # the clsact qdisc we created is gone too


def test_detach_runs_on_exceptions(probe_prog, iface):
    xdp_fd = probe_prog.load("bpftools_xdp", BPF.XDP)
    with pytest.raises(RuntimeError):
        with attach.XdpAttachment(xdp_fd, iface):
            raise RuntimeError("boom")
    assert xdp_prog_id(iface) == 0


def start_holder(ns, ifname, env=None):
    proc = subprocess.Popen([sys.executable, str(HERE / "holder.py"), ns, ifname], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})
    line = proc.stderr.readline()
    assert line.startswith(READY_MARK), line + proc.stderr.read()
    return proc


def test_kill_9_leaves_nothing_with_bpf_link(veth_pair):
    proc = start_holder(veth_pair.ns_a, veth_pair.veth_a)
    assert len(hooks(veth_pair.ns_a)) == 3
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert hooks(veth_pair.ns_a) == []
    assert xdp_prog_id(resolve_interface(veth_pair.veth_a, veth_pair.ns_a)) == 0


def test_sigterm_detaches_netlink_attachments(veth_pair):
    proc = start_holder(veth_pair.ns_a, veth_pair.veth_a, {"BPFTOOLS_ATTACH": "netlink"})
    assert {h for h, _ in hooks(veth_pair.ns_a)} == {"xdp", "tc/ingress", "tc/egress"}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    # holder.py has no SIGTERM handler: the default action kills it like -9 would,
    # so what is left is exactly what `status` and `detach` are for.
    leftovers = hooks(veth_pair.ns_a)
    assert leftovers and all(held == "netlink" for _, held in leftovers)
    status = cli("status", "--json", check=True)
    mine = [json.loads(line) for line in status.stdout.splitlines()
            if json.loads(line)["netns"] == veth_pair.ns_a]
    assert {a["hook"] for a in mine} == {"xdp", "tc/ingress", "tc/egress"}
    out = cli("detach", veth_pair.veth_a, "--netns", veth_pair.ns_a, check=True).stdout
    assert out.count("detached") == 3
    assert hooks(veth_pair.ns_a) == []
    qdiscs = subprocess.run(["tc", "-n", veth_pair.ns_a, "qdisc", "show", "dev", veth_pair.veth_a],
                            capture_output=True, text=True).stdout
    assert "clsact" not in qdiscs  # emptied by the detach, so removed too


def test_refuses_to_replace_a_foreign_xdp_program(iface):
    from bpftools.netlink import ipr

    foreign = BPF(src_file=str(HERE / "fixtures" / "foreign.bpf.c").encode())
    try:
        fd = foreign.load_func(b"foreign_xdp", BPF.XDP).fd
        with ipr(iface.netns) as sock:
            sock.link("set", index=iface.ifindex, xdp_fd=fd)
        with BpfProgram("probe.bpf.c") as prog:
            ours = prog.load("bpftools_xdp", BPF.XDP)
            with pytest.raises(BpftoolsError, match="already has an XDP program .*'foreign_xdp'.*--force"):
                attach.XdpAttachment(ours, iface).attach()
            foreign_id = xdp_prog_id(iface)
            assert foreign_id  # untouched
            with attach.XdpAttachment(ours, iface, force=True):
                assert xdp_prog_id(iface) != foreign_id
    finally:
        with ipr(iface.netns) as sock:
            sock.link("set", index=iface.ifindex, xdp_fd=-1)
        foreign.cleanup()


def test_kill_9_of_xdp_decap_leaves_only_a_pin_that_detach_removes(veth_pair):
    from bpftools_proc import BpftoolsProcess

    with BpftoolsProcess("xdp-decap", veth_pair.veth_b, "--netns", veth_pair.ns_b, "--allow-any") as decap:
        decap.proc.kill()
        decap.proc.wait(timeout=10)
    iface = resolve_interface(veth_pair.veth_b, veth_pair.ns_b)
    assert xdp_prog_id(iface) == 0  # the bpf_link went with the process

    def pins():
        return [a for a in find_attachments([veth_pair.ns_b]) if a["hook"] == "pin"]

    # The pin is there at once; it turns stale when the kernel frees the killed program, after
    # an RCU grace period: until then its map is still in use ("process").
    assert [p["prog_name"] for p in pins()] == [f"/sys/fs/bpf/bpftools/xdp-decap/{veth_pair.ns_b}/vb/allow"]
    stale = wait_until(pins, "the killed program's pin to turn stale",
                       done=lambda found: [p["held_by"] for p in found] == ["stale pin"])
    assert stale[0]["netns"] == veth_pair.ns_b
    status = cli("status", check=True).stdout
    assert "stale pin" in status and veth_pair.ns_b in status
    scoped = [json.loads(line) for line in cli("status", "--netns", veth_pair.ns_b, "--json", check=True).stdout.splitlines()]
    assert [(a["hook"], a["held_by"], a["netns"]) for a in scoped] == [("pin", "stale pin", veth_pair.ns_b)]
    out = cli("detach", veth_pair.veth_b, "--netns", veth_pair.ns_b, check=True).stdout
    assert "removed stale pin" in out
    assert not [a for a in find_attachments([veth_pair.ns_b]) if a["hook"] == "pin"]
