"""Feature probes: each one really loads/attaches/creates something, nothing is guessed
from the kernel version. Used by `bpftools doctor` and to decide test skips.

A tunnel probe creates a device in a throwaway namespace only where that needs no module load
(the module is loaded or built in): a loaded ipip/sit/gre module puts its fallback device
(tunl0, sit0, gre0) into every namespace of the host. `load_modules=True` probes the others too."""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

from .. import bpfsys
from ..errors import BpftoolsError, first_line
from ..topology import Topology, run
from .modules import LOADABLE, ModuleState, module_state
from .mounts import ensure_tracing

FEATURES = ("tracepoint_kfree_skb", "xdp_native", "xdp_generic", "bpf_link", "tc_clsact", "tcx",
            "kprobes", "fentry", "prog_test_run", "ipip_module", "sit_module", "gre_module",
            "vxlan_module", "geneve_module")

# What each capability needs, for doctor's summary.
CAPABILITY_NEEDS = {
    "trace-drops": ["tracepoint_kfree_skb"],
    "encap-stats": ["tcx|tc_clsact"],
    "xdp-decap": ["xdp_native|xdp_generic"],
    "serve": ["tracepoint_kfree_skb|tcx|tc_clsact|xdp_native|xdp_generic"],
}


@dataclass(frozen=True)
class TunnelProbe:
    module: str  # the kernel module that implements the device type
    kconfig: str  # its CONFIG_ symbol
    args: tuple  # `ip link add NAME` arguments


TUNNEL_DEVICES = {
    "ipip_module": TunnelProbe("ipip", "CONFIG_NET_IPIP", ("type", "ipip", "remote", "198.51.100.1", "local", "198.51.100.2")),
    "sit_module": TunnelProbe("sit", "CONFIG_IPV6_SIT", ("type", "sit", "remote", "198.51.100.1", "local", "198.51.100.2")),
    "gre_module": TunnelProbe("ip_gre", "CONFIG_NET_IPGRE", ("type", "gre", "remote", "198.51.100.1", "local", "198.51.100.2")),
    "vxlan_module": TunnelProbe("vxlan", "CONFIG_VXLAN", ("type", "vxlan", "id", "42", "dstport", "4789")),
    "geneve_module": TunnelProbe("geneve", "CONFIG_GENEVE", ("type", "geneve", "id", "42", "remote", "198.51.100.1")),
}


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str
    probed: bool = True  # False: decided without trying (a module that is there but not loaded)
    loaded_module: Optional[str] = None  # the module this probe made the kernel load


def _probe(name: str, fn: Callable[[], str]) -> Probe:
    try:
        return Probe(name, True, fn() or "works")
    except Exception as exc:  # a probe reports, never crashes doctor
        return Probe(name, False, first_line(exc))


def tunnel_probe(name: str, state: ModuleState, load_modules: bool, create: Callable[[], str]) -> Probe:
    """Create a device only where that loads nothing, or where loading is allowed (and said)."""
    if state.present:
        return _probe(name, create)
    if state.state == LOADABLE:
        if not load_modules:
            return Probe(name, True, f"{state.detail}; not probed: creating a device would load it "
                                     f"(doctor --load-modules does)", probed=False)
        probe = _probe(name, create)
        if probe.ok:
            probe.detail += f" (loaded module {state.module})"
            probe.loaded_module = state.module
        return probe
    return Probe(name, False, state.detail)


def _link(prog_fd: int, ifindex: int, attach_type: int, flags: int = 0) -> str:
    os.close(bpfsys.link_create(prog_fd, ifindex, attach_type, flags))
    return "attached and detached a test program"


