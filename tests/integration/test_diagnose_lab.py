"""For every (topology, fault) the lab supports, in each family the fault has (IPv4, and IPv6
for the counterparts): `diagnose ping` names the fault first and its fix, applied, makes the
ping work. Healthy topologies: reachable, no causes, in both families. The lab's namespaces
are made by `lab up`, so every test ends with `lab down` (also on failure)."""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from bpftools_proc import cli, run_printed
from bpftools.lab import TOPOLOGIES

MATRIX = [(t.name, f.name, family) for t in TOPOLOGIES.values() for f in t.faults.values()
          for family in f.families if family in t.families]
HEALTHY = [(t.name, family) for t in TOPOLOGIES.values() for family in t.families]


FAULT_NEEDS = {"xdp_drop": "xdp_native", "tc_drop": "tc_clsact"}


def _marks(topology: str, fault: str = ""):
    needs = [n for n in (TOPOLOGIES[topology].requires, FAULT_NEEDS.get(fault)) if n]
    return [pytest.mark.feature(*needs)] if needs else []


@pytest.fixture(autouse=True)
def unique_lab_prefix(monkeypatch):
    """bpftlab-<unique>-<topology>-<role>: parallel runs (and a user's own lab) never meet."""
    monkeypatch.setenv("BPFTOOLS_LAB_PREFIX", f"bpftlab-t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def lab_down_after():
    made = []
    yield made.append
    for name in made:
        cli("lab", "down", name)


def _lab_up(name: str, track) -> None:
    track(name)
    proc = cli("lab", "up", name, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _diagnose(ns: str, dst: str, *ping_args: str, size: int = 56) -> (int, dict):
    proc = cli("diagnose", "ping", dst, *ping_args, "--netns", ns, "--count", "2", "--timeout", "1",
               "--size", str(size), "--json", timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def assert_no_template(commands) -> None:
    """A printed fix runs as printed: no `<gateway>`-style placeholder for the user to fill in."""
    assert not [c for c in commands if "<" in c or ">" in c], commands


def _ping_ok(ns: str, dst: str, *ping_args: str, size: int = 56) -> bool:
    for _ in range(5):
        if subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "1", "-s", str(size),
                           *ping_args, dst], capture_output=True).returncode == 0:
            return True
    return False


def _pings(topology: str, families=(4, 6)):
    """Every (namespace, address, size) the topology's faults ping, in `families`: all must work
    when it is healthy."""
    topo = TOPOLOGIES[topology]
    found = set()
    for family in (f for f in families if f in topo.families):
        found.add(topo.ping(family=family) + (56,))
        found |= {topo.ping(f.name, family) + (topo.ping_size(f.name, family),)
                  for f in topo.faults.values() if family in f.families}
    return sorted(found)


def _lab_up_healthy(topology: str, track) -> None:
    _lab_up(topology, track)
    if TOPOLOGIES[topology].starts_broken:   # built as the seed has it: `lab fix` repairs it
        assert cli("lab", "fix", topology).returncode == 0


@pytest.mark.parametrize("topology,family", [pytest.param(t, f, marks=_marks(t), id=f"{t}-ipv{f}")
                                             for t, f in HEALTHY])
def test_healthy_topology_is_reachable_without_causes(topology, family, lab_down_after):
    _lab_up_healthy(topology, lab_down_after)
    args = TOPOLOGIES[topology].ping_args()
    ns, dst = TOPOLOGIES[topology].ping(family=family)
    rc, result = _diagnose(ns, dst, *args)
    assert rc == 0, result
    assert result["reachable"] is True and result["family"] == family
    assert result["causes"] == []
    assert result["sent"] == 2 and result["received"] == 2
    # delivered, or handed to the user-space program holding a tun device (which answers)
    assert [h for h in result["path"] if h["action"] in ("deliver", "program")], result["path"]
    for f_ns, f_dst, size in _pings(topology, (family,)):
        if (f_ns, f_dst, size) != (ns, dst, 56):
            rc, other = _diagnose(f_ns, f_dst, *args, size=size)
            assert rc == 0 and other["causes"] == [], other


@pytest.mark.parametrize("topology,fault,family", [pytest.param(t, f, fam, marks=_marks(t, f),
                                                                id=f"{t}-{f}-ipv{fam}") for t, f, fam in MATRIX])
def test_diagnose_names_the_injected_fault_and_every_fix_is_safe(topology, fault, family, lab_down_after):
    """The fault is named first; EVERY fix printed (first cause and the others) applied makes the
    ping work; and the same commands applied to the healthy topology break none of its pings
    (of either family)."""
    if fault == "bridge_netfilter" and not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
        pytest.skip("br_netfilter is not loaded on this kernel (no net.bridge.bridge-nf-call-iptables)")
    topo = TOPOLOGIES[topology]
    args = topo.ping_args()
    _lab_up(topology, lab_down_after)
    proc = cli("lab", "break", topology, fault, *(["-6"] if family == 6 else []))
    assert proc.returncode == 0, proc.stderr
    ns, dst = topo.ping(fault, family)
    size = topo.ping_size(fault, family)
    rc, result = _diagnose(ns, dst, *args, size=size)
    assert result["reachable"] is False, result
    assert rc == 1, result
    first = result["causes"][0]
    assert first["cause"] == fault, json.dumps(result["causes"], indent=1)
    located = topo.fault(fault, family).at
    if located:   # located on the right node (overlays: which end of the tunnel)
        assert first["netns"] == topo.ns(located), json.dumps(result["causes"], indent=1)
    if not topo.faults[fault].printed_fix:   # nothing can be derived: no command printed, `lab fix` repairs it
        assert first["fix"] == [] and first["ifname"] and first["proven"] is False, first
        assert cli("lab", "fix", topology).returncode == 0
        assert _ping_ok(ns, dst, *args, size=size)
        return
    assert first["fix"] and first["proven"] is True, first
    assert all(cause["proven"] == bool(cause["fix"]) for cause in result["causes"]), result["causes"]
    fixes = [command for cause in result["causes"] for command in cause["fix"]]
    assert_no_template(fixes + [command for cause in result["causes"] for command in cause["advice"]])
    for command in fixes:
        done = run_printed(command)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    assert _ping_ok(ns, dst, *args, size=size), f"still no ping after {fixes}"
    rc, after = _diagnose(ns, dst, *args, size=size)
    assert rc == 0 and after["causes"] == [], after
    _lab_up_healthy(topology, lab_down_after)   # rebuilt healthy: the same commands must not break it
    for command in fixes:
        run_printed(command)   # may fail (nothing to delete): harmless
    broken = [p for p in _pings(topology) if not _ping_ok(p[0], p[1], *args, size=p[2])]
    assert broken == [], f"{fixes} broke the healthy {topology}: {broken}"


def test_veth_pair_seed_is_explained_and_fixed(lab_down_after):
    """The seed: veth0 192.168.4.3/24 and veth1 192.168.4.2/24 in one namespace, `ping -I veth0
    192.168.4.2` gets no reply. diagnose explains it, its fix works, and `lab fix` repairs it too."""
    _lab_up("veth-pair", lab_down_after)
    ns, dst = TOPOLOGIES["veth-pair"].ping()
    assert not _ping_ok(ns, dst, "-I", "veth0") and _ping_ok(ns, dst)   # the seed: only the bound ping fails
    proc = cli("diagnose", "ping", dst, "-I", "veth0", "--netns", ns, "--count", "2", "--timeout", "1", timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stdout
    assert f"it breaks in {ns}, veth1: local_source" in text
    assert "SO_BINDTODEVICE" in text and "skips its local route" in text and "over lo" in text
    fix = [line.strip() for line in text.splitlines() if line.startswith("    ip netns exec")]
    assert fix == [f"ip netns exec {ns} sysctl -w net.ipv4.conf.veth1.accept_local=1"], text
    for command in fix:
        assert run_printed(command).returncode == 0
    assert _ping_ok(ns, dst, "-I", "veth0")
    rc, result = _diagnose(ns, dst, "-I", "veth0")
    assert rc == 0 and result["device"] == "veth0" and result["source"] == "192.168.4.3", result
    # the seed again, then `lab fix`; and `lab break` brings the seed's fault back
    _lab_up("veth-pair", lab_down_after)
    assert not _ping_ok(ns, dst, "-I", "veth0")
    proc = cli("lab", "fix", "veth-pair")
    assert proc.returncode == 0 and "local_source" in proc.stdout
    assert _ping_ok(ns, dst, "-I", "veth0") and _ping_ok(ns, "192.168.4.3", "-I", "veth1")
    assert cli("lab", "break", "veth-pair", "local_source").returncode == 0
    assert not _ping_ok(ns, dst, "-I", "veth0")


def test_link_local_destination_with_its_interface(lab_down_after):
    """`ping fe80::…%veth0`: the walk leaves by the scope interface, the source is the link-local
    address there, the per-hop counter counts the ICMPv6 echo; a link down on the far end is named."""
    _lab_up("veth", lab_down_after)
    topo = TOPOLOGIES["veth"]
    ns, _ = topo.ping(family=6)
    shown = subprocess.run(["ip", "-n", topo.ns("ns1"), "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"],
                           capture_output=True, text=True).stdout.split()
    peer = shown[shown.index("inet6") + 1].split("/")[0]
    rc, result = _diagnose(ns, f"{peer}%veth0")
    assert rc == 0 and result["family"] == 6 and result["source"].startswith("fe80:"), result
    first = result["path"][0]
    assert (first["netns"], first["oif"]) == (ns, "veth0")
    if first["packets"]["unit"] == "echo":   # BPF counting available (it is on the reference machine)
        assert first["packets"]["out"] == 2, result["path"]
    assert cli("lab", "break", "veth", "link_down", "-6").returncode == 0
    rc, result = _diagnose(ns, f"{peer}%veth0")
    assert rc == 1 and result["causes"][0]["cause"] == "link_down", result["causes"]


def test_lab_fix_undoes_the_faults(lab_down_after):
    _lab_up("routed", lab_down_after)
    ns, dst = TOPOLOGIES["routed"].ping()
    ns6, dst6 = TOPOLOGIES["routed"].ping(family=6)
    for fault in ("ip_forward_disabled", "no_return_route"):
        assert cli("lab", "break", "routed", fault).returncode == 0
    assert cli("lab", "break", "routed", "no_route", "-6").returncode == 0
    assert not _ping_ok(ns, dst) and not _ping_ok(ns6, dst6)
    proc = cli("lab", "fix", "routed")
    assert proc.returncode == 0 and "no_return_route" in proc.stdout and "no_route/ipv6" in proc.stdout
    assert _ping_ok(ns, dst) and _ping_ok(ns6, dst6)


def test_lab_down_all_removes_everything_it_made():
    from bpftools.lab import STATE_DIR, namespaces_of, prefix

    try:
        assert cli("lab", "up", "veth").returncode == 0
        assert cli("lab", "up", "bridge").returncode == 0
        assert cli("lab", "break", "veth", "netfilter_drop").returncode == 0
        assert len(namespaces_of()) == 5
        listed = [json.loads(line) for line in cli("lab", "list", "--json").stdout.splitlines()]
        assert {r["topology"]: r["broken"] for r in listed if r["up"]} == {"veth": ["netfilter_drop"], "bridge": []}
    finally:
        proc = cli("lab", "down", "--all")
    assert proc.returncode == 0 and "removed 5 namespace(s)" in proc.stdout
    assert namespaces_of() == []
    assert not [f for f in (os.listdir(STATE_DIR) if os.path.isdir(STATE_DIR) else []) if f.startswith(prefix())]


def test_lab_fix_puts_the_macvlan_shim_back(lab_down_after):
    """The host cannot reach its macvlan container without the shim; `lab fix` adds it again."""
    _lab_up("macvlan", lab_down_after)
    ns, dst = TOPOLOGIES["macvlan"].ping("macvlan_parent_isolation")
    assert cli("lab", "break", "macvlan", "macvlan_parent_isolation").returncode == 0
    assert not _ping_ok(ns, dst)
    proc = cli("lab", "fix", "macvlan")
    assert proc.returncode == 0 and "macvlan_parent_isolation" in proc.stdout
    assert _ping_ok(ns, dst)
