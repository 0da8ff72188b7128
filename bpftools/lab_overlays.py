"""Lab topologies of overlays: two "node" namespaces joined by an underlay link, a "pod" namespace
on each, and a tunnel between the nodes that carries the pods' packets. `overlay-l2` bridges the
pods over VXLAN (Docker overlay networks, Weave); `overlay-flannel` routes them over a VXLAN
device with the static neighbour and FDB entries flanneld programs; `overlay-geneve` is the L2
overlay over GENEVE (where the kernel has it). Registered in `lab.TOPOLOGIES`.

The pods are dual-stack; the underlay is IPv4, except Flannel's IPv6 pods, which go through its
own flannel-v6.1 device over the IPv6 underlay (as flanneld does it)."""
from __future__ import annotations

from typing import List

from .errors import BpftoolsError
from .lab_model import Fault, LabBuilder, LabTopology, Step, six

POD_MTU = 1450          # what the CNI plugin gives a pod over a 1500 underlay: 1500 - 50 of VXLAN
POD_MTU6 = 1430         # over an IPv6 underlay: 1500 - 70 (Flannel's dual-stack pods get the smaller)
SIZE_OVER, SIZE_OVER6 = 1472, 1452   # ping payloads of a 1500-byte packet: fits a 1500 pod, not a 1450 tunnel


def _sysctl(key: str, value) -> List[str]:
    return ["sysctl", "-qw", f"{key}={value}"]


def _pod(b: LabBuilder, node: str, pod: str, port: str, cidr: str, cidr6: str, mtu: int = POD_MTU) -> None:
    """The pod namespace and its veth: eth0 in the pod, `port` on the node, both at the pod MTU."""
    b.veth(b.topo.ns(node), port, b.netns(pod), "eth0", None, cidr)
    b.addr6(pod, "eth0", cidr6)
    for role, ifname in ((node, port), (pod, "eth0")):
        b.run(role, "ip", "link", "set", ifname, "mtu", str(mtu))


def _underlay(b: LabBuilder, net: str, net6: str) -> None:
    """node1 and node2 with the underlay veth between them: <net>.1/24 and <net>.2/24."""
    node1, node2 = b.netns("node1"), b.netns("node2")
    b.veth(node1, "underlay", node2, "underlay", f"{net}.1/24", f"{net}.2/24")
    b.addr6("node1", "underlay", f"{net6}:1/64")
    b.addr6("node2", "underlay", f"{net6}:2/64")


def _mtu_steps(node: str, pod: str, port: str, mtu: int) -> List[Step]:
    """The pod and its node's port at `mtu` (the fault: 1500; its undo: the pod MTU)."""
    return [(pod, ["ip", "link", "set", "eth0", "mtu", str(mtu)]), (node, ["ip", "link", "set", port, "mtu", str(mtu)])]


# -- overlay-l2: a bridge on each node holding vxlan0 -----------------------------------------------------
# pod1 eth0 10.81.0.1/24 -- veth-pod [node1 br0: veth-pod, vxlan0 (VNI 42, 4789, local 10.80.0.1)]
#   underlay 10.80.0.1/24 <-> 10.80.0.2/24 underlay [node2 br0: vxlan0 (VNI 42), veth-pod] -- eth0 pod2 10.81.0.2/24
# vxlan0 learns nothing (`nolearning`): each node's all-zeros FDB entry sends every frame to the other node.
L2_NET, L2_NET6 = "10.80.0", "fd00:80:"
L2_VNI, L2_PORT = 42, 4789
L2_RENUMBERED = f"{L2_NET}.12"   # node2's underlay address after the renumbering fault


def _node_ip(node: str) -> str:
    return f"{L2_NET}.{node[-1]}"


def _other(node: str) -> str:
    return "node2" if node == "node1" else "node1"


def _default_fdb(node: str, remote: str = "") -> Step:
    """The all-zeros FDB entry: frames for any MAC go to the other node."""
    return (node, ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan0", "dst",
                   remote or _node_ip(_other(node))])


