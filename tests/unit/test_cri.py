"""The CRI client (bpftools/cri.py) on runtime.v1 messages recorded from a real containerd 1.6
(tests/unit/fixtures/cri/record.py made them), a CRI-O-shaped status, and real gRPC failures on a
unix socket: nothing answering, and a server that never answers (the deadline)."""
import json
import logging
import os
import socket
from pathlib import Path

import pytest

from bpftools import cri, namespaces, runtimes
from bpftools.cri_api import cri_runtime_v1_pb2 as api

FIXTURES = Path(__file__).parent / "fixtures" / "cri"


def recorded(name: str, message_type):
    return message_type.FromString((FIXTURES / name).read_bytes())


@pytest.fixture(autouse=True)
def _fresh_client_state(monkeypatch):
    monkeypatch.setattr(cri, "_runtimes", {})
    monkeypatch.setattr(cri, "_statuses", {})
    monkeypatch.setattr(cri, "_containers", {})
    monkeypatch.setattr(cri, "_failing", {})
    monkeypatch.setattr(cri, "_configured", None)
    monkeypatch.delenv(cri.ENDPOINT_VARIABLE, raising=False)


def test_a_pod_with_its_own_namespace():
    pod = cri.pod_from_status(recorded("containerd-1.6-status-pod.pb", api.PodSandboxStatusResponse), "containerd",
                              ["web", "sidecar"])
    assert pod.label == "pod:shop/web-0"
    assert (pod.k8s_namespace, pod.name, pod.uid) == ("shop", "web-0", "c41e0ee4-9ee1-4fbf-977b-4980e9f18d68")
    assert pod.netns_path == "/var/run/netns/cni-afaa1ced-9cbf-6a60-1e7d-ba8cd38faec9"
    assert (pod.pid, pod.ip, pod.ready, pod.host_network) == (22006, "10.212.77.2", True, False)
    assert pod.containers == ("sidecar", "web")
    assert namespaces.parse_selector(pod.label) == ("pod", "shop/web-0")


def test_a_host_network_pod_has_no_namespace_of_its_own():
    pod = cri.pod_from_status(recorded("containerd-1.6-status-hostnetwork.pb", api.PodSandboxStatusResponse),
                              "containerd")
    assert (pod.label, pod.host_network, pod.netns_path, pod.pid) == ("pod:kube-system/node-agent", True, None, 22047)


def test_a_stopped_sandbox_is_not_ready_and_its_namespace_is_gone():
    pod = cri.pod_from_status(recorded("containerd-1.6-status-notready.pb", api.PodSandboxStatusResponse),
                              "containerd")
    assert (pod.ready, pod.netns_path) == (False, None)


def test_crio_status_has_a_path_but_no_pid():
    info = {"image": "registry.k8s.io/pause:3.9", "runtimeSpec": {"linux": {"namespaces": [
        {"type": "pid"}, {"type": "network", "path": "/var/run/netns/1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b"}]}}}
    status = api.PodSandboxStatusResponse(
        status=api.PodSandboxStatus(id="1f2e", metadata=api.PodSandboxMetadata(name="web-0", namespace="shop", uid="u"),
                                    network=api.PodSandboxNetworkStatus(ip="10.85.0.7")),
        info={"info": json.dumps(info)})
    pod = cri.pod_from_status(status, "cri-o")
    assert (pod.label, pod.runtime, pod.pid, pod.netns_path) == (
        "pod:shop/web-0", "cri-o", None, "/var/run/netns/1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b")


@pytest.mark.parametrize("info", [{}, {"info": "not json"}, {"info": "[1, 2]"}, {"info": '{"pid": "x"}'}])
def test_a_status_without_usable_verbose_info_has_no_path(info):
    status = api.PodSandboxStatusResponse(status=api.PodSandboxStatus(id="1", metadata=api.PodSandboxMetadata(name="a")),
                                          info=info)
    pod = cri.pod_from_status(status, "containerd")
    assert (pod.label, pod.netns_path, pod.pid) == ("pod:default/a", None, None)


def test_a_status_without_a_name_is_no_pod():
    assert cri.pod_from_status(api.PodSandboxStatusResponse(status=api.PodSandboxStatus(id="1")), "containerd") is None


def test_running_containers_by_sandbox():
    response = api.ListContainersResponse(containers=[
        api.Container(id="c1", pod_sandbox_id="s1", metadata=api.ContainerMetadata(name="web"), state=cri.CONTAINER_RUNNING),
        api.Container(id="c2", pod_sandbox_id="s1", metadata=api.ContainerMetadata(name="init"), state=2),
        api.Container(id="c3", pod_sandbox_id="s2", metadata=api.ContainerMetadata(name="db"), state=cri.CONTAINER_RUNNING)])
    assert cri.containers_by_sandbox(response) == {"s1": ["web"], "s2": ["db"]}


