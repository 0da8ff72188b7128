"""apply_fix on tunnel devices: what `ip link add|set|del` of VXLAN/GENEVE devices and `bridge fdb`
do to the model, each as the kernel answered the same command in a scratch namespace (6.18)."""
from __future__ import annotations

import pytest

from bpftools.diagnose.apply_fix import Refused, Unmodelled, apply_argv
from bpftools.diagnose.state import (Addr, FdbEntry, Link, Neighbour, NetnsState, Route, conf_sysctl, default_rules,
                                     local_routes)

ZERO = "00:00:00:00:00:00"


def node() -> NetnsState:
    """An underlay veth u0 (10.9.0.1/24), its peer u1 here too, and a bridge br0."""
    links = [Link(1, "lo"), Link(2, "u0", "veth", mtu=1500, peer_netns="node", peer_ifindex=3),
             Link(3, "u1", "veth", peer_netns="node", peer_ifindex=2), Link(4, "br0", "bridge")]
    addrs = [Addr(2, "10.9.0.1", 24)]
    routes = local_routes(addrs) + [Route("10.9.0.0", 24, oif=2, prefsrc="10.9.0.1", scope=253)]
    return NetnsState("node", links, addrs, routes, default_rules(4) + default_rules(6),
                      sysctls={"net.ipv4.conf.default.rp_filter": 2, "net.ipv4.conf.all.rp_filter": 0})


def run(state: NetnsState, *lines: str) -> NetnsState:
    for line in lines:
        apply_argv(state, line.split())
    return state


def vx(state: NetnsState, name: str = "vx1") -> Link:
    return state.link_by_name(name)


VX1 = "ip link add vx1 type vxlan id 43 dstport 4789 dev u0 remote 10.9.0.2 local 10.9.0.1 nolearning"


def test_vxlan_add_takes_every_attribute_and_makes_the_default_entry():
    state = run(node(), VX1)
    link = vx(state)
    assert (link.kind, link.vni, link.dstport, link.tunnel_remote, link.tunnel_local, link.tunnel_dev) == \
        ("vxlan", 43, 4789, "10.9.0.2", "10.9.0.1", 2)
    assert not link.learning and not link.admin_up and link.mtu == 1450      # u0's 1500 minus 50
    assert link.fdb == [FdbEntry(ZERO, "10.9.0.2")] and link.vxlan_fdb == ["10.9.0.2"]
    assert state.sysctls[conf_sysctl("vx1", "rp_filter").replace("/", ".")] == 2   # from conf/default


def test_vxlan_add_defaults_clamps_and_refusals():
    state = run(node(), "ip link add vx0 type vxlan id 42",
                "ip link add vx6 address 02:00:00:00:00:07 mtu 1400 type vxlan id 77 dstport 4789 remote fd00::2",
                "ip link add vx8 mtu 9000 type vxlan id 88 dstport 4789 remote fd00::2 dev u0",
                "ip link add vx5 type vxlan id 55 dstport 4789 group 239.1.1.1 dev u0")
    assert (vx(state, "vx0").dstport, vx(state, "vx0").mtu, vx(state, "vx0").fdb) == (8472, 1500, [])
    assert (vx(state, "vx6").mac, vx(state, "vx6").mtu) == ("02:00:00:00:00:07", 1400)
    assert vx(state, "vx8").mtu == 1430                                    # IPv6 underlay: 70 bytes, clamped
    assert vx(state, "vx5").tunnel_group == "239.1.1.1" and vx(state, "vx5").fdb == [FdbEntry(ZERO, "239.1.1.1")]
    for line, why in [("ip link add vx9 type vxlan id 42", "VNI already exists"),          # same VNI and port
                      ("ip link add vx9 type vxlan id 43 remote 10.9.0.2 group 239.1.1.1 dev u0", "both group"),
                      ("ip link add vx9 type vxlan id 44 group 239.1.1.1", "requires 'dev'"),
                      ("ip link add vx9 type vxlan id 44 dev u7", "no interface u7"),
                      ("ip link add vx0 type vxlan id 45", "exists")]:
        with pytest.raises(Refused, match=why):
            run(state, line)
    run(state, "ip link add vx9 type vxlan id 42 dstport 4790")            # another port: fine


def test_geneve_add():
    link = vx(run(node(), "ip link add gn0 type geneve id 7 remote 10.9.0.2"), "gn0")
    assert (link.kind, link.vni, link.dstport, link.tunnel_remote, link.fdb) == ("geneve", 7, 6081, "10.9.0.2", [])
    with pytest.raises(Unmodelled):
        run(node(), "ip link add gn0 type geneve id 7 external")