def probe_all(load_modules: bool = False) -> List[Probe]:
    """Run every probe in a throwaway namespace; needs root. Nothing is mounted here (see
    mounts.reporting_only); a tunnel module is loaded only with `load_modules`."""
    from bcc import BPF

    from ..netlink import in_netns, resolve_interface
    from ..program import BpfProgram

    probes: List[Probe] = []
    with Topology("bpftools-probe") as topo, BpfProgram("probe.bpf.c") as prog:
        ns = topo.netns()
        topo.veth(ns, "pr0", ns, "pr1")
        iface = resolve_interface("pr0", ns)
        xdp_fd = prog.load("bpftools_xdp", BPF.XDP)
        tc_fd = prog.load("bpftools_tc", BPF.SCHED_CLS)

        probes.append(_probe("tracepoint_kfree_skb", lambda: _tracepoint(prog)))
        with in_netns(ns):
            native = _probe("xdp_native", lambda: _link(xdp_fd, iface.ifindex, bpfsys.ATTACH_XDP,
                                                         bpfsys.XDP_FLAGS_DRV_MODE))
            generic = _probe("xdp_generic", lambda: _link(xdp_fd, iface.ifindex, bpfsys.ATTACH_XDP,
                                                          bpfsys.XDP_FLAGS_SKB_MODE))
            link = _probe("bpf_link", lambda: _link(xdp_fd, iface.ifindex, bpfsys.ATTACH_XDP))
            tcx = _probe("tcx", lambda: _link(tc_fd, iface.ifindex, bpfsys.ATTACH_TCX_INGRESS))
        probes += [native, generic, link, tcx]
        probes.append(_probe("tc_clsact", lambda: _clsact(tc_fd, ns, iface.ifindex)))
        probes.append(_probe("kprobes", lambda: _kprobe(prog)))
        probes.append(_probe("fentry", _fentry))
        probes.append(_probe("prog_test_run", lambda: _test_run(xdp_fd)))
        for name, tunnel in TUNNEL_DEVICES.items():
            state = module_state(tunnel.module, tunnel.kconfig)
            probes.append(tunnel_probe(name, state, load_modules, lambda args=tunnel.args: _tunnel(ns, args)))
    return probes


def _tracepoint(prog) -> str:
    ensure_tracing()
    prog.bpf.attach_tracepoint(tp=b"skb:kfree_skb", fn_name=b"bpftools_tp")
    prog.bpf.detach_tracepoint(tp=b"skb:kfree_skb")
    return "attached to skb:kfree_skb"


def _clsact(tc_fd: int, ns: str, ifindex: int) -> str:
    from ..netlink import ipr

    with ipr(ns) as sock:
        sock.tc("add", "clsact", ifindex)
        try:
            sock.tc("add-filter", "bpf", ifindex, ":1", fd=tc_fd, name="bpftools_tc", parent="ffff:fff2",
                    classid=1, direct_action=True)
        finally:
            sock.tc("del", "clsact", ifindex)
    return "clsact qdisc with a direct-action bpf filter"


def _kprobe(prog) -> str:
    if not os.path.exists("/sys/bus/event_source/devices/kprobe/type"):
        raise BpftoolsError("no kprobe PMU in /sys/bus/event_source/devices (kernel built without CONFIG_KPROBES?)")
    event = prog.bpf.get_syscall_fnname(b"getpid")
    prog.bpf.attach_kprobe(event=event, fn_name=b"bpftools_kprobe")
    prog.bpf.detach_kprobe(event=event)
    return f"attached a kprobe to {event.decode()}"


def _fentry() -> str:
    from ..program import BpfProgram

    with _quiet_stderr(), BpfProgram("probe_fentry.bpf.c"):
        pass  # bcc loads and attaches kfunc__ programs while compiling
    return "attached an fentry program"


@contextlib.contextmanager
def _quiet_stderr():
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _test_run(xdp_fd: int) -> str:
    result = bpfsys.prog_test_run(xdp_fd, bytes(64))
    if result.retval != 2:  # XDP_PASS
        raise BpftoolsError(f"test run returned {result.retval}, expected XDP_PASS")
    return "bpf_prog_test_run_opts ran an XDP program"


def _tunnel(ns: str, args: tuple) -> str:
    try:
        run("ip", "link", "add", "prtun0", *args, netns=ns)
    except BpftoolsError as exc:
        if "Unknown device type" in str(exc):
            raise BpftoolsError(f"this kernel has no {args[1]} devices (module not built or not loadable)") from None
        raise
    run("ip", "link", "del", "prtun0", netns=ns)
    return "created a device of this type"


def probe_dict(probes: List[Probe]) -> Dict[str, bool]:
    return {p.name: p.ok for p in probes}


def needs_met(needs: List[str], available: Dict[str, bool]) -> bool:
    return all(any(available.get(alt, False) for alt in need.split("|")) for need in needs)


def as_json(probes: List[Probe]) -> Dict[str, dict]:
    return {p.name: {k: v for k, v in asdict(p).items() if k not in ("name", "loaded_module")} for p in probes}