def _vxlan0(node: str, vni: int = L2_VNI, port: int = L2_PORT, local: str = "", kind: str = "vxlan") -> List[Step]:
    """vxlan0 made as a user makes it: created, MTU, into br0, up, and its default FDB entry
    (a GENEVE device, geneve0, instead has one fixed remote, and no FDB)."""
    local, dev = local or _node_ip(node), f"{kind}0"
    if kind == "geneve":
        create = ["ip", "link", "add", dev, "type", "geneve", "id", str(vni), "remote", _node_ip(_other(node))]
    else:
        create = ["ip", "link", "add", dev, "type", "vxlan", "id", str(vni), "dstport", str(port),
                  "local", local, "nolearning"]
    steps = [(node, create), (node, ["ip", "link", "set", dev, "mtu", str(POD_MTU)]),
             (node, ["ip", "link", "set", dev, "master", "br0"]), (node, ["ip", "link", "set", dev, "up"])]
    return steps + ([] if kind == "geneve" else [_default_fdb(node)])


def _remake_vxlan0(node: str, **kw) -> List[Step]:
    """The kernel cannot change a VXLAN device's VNI, port or local address in place: delete, make again."""
    return [(node, ["ip", "link", "del", "vxlan0"])] + _vxlan0(node, **kw)


def _l2_builder(kind: str):
    def build(b: LabBuilder) -> None:
        _underlay(b, L2_NET, L2_NET6)
        for n, node in ((1, "node1"), (2, "node2")):
            b.bridge(b.topo.ns(node), "br0", [])
            (role, create), *rest = _vxlan0(node, kind=kind)
            try:
                b.run(role, *create)
            except BpftoolsError:
                raise BpftoolsError(f"this kernel has no {kind} module, so the {b.topo.name} lab cannot be built "
                                    f"(see `bpftools doctor`: {kind}_module)") from None
            for role, cmd in rest:
                b.run(role, *cmd)
            _pod(b, node, f"pod{n}", "veth-pod", f"10.81.0.{n}/24", f"fd00:81::{n}/64")
            b.run(node, "ip", "link", "set", "veth-pod", "master", "br0")
    return build


def _firewall(tool: str, verb: str, port: int) -> List[str]:
    return [tool, verb, "INPUT", "-p", "udp", "--dport", str(port), "-j", "DROP"]


def _renumber(old: str, new: str) -> List[Step]:
    """node2's underlay address changes from `old` to `new`, and its vxlan0 is made again with it."""
    return ([("node2", ["ip", "addr", "del", f"{old}/24", "dev", "underlay"]),
             ("node2", ["ip", "addr", "add", f"{new}/24", "dev", "underlay"])]
            + _remake_vxlan0("node2", local=new))


MTU_L2 = Fault("mtu", f"pod1 and its bridge port have MTU 1500 over vxlan0's {POD_MTU}: node1's br0 cannot put a "
               "1500-byte frame on vxlan0 and drops it (no ICMP on a bridge)",
               _mtu_steps("node1", "pod1", "veth-pod", 1500), _mtu_steps("node1", "pod1", "veth-pod", POD_MTU),
               size=SIZE_OVER, at="node1", **six(size=SIZE_OVER6, at="node1"))


def _l2_faults() -> List[Fault]:
    return [
        Fault("tunnel_firewall", f"node2's INPUT drops UDP port {L2_PORT}: the VXLAN packets from node1 never "
              "reach vxlan0", [("node2", _firewall("iptables", "-A", L2_PORT))],
              [("node2", _firewall("iptables", "-D", L2_PORT))], at="node2", **six(at="node2")),
        Fault("tunnel_id_mismatch", f"node2's vxlan0 was made with VNI 43, node1's is {L2_VNI}: node2 has no "
              "device for what node1 sends", _remake_vxlan0("node2", vni=43), _remake_vxlan0("node2"),
              at="node2", **six(at="node2")),
        Fault("tunnel_port_mismatch", f"node2's vxlan0 was made with dstport 4790: nothing on node2 listens on "
              f"{L2_PORT}, where node1 sends", _remake_vxlan0("node2", port=4790), _remake_vxlan0("node2"),
              at="node2", **six(at="node2")),
        Fault("tunnel_no_fdb", "node1's vxlan0 lost its default FDB entry: it has no remote and no entry for "
              "pod2's MAC, so it has nowhere to send",
              [("node1", ["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", "vxlan0", "dst", _node_ip("node2")])],
              [_default_fdb("node1")], at="node1", **six(at="node1")),
        Fault("tunnel_underlay_route", f"node1's underlay address is a /32 without its prefix route: node1 has no "
              f"route to {_node_ip('node2')}, vxlan0's remote",
              [("node1", ["ip", "addr", "del", f"{_node_ip('node1')}/24", "dev", "underlay"]),
               ("node1", ["ip", "addr", "add", f"{_node_ip('node1')}/32", "dev", "underlay"])],
              [("node1", ["ip", "addr", "del", f"{_node_ip('node1')}/32", "dev", "underlay"]),
               ("node1", ["ip", "addr", "add", f"{_node_ip('node1')}/24", "dev", "underlay"])],
              at="node1", **six(at="node1")),
        Fault("tunnel_remote_not_local", f"node2's underlay address was renumbered to {L2_RENUMBERED}; node1's "
              f"vxlan0 still sends to {_node_ip('node2')}, which nobody owns",
              _renumber(_node_ip("node2"), L2_RENUMBERED), _renumber(L2_RENUMBERED, _node_ip("node2")),
              at="node1", **six(at="node1")),
        MTU_L2,
    ]