def test_changing_remote_moves_the_default_entry_and_keeps_the_appended_ones():
    state = run(node(), VX1, "bridge fdb append 00:00:00:00:00:00 dev vx1 dst 10.9.0.7",
                "ip link set vx1 type vxlan remote 10.9.0.5 ttl 5 learning local 10.9.0.3")
    link = vx(state)
    assert link.tunnel_remote == "10.9.0.5" and link.learning and link.tunnel_local == "10.9.0.3"
    assert sorted(e.dst for e in link.fdb) == ["10.9.0.5", "10.9.0.7"] and set(link.vxlan_fdb) == {"10.9.0.5",
                                                                                                  "10.9.0.7"}


@pytest.mark.parametrize("words, why", [("id 44", "Cannot change VNI"), ("dstport 4790", "Cannot change port"),
                                        ("dstport 4789", "Cannot change port")])
def test_vni_and_port_cannot_change_in_place(words, why):
    with pytest.raises(Refused, match=why):
        run(node(), VX1, f"ip link set vx1 type vxlan {words}")
    run(node(), VX1, "ip link set vx1 type vxlan id 43")     # the same VNI: accepted


def test_mtu_above_the_underlay_is_refused():
    state = run(node(), VX1, "ip link set vx1 mtu 1450")
    with pytest.raises(Refused, match="1450"):
        run(state, "ip link set vx1 mtu 1451")
    run(state, "ip link set u0 mtu 1550", "ip link set vx1 mtu 1500")
    assert vx(state).mtu == 1500


def test_bridge_fdb_verbs_as_the_kernel_answers_them():
    state = run(node(), VX1)
    with pytest.raises(Refused, match="File exists"):
        run(state, "bridge fdb add 00:00:00:00:00:00 dev vx1 dst 10.9.0.7")
    run(state, "bridge fdb append 00:00:00:00:00:00 dev vx1 dst 10.9.0.7",
        "bridge fdb append 00:00:00:00:00:00 dev vx1 dst 10.9.0.7",          # already there: nothing
        "bridge fdb add 02:00:00:00:00:01 dev vx1 dst 10.9.0.9",
        "bridge fdb append 02:00:00:00:00:01 dev vx1 dst 10.9.0.10",         # a unicast entry keeps its remote
        "bridge fdb append 02:00:00:00:00:02 dev vx1 dst 10.9.0.12 port 4790 vni 99",
        "bridge fdb add 02:00:00:00:00:03 dev vx1 dst 10.9.0.13 self static",
        "bridge fdb add 02:00:00:00:00:04 dev vx1 dst 10.9.0.14 port 4789 vni 43")   # the device's own: dropped
    link = vx(state)
    assert [(e.mac[-2:], e.dst, e.port, e.vni) for e in link.fdb] == [
        ("00", "10.9.0.2", None, None), ("00", "10.9.0.7", None, None), ("01", "10.9.0.9", None, None),
        ("02", "10.9.0.12", 4790, 99), ("03", "10.9.0.13", None, None), ("04", "10.9.0.14", None, None)]
    run(state, "bridge fdb replace 02:00:00:00:00:01 dev vx1 dst 10.9.0.11")
    assert [e.dst for e in link.fdb if e.mac.endswith("01")] == ["10.9.0.11"]
    with pytest.raises(Refused, match="not supported"):
        run(state, "bridge fdb replace 00:00:00:00:00:00 dev vx1 dst 10.9.0.8")
    with pytest.raises(Refused, match="Invalid argument"):
        run(state, "bridge fdb add 02:00:00:00:00:05 dev vx1")
    with pytest.raises(Refused, match="No such file"):
        run(state, "bridge fdb del 02:00:00:00:00:05 dev vx1")
    run(state, "bridge fdb del 00:00:00:00:00:00 dev vx1 dst 10.9.0.99",    # a remote it has not: nothing
        "bridge fdb del 00:00:00:00:00:00 dev vx1 dst 10.9.0.7")
    assert [e.dst for e in link.fdb if e.mac == ZERO] == ["10.9.0.2"]
    run(state, "bridge fdb del 00:00:00:00:00:00 dev vx1")
    assert not any(e.mac == ZERO for e in link.fdb) and "10.9.0.2" not in link.vxlan_fdb


@pytest.mark.parametrize("line", ["bridge fdb add 02:00:00:00:00:01 dev u1 master",          # a bridge port
                                  "bridge fdb add 02:00:00:00:00:01 dev vx1 dst 10.9.0.2 master",
                                  "bridge fdb add 02:00:00:00:00:01 dev vx1 dst 10.9.0.2 src_vni 5",
                                  "bridge fdb show", "bridge vlan add vid 5 dev u1",
                                  "ip link set vx1 type vxlan group 239.1.1.2", "ip link set vx1 frobnicate",
                                  "ip link add vx2 type vxlan id 9 tos 4", "ip link add v type veth peer name w",
                                  "ip link set vx1 master u0"])
