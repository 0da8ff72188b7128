"""Attach the probe XDP and tc programs to IFACE in NETNS, announce, and wait to be killed."""
import sys
import time
from contextlib import ExitStack

from bcc import BPF

from bpftools.attach import TcAttachment, XdpAttachment
from bpftools.cli.output import announce_ready
from bpftools.netlink import resolve_interface
from bpftools.program import BpfProgram

netns, ifname = sys.argv[1], sys.argv[2]
with ExitStack() as stack:
    prog = stack.enter_context(BpfProgram("probe.bpf.c"))
    iface = resolve_interface(ifname, netns)
    xdp = stack.enter_context(XdpAttachment(prog.load("bpftools_xdp", BPF.XDP), iface))
    tc_fd = prog.load("bpftools_tc", BPF.SCHED_CLS)
    for direction in ("ingress", "egress"):
        stack.enter_context(TcAttachment(tc_fd, iface, direction, "bpftools_tc"))
    announce_ready(f"held via {xdp.method}")
    time.sleep(120)