OVERLAY_L2 = LabTopology(
    "overlay-l2", f"two nodes joined by an underlay link ({L2_NET}.1 and .2), each with a bridge br0 holding vxlan0 "
    f"(VNI {L2_VNI}, port {L2_PORT}, no learning, a default FDB entry to the other node) and a pod (10.81.0.1 and "
    ".2, fd00:81::1 and ::2, MTU 1450): an L2 overlay like Docker's", _l2_builder("vxlan"), "pod1", "10.81.0.2",
    ping_to6="fd00:81::2", requires="vxlan_module", faults={f.name: f for f in _l2_faults()})

OVERLAY_GENEVE = LabTopology(
    "overlay-geneve", f"overlay-l2 over GENEVE: each node's br0 holds a GENEVE device geneve0 (VNI {L2_VNI}, "
    "port 6081, "
    "remote the other node) and a pod", _l2_builder("geneve"), "pod1", "10.81.0.2", ping_to6="fd00:81::2",
    requires="geneve_module", faults={f.name: f for f in [
        Fault("tunnel_firewall", "node2's INPUT drops UDP port 6081: the GENEVE packets from node1 never reach it",
              [("node2", _firewall("iptables", "-A", 6081))], [("node2", _firewall("iptables", "-D", 6081))],
              at="node2", **six(at="node2")),
        MTU_L2,
    ]})


# -- overlay-flannel: routed pod subnets over flannel.1, as flanneld's vxlan backend programs them ----------
# pod1 10.244.0.2/24 -- cni0 10.244.0.1 [node1: flannel.1 10.244.0.0/32, VNI 1, port 8472]
#   underlay 10.82.0.1/24 <-> 10.82.0.2/24 [node2: flannel.1 10.244.1.0/32] cni0 10.244.1.1 -- pod2 10.244.1.2/24
# node1: 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink; neigh 10.244.1.0 lladdr <node2's flannel.1 MAC>
# permanent; fdb <that MAC> dev flannel.1 dst 10.82.0.2 self permanent (and the mirror image on node2).
# IPv6 pods (fd00:244:N::/64) go through flannel-v6.1 over the IPv6 underlay fd00:82::/64, the same way.
FL_NET, FL_NET6 = "10.82.0", "fd00:82:"
FL_VNI, FL_PORT = 1, 8472


def _fl(node: str, family: int = 4) -> dict:
    """A node's Flannel facts, in one family: device, MAC, underlay address, pod subnet, its
    gateway on flannel (the subnet's first address), cni0's address, the pod's."""
    n = int(node[-1]) - 1
    if family == 6:
        return {"dev": "flannel-v6.1", "mac": f"0e:f6:00:00:00:0{n + 1}", "underlay": f"{FL_NET6}:{n + 1}",
                "subnet": f"fd00:244:{n}::/64", "gateway": f"fd00:244:{n}::", "cni0": f"fd00:244:{n}::1/64",
                "pod": f"fd00:244:{n}::2", "pod_cidr": f"fd00:244:{n}::2/64", "ip": ["ip", "-6"]}
    return {"dev": "flannel.1", "mac": f"0e:f1:00:00:00:0{n + 1}", "underlay": f"{FL_NET}.{n + 1}",
            "subnet": f"10.244.{n}.0/24", "gateway": f"10.244.{n}.0", "cni0": f"10.244.{n}.1/24",
            "pod": f"10.244.{n}.2", "pod_cidr": f"10.244.{n}.2/24", "ip": ["ip"]}


