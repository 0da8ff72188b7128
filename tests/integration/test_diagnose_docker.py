"""`diagnose ping` through real Docker containers: the walk enters their namespaces, names them
`docker:NAME`, understands Docker's own rules, and every fix it prints, applied, makes the ping
work. Host changes are only uniquely named objects (a bridge, rules naming the test's containers'
addresses or Docker networks), removed afterwards, pass or fail."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from bpftools.topology import Topology, run, unique_name
from bpftools_proc import cli, run_printed


def diagnose(dst: str, netns: str = None) -> (int, dict):
    args = ["diagnose", "ping", dst, "--count", "2", "--timeout", "1", "--json"]
    proc = cli(*args, *(["--netns", netns] if netns else []), timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def pings(cmd_prefix, dst: str) -> bool:
    """A few single pings (the first may wait for ARP), from a container or the host."""
    for _ in range(5):
        if subprocess.run([*cmd_prefix, "ping", "-n", "-q", "-c", "1", "-W", "1", dst],
                          capture_output=True).returncode == 0:
            return True
    return False


def from_container(container):
    return ["nsenter", f"--net={container.netns_path}"]


@pytest.fixture
def host_rules():
    """Undo, after the test, every iptables rule a printed fix (or the test) inserted in the host."""
    inserted = []

    def track(command: dict) -> None:
        """A command as diagnose's JSON carries it (fix_argv: {"netns", "argv"})."""
        words = command["argv"] if command["netns"] is None else []
        if words[:2] == ["iptables", "-I"]:
            inserted.append(["iptables", "-D"] + words[2:])

    yield track
    for undo in reversed(inserted):
        subprocess.run(undo, capture_output=True)


@pytest.fixture
def docker_firewall(docker_engine):
    """Docker manages the host firewall here (not `--iptables=false`), with br_netfilter on."""
    rules = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout
    if ":DOCKER-USER" not in rules:
        pytest.skip("dockerd does not manage iptables here (started with --iptables=false?)")
    if run("sysctl", "-n", "net.bridge.bridge-nf-call-iptables", check=False).stdout.strip() != "1":
        pytest.skip("br_netfilter is off in the host namespace (Docker normally turns it on)")


def first_cause(result: dict) -> dict:
    assert result["reachable"] is False, result
    assert result["causes"], result
    printed = [c for cause in result["causes"] for c in cause["fix"] + cause["advice"]]
    assert not [c for c in printed if "<" in c or ">" in c], printed   # no template to fill in
    assert all(cause["proven"] == bool(cause["fix"]) for cause in result["causes"]), result["causes"]
    return result["causes"][0]


def apply_fixes(cause: dict, track) -> None:
    assert cause["fix"], cause
    for command, data in zip(cause["fix"], cause["fix_argv"]):
        track(data)
        done = run_printed(command)
        assert done.returncode == 0, f"{command}: {done.stderr}"


def test_containers_reach_each_other_and_the_path_names_them(docker_env):
    net = docker_env.network("ok")
    a, b = docker_env.run("a", network=net), docker_env.run("b", network=net)
    rc, result = diagnose(b.ips[net], f"docker:{a.name}")
    assert rc == 0 and result["causes"] == [], result
    assert result["netns"] == f"docker:{a.name}"
    hops = [(h["direction"], h["netns"], h["action"]) for h in result["path"]]
    assert hops[0] == ("request", f"docker:{a.name}", "send")
    assert ("request", "host", "bridge") in hops
    assert ("request", f"docker:{b.name}", "deliver") in hops and hops[-1] == ("reply", f"docker:{a.name}", "deliver")
    inode = os.stat(b.netns_path).st_ino
    assert {h["netns_inode"] for h in result["path"] if h["netns"] == f"docker:{b.name}"} == {inode}
    counted = [h["packets"] for h in result["path"] if h["netns"] == f"docker:{b.name}" and h["action"] == "deliver"]
    if counted[0]["unit"] == "echo":  # per-hop counting works inside the container too
        assert counted[0]["in"] == 2
    # the container's namespace as a path selector: named by its container all the same
    rc, by_path = diagnose(b.ips[net], a.netns_path)
    assert rc == 0 and by_path["netns"] == f"docker:{a.name}"
    # from the host, the walk enters the container
    rc, from_host = diagnose(a.ips[net])
    assert rc == 0 and from_host["causes"] == [], from_host
    assert [h for h in from_host["path"] if h["netns"] == f"docker:{a.name}" and h["action"] == "deliver"]


def test_a_drop_inside_a_container_is_found_from_the_host(docker_env):
    web = docker_env.run("web")
    web.host_exec("iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP")
    rc, result = diagnose(web.ip)
    cause = first_cause(result)
    assert rc == 1
    assert (cause["cause"], cause["netns"], cause["ifname"]) == ("netfilter_drop", f"docker:{web.name}", "eth0")
    assert cause["netns_inode"] == os.stat(web.netns_path).st_ino
    traced = [d for d in result["drops"] if d["reason"] == "NETFILTER_DROP"]
    if traced:  # drop tracing works here: the drop is located, and named, in the container
        assert traced[0]["netns"] == f"docker:{web.name}"
    assert cause["fix"][0].startswith("nsenter -n -t \"$(docker inspect")
    apply_fixes(cause, lambda command: None)
    assert pings([], web.ip)
    rc, after = diagnose(web.ip)
    assert rc == 0 and after["causes"] == [], after


