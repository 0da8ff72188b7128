"""`bpftools diagnose ping` and `bpftools lab` as a user runs them: options, exit statuses
that need no namespaces (usage errors are 3, so 1 and 2 keep meaning "unreachable")."""
from __future__ import annotations

import json

import pytest

from bpftools_proc import cli
from bpftools.lab import TOPOLOGIES
from bpftools.diagnose.checks import CAUSES


def test_help_names_the_options():
    proc = cli("diagnose", "ping", "--help")
    assert proc.returncode == 0
    for option in ("--netns", "--count", "--timeout", "--json"):
        assert option in proc.stdout


@pytest.mark.parametrize("args", [("diagnose", "ping"), ("diagnose", "ping", "10.0.0.1", "--count", "x"),
                                  ("diagnose", "ping", "10.0.0.1", "--bogus"),
                                  ("diagnose", "ping", "not-an-address"),
                                  ("diagnose", "ping", "10.0.0.1", "--count", "0")])
def test_usage_and_environment_errors_exit_3(args):
    proc = cli(*args)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr


def test_lab_list_shows_every_topology_and_its_faults():
    proc = cli("lab", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["topology"] for r in rows] == list(TOPOLOGIES)
    assert all(r["ping"].startswith("ip netns exec bpftlab-") for r in rows)


def test_every_lab_fault_is_a_diagnose_cause_and_namespaces_are_prefixed():
    for topo in TOPOLOGIES.values():
        assert topo.ns("x") == f"bpftlab-{topo.name}-x"
        for name, fault in topo.faults.items():
            assert name in CAUSES and name == fault.name
            assert (fault.steps or fault.program) and fault.undo


def test_lab_down_needs_a_name_or_all():
    assert cli("lab", "down").returncode != 0


def test_lab_prefix_comes_from_the_environment_and_is_checked(monkeypatch):
    from bpftools.errors import BpftoolsError
    from bpftools.lab import prefix

    monkeypatch.delenv("BPFTOOLS_LAB_PREFIX", raising=False)
    assert prefix() == "bpftlab" and TOPOLOGIES["routed"].ping("mtu") == ("bpftlab-routed-left", "10.72.2.2")
    monkeypatch.setenv("BPFTOOLS_LAB_PREFIX", "bpftlab-t1")
    assert TOPOLOGIES["bridge"].ping("bridge_port_address") == ("bpftlab-t1-bridge-sw", "10.71.0.1")
    for bad in ("other", "bpftlab-../x", "bpftlab-UPPER"):
        monkeypatch.setenv("BPFTOOLS_LAB_PREFIX", bad)
        with pytest.raises(BpftoolsError):
            prefix()


@pytest.mark.parametrize("extra, message", [(("-I", "bpftno0dev"), "no such interface"),
                                            (("--source", "203.0.113.77"), "is not an address of"),
                                            (("-I", "203.0.113.7", "--source", "203.0.113.8"), "two different"),
                                            (("--source", "not-an-address"), "is not an IPv4 address")])
def test_bad_interface_or_source_is_a_one_line_error(extra, message):
    proc = cli("diagnose", "ping", "10.0.0.1", *extra)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_topology_never_claims_the_namespaces_of_a_longer_named_one(monkeypatch):
    from bpftools import lab

    monkeypatch.delenv("BPFTOOLS_LAB_PREFIX", raising=False)
    names = {1: "bpftlab-veth-host", 2: "bpftlab-veth-ns1", 3: "bpftlab-veth-pair-host", 4: "bpftlab-bridge-a"}
    monkeypatch.setattr(lab, "named_netns", lambda: names)
    assert lab.namespaces_of("veth") == ["bpftlab-veth-host", "bpftlab-veth-ns1"]
    assert lab.namespaces_of("veth-pair") == ["bpftlab-veth-pair-host"]
    assert TOPOLOGIES["veth-pair"].ping_command() == \
        "ip netns exec bpftlab-veth-pair-host ping -I veth0 192.168.4.2"