class FakeRuntime:
    """Answers with the recorded messages; counts the status calls."""

    def __init__(self):
        self.status_calls = []
        listing = recorded("containerd-1.6-list-all.pb", api.ListPodSandboxResponse)
        self.sandboxes = [s for s in listing.items if s.state == cri.SANDBOX_READY]
        self.statuses = {}
        for name in ("pod", "hostnetwork"):
            status = recorded(f"containerd-1.6-status-{name}.pb", api.PodSandboxStatusResponse)
            self.statuses[status.status.id] = status

    def ready_sandboxes(self):
        return self.sandboxes

    def running_containers(self):
        return {}

    def sandbox_statuses(self, sandbox_ids):
        self.status_calls.extend(sandbox_ids)
        return {i: self.statuses[i] for i in sandbox_ids}


def test_pods_asks_each_sandbox_status_once(monkeypatch, tmp_path):
    fake = FakeRuntime()
    monkeypatch.setattr(cri, "runtime_endpoint", lambda: ("containerd", "/run/containerd/containerd.sock"))
    monkeypatch.setattr(cri, "_client", lambda runtime, path: fake)
    first = cri.pods()
    assert [p.label for p in first] == ["pod:shop/web-0", "pod:kube-system/node-agent"]  # the stopped one is not listed
    assert cri.pods() == first
    assert len(fake.status_calls) == 2  # cached per sandbox id
    fake.sandboxes = fake.sandboxes[:1]
    assert [p.label for p in cri.pods()] == ["pod:shop/web-0"]
    assert set(cri._statuses) == {fake.sandboxes[0].id}  # the removed sandbox is forgotten


def test_a_host_network_pod_is_not_a_namespace_source_entry(monkeypatch):
    fake = FakeRuntime()
    monkeypatch.setattr(cri, "runtime_endpoint", lambda: ("containerd", "/run/containerd/containerd.sock"))
    monkeypatch.setattr(cri, "_client", lambda runtime, path: fake)
    monkeypatch.setattr(namespaces, "stat_inode", lambda path: 4026532999 if path else None)
    found = runtimes.pod_namespaces()
    assert [(n.label, n.kind, n.pod, n.k8s_namespace, n.pod_uid, n.runtime) for n in found] == [
        ("pod:shop/web-0", "pod", "web-0", "shop", "c41e0ee4-9ee1-4fbf-977b-4980e9f18d68", "containerd")]


def test_no_runtime_means_no_pods(monkeypatch):
    monkeypatch.setattr(cri, "runtime_endpoint", lambda: None)
    monkeypatch.setattr(cri, "_client", lambda *a: pytest.fail("a client without a runtime"))
    assert cri.pods() == []


def test_endpoint_override_and_defaults(monkeypatch, tmp_path):
    sock = tmp_path / "crio.sock"
    sock.touch()
    monkeypatch.setenv(cri.ENDPOINT_VARIABLE, f"unix://{sock}")
    assert cri.runtime_endpoint() == ("cri-o", str(sock))
    other = tmp_path / "containerd.sock"
    other.touch()
    cri.configure(str(other))  # --cri-endpoint wins over the environment
    assert cri.runtime_endpoint() == ("containerd", str(other))
    cri.configure(str(tmp_path / "missing.sock"))
    assert cri.runtime_endpoint() is None
    cri.configure(None)
    monkeypatch.delenv(cri.ENDPOINT_VARIABLE)
    monkeypatch.setattr(cri, "RUNTIME_SOCKETS", (("containerd", str(tmp_path / "no")), ("cri-o", str(sock))))
    assert cri.runtime_endpoint() == ("cri-o", str(sock))


def _count_warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "bpftools.cri"]


def test_a_dead_socket_costs_one_log_line(monkeypatch, tmp_path, caplog):
    path = tmp_path / "containerd.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # a socket file nobody listens on: connection refused
    dead.close()
    cri.configure(str(path))
    monkeypatch.setattr(cri, "CALL_TIMEOUT", 1.0)
    caplog.set_level(logging.DEBUG, logger="bpftools")
    assert cri.pods() == [] and cri.pods() == [] and cri.pods() == []
    warnings = _count_warnings(caplog)
    assert len(warnings) == 1 and "does not answer" in warnings[0].getMessage()
    assert cri.availability()["api"] is False
    monkeypatch.setattr(cri, "RETRY_AFTER", 0.0)  # asked again: still no second warning
    assert cri.pods() == [] and len(_count_warnings(caplog)) == 1


