"""Docker is optional: no socket, no SDK or a silent Engine mean "not available", never an error."""
from bpftools import docker_engine


def test_no_socket_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    assert docker_engine.client() is None
    assert docker_engine.containers() == []
    report = docker_engine.availability()
    assert report["socket"] == f"{tmp_path}/docker.sock"
    assert (report["socket_present"], report["api"], report["version"]) == (False, False, None)
    assert "not running" in report["detail"]


def test_a_socket_nobody_answers_on(monkeypatch, tmp_path):
    import socket

    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))  # bound, never listening: connections are refused
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    report = docker_engine.availability()
    sock.close()
    assert report["socket_present"] and not report["api"]
    assert "does not answer" in report["detail"]


def test_container_record_from_inspect():
    attrs = {"Id": "abc", "Name": "/web", "State": {"Running": True, "Pid": 42},
             "NetworkSettings": {"SandboxKey": "/var/run/docker/netns/1a2b"}, "HostConfig": {"NetworkMode": "bridge"}}
    assert docker_engine._container_from_attrs(attrs) == docker_engine.Container(
        "abc", "web", True, 42, "/var/run/docker/netns/1a2b", "bridge")
    stopped = dict(attrs, State={"Running": False, "Pid": 0})
    assert docker_engine._container_from_attrs(stopped).pid is None