def test_a_docker_user_drop_between_two_containers(docker_env, docker_firewall, host_rules):
    net = docker_env.network("user")
    a, b = docker_env.run("a", network=net), docker_env.run("b", network=net)
    drop = ["iptables", "-I", "DOCKER-USER", "-s", f"{a.ips[net]}/32", "-d", f"{b.ips[net]}/32", "-j", "DROP"]
    host_rules({"netns": None, "argv": drop})
    run(*drop)
    rc, result = diagnose(b.ips[net], f"docker:{a.name}")
    cause = first_cause(result)
    assert (cause["cause"], cause["netns"]) == ("netfilter_drop", "host"), result["causes"]
    assert "DOCKER-USER" in cause["detail"]
    assert cause["fix"] == [f"iptables -t filter -D DOCKER-USER -s {a.ips[net]}/32 -d {b.ips[net]}/32 -j DROP"]
    apply_fixes(cause, host_rules)
    assert pings(from_container(a), b.ips[net])


def test_a_network_without_inter_container_communication(docker_env, docker_engine, docker_firewall, host_rules):
    net = docker_env.network("noicc", icc=False)
    a, b = docker_env.run("a", network=net), docker_env.run("b", network=net)
    bridge = "br-" + docker_engine.networks.get(net).id[:12]
    assert not pings(from_container(a), b.ips[net])
    rc, result = diagnose(b.ips[net], f"docker:{a.name}")
    cause = first_cause(result)
    assert (cause["cause"], cause["netns"], cause["ifname"]) == ("docker_icc_disabled", "host", bridge)
    assert f"Docker network {net}" in cause["detail"]
    assert all(c.startswith("iptables -I DOCKER-USER ") for c in cause["fix"]), cause["fix"]
    apply_fixes(cause, host_rules)
    assert pings(from_container(a), b.ips[net])
    rc, after = diagnose(b.ips[net], f"docker:{a.name}")
    assert rc == 0 and after["causes"] == [], after


def test_two_docker_networks_are_isolated(docker_env, docker_engine, docker_firewall, host_rules):
    one, two = docker_env.network("one"), docker_env.network("two")
    a, b = docker_env.run("a", network=one), docker_env.run("b", network=two)
    rc, result = diagnose(b.ips[two], f"docker:{a.name}")
    cause = first_cause(result)
    assert (cause["cause"], cause["netns"]) == ("docker_isolation", "host"), result["causes"]
    assert f"from Docker network {one}" in cause["detail"] and f"to Docker network {two}" in cause["detail"]
    assert [c.split()[:3] for c in cause["fix"]] == [["iptables", "-I", "DOCKER-USER"]] * 2
    apply_fixes(cause, host_rules)
    assert pings(from_container(a), b.ips[two])


def test_a_container_without_a_network_gets_no_template_fix(docker_env):
    """`--network none`: only lo, no route anywhere, nobody to route through. The cause is named
    in the container with no fix (never `ip route add … via <gateway> dev <interface>`)."""
    web = docker_env.run("web")
    lonely = docker_env.run("lonely", network="none")
    rc, result = diagnose(web.ip, f"docker:{lonely.name}")
    cause = first_cause(result)
    assert rc == 1 and (cause["cause"], cause["netns"]) == ("no_route", f"docker:{lonely.name}"), result["causes"]
    assert (cause["fix"], cause["proven"]) == ([], False)
    proc = cli("diagnose", "ping", web.ip, "--netns", f"docker:{lonely.name}", "--count", "1", "--timeout", "1",
               timeout=120)
    assert "no fix: " in proc.stdout and "<" not in proc.stdout, proc.stdout


def test_a_container_whose_interface_is_down(docker_env):
    net = docker_env.network("down")
    a, b = docker_env.run("a", network=net), docker_env.run("b", network=net)
    b.host_exec("ip", "link", "set", "eth0", "down")
    rc, result = diagnose(b.ips[net], f"docker:{a.name}")
    cause = first_cause(result)
    assert (cause["cause"], cause["netns"], cause["ifname"]) == ("link_down", f"docker:{b.name}", "eth0")
    apply_fixes(cause, lambda command: None)
    assert pings(from_container(a), b.ips[net])


def test_the_seeds_user_bridge_next_to_dockers_forward_drop(docker_firewall, host_rules):
    """The tutorial: br0 in the host namespace with two namespaces on it; Docker's FORWARD policy
    DROP and br_netfilter drop the bridged pings. Bridge and namespaces are unique and removed."""
    bridge = unique_name("bt-br")
    with Topology("bt-seed") as topo:
        try:
            run("ip", "link", "add", bridge, "type", "bridge")
            run("ip", "link", "set", bridge, "up")
            ends = []
            for i, role in enumerate(("ns1", "ns2"), start=1):
                ns = topo.netns(role)
                port = unique_name("bt-p")
                run("ip", "link", "add", port, "type", "veth", "peer", "name", "veth0", "netns", ns)
                run("ip", "link", "set", port, "master", bridge, "up")
                run("ip", "addr", "add", f"192.168.5.{100 + i}/24", "dev", "veth0", netns=ns)
                run("ip", "link", "set", "veth0", "up", netns=ns)
                ends.append(ns)
            rc, result = diagnose("192.168.5.102", ends[0])
            cause = first_cause(result)
            assert (cause["cause"], cause["netns"], cause["ifname"]) == ("bridge_netfilter", "host", bridge)
            assert "Docker set the FORWARD policy to DROP" in cause["detail"]
            assert cause["fix"] == [f"iptables -I DOCKER-USER -i {bridge} -o {bridge} -j ACCEPT"]
            apply_fixes(cause, host_rules)
            assert pings(["ip", "netns", "exec", ends[0]], "192.168.5.102")
        finally:
            run("ip", "link", "del", bridge, check=False)