def test_a_runtime_that_never_answers_times_out(monkeypatch, tmp_path, caplog):
    path = tmp_path / "hung.sock"
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(str(path))
    hung.listen(16)  # accepts connections (the kernel does) but never speaks HTTP/2
    try:
        cri.configure(str(path))
        monkeypatch.setattr(cri, "CALL_TIMEOUT", 0.3)
        caplog.set_level(logging.WARNING, logger="bpftools")
        assert cri.pods() == []
        assert len(_count_warnings(caplog)) == 1
        monkeypatch.setattr(cri, "_client", lambda *a: pytest.fail("a hung runtime asked again within RETRY_AFTER"))
        assert cri.pods() == []
    finally:
        hung.close()
        os.unlink(path)


class RecordedRuntime:
    """A real gRPC server on a unix socket that answers as the recorded containerd did; the
    sandbox in `gone` was removed between the listing and its status (NOT_FOUND)."""

    def __init__(self, path, gone=()):
        import grpc
        from concurrent import futures

        listing = recorded("containerd-1.6-list-all.pb", api.ListPodSandboxResponse)
        statuses = {s.status.id: s for s in (recorded(f"containerd-1.6-status-{n}.pb", api.PodSandboxStatusResponse)
                                             for n in ("pod", "hostnetwork", "notready"))}
        self.calls = []

        def list_sandboxes(request, context):
            self.calls.append("ListPodSandbox")
            wanted = request.filter.state.state if request.filter.HasField("state") else None
            return api.ListPodSandboxResponse(items=[s for s in listing.items if wanted is None or s.state == wanted])

        def status(request, context):
            self.calls.append("PodSandboxStatus")
            assert request.verbose
            if request.pod_sandbox_id in gone:
                context.abort(grpc.StatusCode.NOT_FOUND, "an error occurred when try to find sandbox: not found")
            return statuses[request.pod_sandbox_id]

        def containers(request, context):
            self.calls.append("ListContainers")
            return api.ListContainersResponse(containers=[api.Container(
                id="c1", pod_sandbox_id=listing.items[0].id, metadata=api.ContainerMetadata(name="web"),
                state=cri.CONTAINER_RUNNING)])

        def handler(fn, request_type, response_type):
            return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=request_type.FromString,
                                                       response_serializer=response_type.SerializeToString)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", {
            "ListPodSandbox": handler(list_sandboxes, api.ListPodSandboxRequest, api.ListPodSandboxResponse),
            "PodSandboxStatus": handler(status, api.PodSandboxStatusRequest, api.PodSandboxStatusResponse),
            "ListContainers": handler(containers, api.ListContainersRequest, api.ListContainersResponse)})])
        self.server.add_insecure_port(f"unix://{path}")
        self.server.start()

    def close(self):
        self.server.stop(None)


def test_pods_over_grpc_from_a_recorded_runtime(tmp_path, caplog):
    path = tmp_path / "containerd.sock"
    web_id = recorded("containerd-1.6-list-all.pb", api.ListPodSandboxResponse).items[0].id
    host_id = recorded("containerd-1.6-list-all.pb", api.ListPodSandboxResponse).items[1].id
    server = RecordedRuntime(path, gone={host_id})
    try:
        cri.configure(str(path))
        caplog.set_level(logging.WARNING, logger="bpftools")
        found = cri.pods()
        assert [(p.label, p.containers) for p in found] == [("pod:shop/web-0", ("web",))]
        assert found[0].id == web_id and found[0].netns_path.startswith("/var/run/netns/cni-")
        assert server.calls.count("PodSandboxStatus") == 2  # the ready ones; the one removed meanwhile is left out
        assert cri.pods() == found and server.calls.count("PodSandboxStatus") == 3  # only the missing one again
        assert server.calls.count("ListPodSandbox") == 2 and server.calls.count("ListContainers") == 1
        assert not _count_warnings(caplog)
    finally:
        server.close()


def test_without_grpcio_pods_are_not_named_and_doctor_says_what_to_install(monkeypatch, tmp_path, caplog):
    import builtins

    real_import = builtins.__import__

    def no_grpc(name, *args, **kwargs):
        if name == "grpc" or name.startswith("grpc."):
            raise ImportError("No module named 'grpc'")
        return real_import(name, *args, **kwargs)

    sock = tmp_path / "containerd.sock"
    sock.touch()
    cri.configure(str(sock))
    monkeypatch.setattr(builtins, "__import__", no_grpc)
    caplog.set_level(logging.WARNING, logger="bpftools")
    assert cri.pods() == []
    assert "bpftools[cri]" in _count_warnings(caplog)[0].getMessage()
    assert cri.availability()["detail"] == cri.MISSING_CLIENT
