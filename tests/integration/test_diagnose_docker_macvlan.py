"""A real Docker macvlan network (`docker network create -d macvlan -o parent=IFACE`): the host
cannot ping its own container on it, `diagnose` names `macvlan_parent_isolation` on the host's
parent interface, and its printed fix (a macvlan shim) makes the ping work; from the container
to another namespace on the parent's wire the path is healthy.

Host changes are only uniquely named objects beside dockerd: the parent, a veth whose other end
is in a namespace of the test (another host on that LAN), with an address of a subnet no host
route covers, and the shim the printed fix adds on it; all removed afterwards, pass or fail
(deleting the parent removes its macvlan children, the shim among them)."""
from __future__ import annotations

import ipaddress
import json
import random
import subprocess
from dataclasses import dataclass

import pytest

from bpftools.topology import Topology, run, unique_name
from bpftools_proc import cli, run_printed


@dataclass
class Lan:
    parent: str        # the veth end in the host namespace (the macvlan parent)
    netns: str         # the namespace on its other end: another host on the LAN
    subnet: ipaddress.IPv4Network

    def address(self, host: int) -> str:
        return str(self.subnet.network_address + host)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no host route (but the default) covers."""
    used = []
    for line in run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word.split("/")[0].replace(".", "").isdigit() and word != "0.0.0.0/0":
            used.append(ipaddress.ip_network(word if "/" in word else f"{word}/32", strict=False))
    for _ in range(100):
        candidate = ipaddress.ip_network(f"10.{random.randint(200, 207)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise AssertionError("no free 10.200.0.0/13 subnet on this host")


@pytest.fixture
def lan():
    """The parent veth (host end addressed .1) and another host on it (.3); removed afterwards."""
    subnet = _free_subnet()
    parent = unique_name("btmv")
    with Topology("bt-mvlan") as topo:
        other = topo.netns("lan")
        try:
            topo.veth(None, parent, other, "eth0", f"{subnet.network_address + 1}/24",
                      f"{subnet.network_address + 3}/24")
            yield Lan(parent, other, subnet)
        finally:
            run("ip", "link", "del", parent, check=False)   # its macvlan children (the shim) go with it


def _diagnose(dst: str, netns: str = None) -> (int, dict):
    proc = cli("diagnose", "ping", dst, "--count", "2", "--timeout", "1", "--json",
               *(["--netns", netns] if netns else []), timeout=180)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _pings(prefix, dst: str) -> bool:
    for _ in range(5):
        if subprocess.run([*prefix, "ping", "-n", "-q", "-c", "1", "-W", "1", dst], capture_output=True).returncode == 0:
            return True
    return False


def test_the_host_reaches_its_macvlan_container_through_the_printed_shim(lan, docker_env):
    net = docker_env.network("mvlan", driver="macvlan", options={"parent": lan.parent}, subnet=str(lan.subnet),
                             gateway=lan.address(1), ip_range=str(ipaddress.ip_network(f"{lan.address(128)}/25")))
    ctr = docker_env.run("mv", network=net)
    in_ctr = ["nsenter", f"--net={ctr.netns_path}"]
    # healthy: the container reaches another host on its parent's wire
    assert _pings(in_ctr, lan.address(3))
    rc, result = _diagnose(lan.address(3), f"docker:{ctr.name}")
    assert rc == 0 and result["causes"] == [], result
    assert [h for h in result["path"] if h["netns"] == lan.netns and h["action"] == "deliver"], result["path"]
    # the host cannot ping its own container: the isolation is named on the host's parent
    assert not _pings([], ctr.ip)
    rc, result = _diagnose(ctr.ip)
    assert rc == 1 and result["reachable"] is False, result
    first = result["causes"][0]
    assert (first["cause"], first["netns"], first["ifname"]) == ("macvlan_parent_isolation", "host", lan.parent), first
    assert first["proven"] is True, first
    shim = f"shim-{lan.parent}"[:15]
    assert first["fix"] == [f"ip link add {shim} link {lan.parent} type macvlan mode bridge",
                            f"ip addr add {lan.address(1)}/32 dev {shim}", f"ip link set {shim} up",
                            f"ip route add {ctr.ip}/32 dev {shim}"], first
    for command in first["fix"]:
        done = run_printed(command)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    assert _pings([], ctr.ip)
    rc, after = _diagnose(ctr.ip)
    assert rc == 0 and after["causes"] == [], after