def _fl_fdb(node: str, family: int, verb: str = "append") -> Step:
    """The FDB entry flanneld adds on `node` for the other node's flannel device."""
    me, other = _fl(node, family), _fl(_other(node), family)
    return (node, ["bridge", "fdb", verb, other["mac"], "dev", me["dev"], "dst", other["underlay"], "self"]
            + (["permanent"] if verb == "append" else []))


def _fl_route(node: str, family: int) -> List[str]:
    me, other = _fl(node, family), _fl(_other(node), family)
    return me["ip"] + ["route", "replace", other["subnet"], "via", other["gateway"], "dev", me["dev"], "onlink"]


def _build_flannel(b: LabBuilder) -> None:
    _underlay(b, FL_NET, FL_NET6)
    for node in ("node1", "node2"):
        ns = b.topo.ns(node)
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            b.sysctl(ns, key, 1)
        b.bridge(ns, "cni0", [], _fl(node)["cni0"])
        b.addr6(node, "cni0", _fl(node, 6)["cni0"])
        n = node[-1]
        _pod(b, node, f"pod{n}", "veth-pod", _fl(node)["pod_cidr"], _fl(node, 6)["pod_cidr"], POD_MTU6)
        b.run(node, "ip", "link", "set", "veth-pod", "master", "cni0")
        b.run(f"pod{n}", "ip", "route", "add", "default", "via", _fl(node)["cni0"].split("/")[0])
        b.run(f"pod{n}", "ip", "-6", "route", "add", "default", "via", _fl(node, 6)["cni0"].split("/")[0])
        for family in (4, 6):
            me = _fl(node, family)
            b.run(node, "ip", "link", "add", me["dev"], "address", me["mac"], "type", "vxlan", "id", str(FL_VNI),
                  "dstport", str(FL_PORT), "local", me["underlay"], "dev", "underlay", "nolearning")
            b.run(node, "ip", "link", "set", me["dev"], "mtu", str(POD_MTU if family == 4 else POD_MTU6))
            if family == 4:
                b.run(node, "ip", "addr", "add", f"{me['gateway']}/32", "dev", me["dev"])
            else:
                b.addr6(node, me["dev"], f"{me['gateway']}/128")
            b.run(node, "ip", "link", "set", me["dev"], "up")
    for node in ("node1", "node2"):   # the other node's entries, once both devices exist
        for family in (4, 6):
            me, other = _fl(node, family), _fl(_other(node), family)
            b.run(node, *_fl_route(node, family))
            b.run(node, *me["ip"], "neigh", "replace", other["gateway"], "lladdr", other["mac"], "dev", me["dev"],
                  "nud", "permanent")
            role, fdb = _fl_fdb(node, family)
            b.run(role, *fdb)


def _forward_policy(tool: str, policy: str) -> Step:
    return ("node2", [tool, "-P", "FORWARD", policy])


# rp_filter: a host-gw route left on node2 from before the cluster moved to the vxlan backend
# sends half of pod1's subnet straight over the underlay; strict rp_filter then drops pod1's
# decapsulated packets, which come in on flannel.1
STALE_HOST_GW = ["ip", "route", "add", "10.244.0.0/25", "via", f"{FL_NET}.1", "dev", "underlay"]