def test_what_the_tunnel_model_cannot_apply_is_unmodelled(line):
    with pytest.raises(Unmodelled):
        run(node(), VX1, line)


def test_link_del_takes_its_addresses_routes_neighbours_ports_and_bound_devices():
    state = run(node(), VX1, "ip link set vx1 master br0", "ip link set vx1 up", "ip addr add 10.244.0.0/32 dev vx1",
                "ip neigh add 10.244.1.0 lladdr 02:00:00:00:01:00 dev vx1 nud permanent",
                "ip route add 10.244.1.0/24 via 10.244.1.0 dev vx1 onlink",
                "ip link add gn0 type geneve id 7 remote 10.9.0.2")
    assert vx(state).master == 4 and state.neighbour(vx(state).ifindex, "10.244.1.0")
    run(state, "ip link del vx1")
    assert vx(state) is None and not state.owns("10.244.0.0") and state.neighbours == []
    assert not any(r.dst == "10.244.1.0" for r in state.routes) and "net.ipv4.conf.vx1.rp_filter" not in state.sysctls
    run(state, VX1, "ip link set vx1 master br0", "ip link del br0")
    assert vx(state).master is None
    run(state, "ip link del dev u0")            # the veth pair goes, and vx1 bound to it
    assert [l.ifname for l in state.links] == ["lo", "gn0"]
    with pytest.raises(Refused):
        run(state, "ip link del lo")


def test_link_del_of_a_veth_whose_peer_is_elsewhere_is_unmodelled():
    state = node()
    state.link_by_name("u0").peer_netns = "other"
    with pytest.raises(Unmodelled, match="other"):
        run(state, "ip link del u0")
    state.link_by_name("u0").peer_netns = None      # not known: neither
    with pytest.raises(Unmodelled, match="not known"):
        run(state, "ip link del u0")


def test_link_address_and_master():
    state = run(node(), VX1, "ip link set vx1 address 02:11:22:33:44:55", "ip link set vx1 master br0")
    assert (vx(state).mac, vx(state).master) == ("02:11:22:33:44:55", 4)
    run(state, "ip link set vx1 nomaster")
    assert vx(state).master is None


def test_neighbour_add_of_an_entry_and_del_of_none_fail_like_the_kernel():
    state = node()
    state.neighbours.append(Neighbour(2, "10.9.0.50", "failed"))
    with pytest.raises(Refused, match="File exists"):
        run(state, "ip neigh add 10.9.0.50 lladdr 02:00:00:00:00:51 dev u0 nud permanent")
    run(state, "ip neigh replace 10.9.0.50 lladdr 02:00:00:00:00:51 dev u0 nud permanent")
    assert state.neighbour(2, "10.9.0.50").state == "permanent"
    with pytest.raises(Refused, match="No such file"):
        run(state, "ip neigh del 10.9.0.60 dev u0")
    run(state, "ip neigh flush dev u0 to 10.9.0.60", "ip neigh del 10.9.0.50 dev u0")
    assert state.neighbours == []


def test_sysctl_names_an_interface_with_a_dot_as_sysctl_does():
    """`sysctl -w net.ipv4.conf.flannel.1.rp_filter=2` fails on the kernel (no such file); the dot
    in the name is written `/`."""
    state = run(node(), "ip link add flannel.1 type vxlan id 1 dstport 8472 dev u0")
    with pytest.raises(Refused, match="No such file"):
        run(state, "sysctl -w net.ipv4.conf.flannel.1.rp_filter=2")
    run(state, f"sysctl -w {conf_sysctl('flannel.1', 'rp_filter')}=1")
    assert state.rp_filter("flannel.1") == 1
    run(state, "sysctl -w net/ipv4/conf/flannel.1/rp_filter=0")
    assert state.rp_filter("flannel.1") == 0
    with pytest.raises(Refused):
        run(state, "sysctl -w net.ipv4.conf.eth9.rp_filter=0")


def test_the_rp_filter_fix_on_flannel_1_names_it_as_sysctl_does():
    """The decapsulated packet arrives on flannel.1: the rp_filter fix must write that device's setting."""
    from bpftools.diagnose.checks import rp_filter_loosening

    state = run(node(), "ip link add flannel.1 type vxlan id 1 dstport 8472 dev u0",
                "sysctl -w net.ipv4.conf.flannel/1.rp_filter=1")
    fix = rp_filter_loosening(state, vx(state, "flannel.1"))
    assert fix[-1] == ("sysctl", "-w", "net.ipv4.conf.flannel/1.rp_filter=2")
    run(state, *(" ".join(argv) for argv in fix))
    assert state.rp_filter("flannel.1") == 2
