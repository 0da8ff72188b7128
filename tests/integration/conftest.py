"""Topology fixtures for integration tests (built on the product's own Topology)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from cri_env import cri_env, cri_runtime  # noqa: F401  (fixtures)
from docker_env import docker_engine, docker_env, docker_image  # noqa: F401  (fixtures)


@dataclass
class VethPair:
    """ns_a:veth_a 10.11.0.1/24 <-> ns_b:veth_b 10.11.0.2/24."""
    ns_a: str
    ns_b: str
    veth_a: str = "va"
    veth_b: str = "vb"
    addr_a: str = "10.11.0.1"
    addr_b: str = "10.11.0.2"


@pytest.fixture
def veth_pair(topo) -> VethPair:
    pair = VethPair(topo.netns("a"), topo.netns("b"))
    topo.veth(pair.ns_a, pair.veth_a, pair.ns_b, pair.veth_b, f"{pair.addr_a}/24", f"{pair.addr_b}/24")
    return pair


@dataclass
class Routed:
    """left 10.21.1.2/24 -- (r-left 10.21.1.1) router (r-right 10.21.2.1) -- right 10.21.2.2/24."""
    left: str
    router: str
    right: str
    left_addr: str = "10.21.1.2"
    right_addr: str = "10.21.2.2"
    router_left_addr: str = "10.21.1.1"
    router_right_addr: str = "10.21.2.1"


@pytest.fixture
def routed(topo) -> Routed:
    r = Routed(topo.netns("l"), topo.netns("r"), topo.netns("rt"))
    r.left, r.router, r.right = r.left, r.router, r.right
    topo.veth(r.left, "eth0", r.router, "r-left", f"{r.left_addr}/24", f"{r.router_left_addr}/24")
    topo.veth(r.right, "eth0", r.router, "r-right", f"{r.right_addr}/24", f"{r.router_right_addr}/24")
    topo.sysctl(r.router, "net.ipv4.ip_forward", 1)
    from bpftools.topology import run

    run("ip", "route", "add", "default", "via", r.router_left_addr, netns=r.left)
    run("ip", "route", "add", "default", "via", r.router_right_addr, netns=r.right)
    return r


@dataclass
class Bridged:
    """a:eth0 10.31.0.1/24 and b:eth0 10.31.0.2/24, both ports of br0 in namespace `switch`."""
    a: str
    b: str
    switch: str
    addr_a: str = "10.31.0.1"
    addr_b: str = "10.31.0.2"


@pytest.fixture
def bridged(topo) -> Bridged:
    br = Bridged(topo.netns("a"), topo.netns("b"), topo.netns("sw"))
    topo.veth(br.a, "eth0", br.switch, "pa", f"{br.addr_a}/24")
    topo.veth(br.b, "eth0", br.switch, "pb", f"{br.addr_b}/24")
    topo.bridge(br.switch, "br0", ["pa", "pb"])
    return br