def _flannel_faults() -> List[Fault]:
    return [
        Fault("tunnel_no_fdb", "node1 still has flanneld's static neighbour for node2's flannel.1 MAC, but its FDB "
              "entry is gone: flannel.1 does not know where to send that MAC",
              [_fl_fdb("node1", 4, "del")], [_fl_fdb("node1", 4)], at="node1",
              **six([_fl_fdb("node1", 6, "del")], [_fl_fdb("node1", 6)], at="node1")),
        Fault("netfilter_drop", "node2's FORWARD policy is DROP: the decapsulated packet for pod2 is dropped",
              [_forward_policy("iptables", "DROP")], [_forward_policy("iptables", "ACCEPT")], at="node2",
              **six([_forward_policy("ip6tables", "DROP")], [_forward_policy("ip6tables", "ACCEPT")], at="node2")),
        Fault("rp_filter", "strict rp_filter on node2, where a host-gw route left from before the vxlan backend "
              "sends pod1's addresses over the underlay: the decapsulated packet from pod1, in on flannel.1, "
              "is a martian",
              [("node2", STALE_HOST_GW), ("node2", _sysctl("net.ipv4.conf.all.rp_filter", 1)),
               ("node2", _sysctl("net.ipv4.conf.flannel/1.rp_filter", 1))],
              [("node2", ["ip", "route", "del", *STALE_HOST_GW[3:]]),
               ("node2", _sysctl("net.ipv4.conf.all.rp_filter", 0)),
               ("node2", _sysctl("net.ipv4.conf.flannel/1.rp_filter", 0))], at="node2"),
        Fault("tunnel_firewall", f"node1's INPUT drops UDP port {FL_PORT}: pod2's replies, encapsulated by node2, "
              "die on node1", [("node1", _firewall("iptables", "-A", FL_PORT))],
              [("node1", _firewall("iptables", "-D", FL_PORT))], at="node1",
              **six([("node1", _firewall("ip6tables", "-A", FL_PORT))],
                    [("node1", _firewall("ip6tables", "-D", FL_PORT))], at="node1")),
        Fault("mtu", f"pod1's eth0 has MTU 1500; its cni0 port on node1 keeps the {POD_MTU6} that fits flannel.1 "
              "(and flannel-v6.1): the port drops what pod1 sends above it (a routed hop would answer with ICMP "
              "and path MTU discovery; a veth drops silently)",
              [("pod1", ["ip", "link", "set", "eth0", "mtu", "1500"])],
              [("pod1", ["ip", "link", "set", "eth0", "mtu", str(POD_MTU6)])],
              size=SIZE_OVER, at="node1", **six(size=SIZE_OVER6, at="node1")),
        Fault("tunnel_underlay_route", f"node1's underlay address is a /32 without its prefix route: no route to "
              f"{FL_NET}.2, flannel.1's FDB destination for node2",
              [("node1", ["ip", "addr", "del", f"{FL_NET}.1/24", "dev", "underlay"]),
               ("node1", ["ip", "addr", "add", f"{FL_NET}.1/32", "dev", "underlay"])],
              [("node1", ["ip", "addr", "del", f"{FL_NET}.1/32", "dev", "underlay"]),
               ("node1", ["ip", "addr", "add", f"{FL_NET}.1/24", "dev", "underlay"])], at="node1",
              **six([("node1", ["ip", "-6", "addr", "del", f"{FL_NET6}:1/64", "dev", "underlay"]),
                     ("node1", ["ip", "-6", "addr", "add", f"{FL_NET6}:1/128", "dev", "underlay", "nodad"])],
                    [("node1", ["ip", "-6", "addr", "del", f"{FL_NET6}:1/128", "dev", "underlay"]),
                     ("node1", ["ip", "-6", "addr", "add", f"{FL_NET6}:1/64", "dev", "underlay", "nodad"])],
                    at="node1")),
    ]


OVERLAY_FLANNEL = LabTopology(
    "overlay-flannel", f"two nodes joined by an underlay link ({FL_NET}.1 and .2), each with a pod subnet "
    "(10.244.0.0/24 "
    "and 10.244.1.0/24; IPv6 fd00:244:0::/64 and fd00:244:1::/64) on a bridge cni0, routed to the other node through "
    f"flannel.1 (VXLAN {FL_VNI}, port {FL_PORT}; IPv6: flannel-v6.1 over the IPv6 underlay) with the static "
    "neighbour and FDB entries flanneld programs", _build_flannel, "pod1", _fl("node2")["pod"],
    ping_to6=_fl("node2", 6)["pod"], requires="vxlan_module", faults={f.name: f for f in _flannel_faults()})

TOPOLOGIES = [OVERLAY_L2, OVERLAY_FLANNEL, OVERLAY_GENEVE]
