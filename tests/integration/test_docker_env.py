"""The Docker test environment itself: a local image, containers that talk, networks, doctor."""
import json

from bpftools_proc import cli


def test_two_containers_on_the_default_bridge_ping(docker_env):
    a, b = docker_env.run("a"), docker_env.run("b")
    assert a.pid and b.sandbox_key.startswith("/var/run/docker/netns/")
    result = a.exec("ping", "-c", "1", "-W", "5", b.ip)
    assert result.returncode == 0, result.stdout


def test_network_without_inter_container_communication(docker_env, docker_engine):
    net = docker_env.network("noicc", icc=False)
    c = docker_env.run("c", network=net)
    options = docker_engine.networks.get(net).attrs["Options"]
    assert options["com.docker.network.bridge.enable_icc"] == "false"
    assert net in c.ips


def test_host_binaries_run_in_the_container_namespace(docker_env):
    c = docker_env.run("ns")
    out = c.host_exec("ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
    assert c.ip in out


def test_doctor_reports_the_engine(docker_engine):
    report = json.loads(cli("doctor", "--json", check=True).stdout)
    assert report["docker"]["api"] is True
    assert report["docker"]["version"] == docker_engine.version()["Version"]
