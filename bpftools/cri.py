"""Kubernetes pods on this node, from the CRI runtime (containerd, CRI-O) over gRPC.

The runtime's socket speaks the CRI `runtime.v1` API (the kubelet's): `ListPodSandbox` lists the
ready sandboxes, `PodSandboxStatus` (verbose) gives each one's network namespace path and pid,
`ListContainers` the names of the containers running in them. No `crictl` is needed.

Optional like Docker: no socket, a dead runtime or a timeout means "no pods" and costs one log
line (until the runtime answers again), never a failed command or scrape; a runtime that failed
is asked again after RETRY_AFTER seconds, so a hung one does not slow every scrape. A sandbox's status
is asked once per sandbox id (its namespace does not change while it lives). This module knows
nothing of namespaces: `runtimes.py` hands its pods to the namespace registry.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Tuple

log = logging.getLogger(__name__)

# Where each runtime listens; the first that exists is the node's CRI runtime.
RUNTIME_SOCKETS: Tuple[Tuple[str, str], ...] = (
    ("containerd", "/run/containerd/containerd.sock"),
    ("cri-o", "/var/run/crio/crio.sock"),
)
ENDPOINT_VARIABLE = "CONTAINER_RUNTIME_ENDPOINT"  # as crictl and the kubelet call it
CALL_TIMEOUT = 2.0  # seconds per call: a hung runtime must not hang a command or a scrape
SERVICE = "/runtime.v1.RuntimeService"
SANDBOX_READY, NAMESPACE_MODE_NODE, CONTAINER_RUNNING = 0, 2, 1  # the API's enum values
MISSING_CLIENT = "the CRI client (grpcio, protobuf) is not installed: pip install 'bpftools[cri]'"


@dataclass(frozen=True)
class Pod:
    id: str  # the sandbox id
    name: str
    k8s_namespace: str
    uid: str
    runtime: str
    ready: bool
    netns_path: Optional[str]  # the sandbox's network namespace (runtime spec), if it has its own
    pid: Optional[int]  # the sandbox (pause) process
    host_network: bool = False
    ip: str = ""
    containers: Tuple[str, ...] = ()  # names of its running containers

    @property
    def label(self) -> str:
        return f"pod:{self.k8s_namespace}/{self.name}"


# --- the endpoint ---------------------------------------------------------------

_configured: Optional[str] = None  # --cri-endpoint


def configure(endpoint: Optional[str]) -> None:
    """Use this endpoint (unix:///path or /path) instead of looking for the known sockets."""
    global _configured
    _configured = endpoint or None


def _runtime_of(path: str) -> str:
    return "cri-o" if "crio" in os.path.basename(path) or "/crio/" in path else "containerd"


def runtime_endpoint() -> Optional[Tuple[str, str]]:
    """(runtime name, socket path) of the node's CRI runtime, or None: --cri-endpoint, else
    $CONTAINER_RUNTIME_ENDPOINT, else the first known socket that exists."""
    chosen = _configured or os.environ.get(ENDPOINT_VARIABLE)
    if chosen:
        path = chosen[len("unix://"):] if chosen.startswith("unix://") else chosen
        return (_runtime_of(path), path) if os.path.exists(path) else None
    for name, path in RUNTIME_SOCKETS:
        if os.path.exists(path):
            return name, path
    return None


# --- parsing (pure; tested with recorded messages) --------------------------------

def _info_json(info: Dict[str, str]) -> Dict:
    """The verbose "info" of a status: containerd and CRI-O put one JSON document under "info"."""
    text = info.get("info")
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def pod_from_status(response, runtime: str, containers: Iterable[str] = ()) -> Optional[Pod]:
    """A PodSandboxStatusResponse (verbose) -> a Pod; None without an id or a name."""
    status = response.status
    if not status.id or not status.metadata.name:
        return None
    info = _info_json(dict(response.info))
    path = None
    for ns in ((info.get("runtimeSpec") or {}).get("linux") or {}).get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "network":
            path = ns.get("path") or None
    if info.get("netNamespaceClosed"):  # containerd: the sandbox is stopped, its namespace gone
        path = None
    host_network = status.linux.namespaces.options.network == NAMESPACE_MODE_NODE
    pid = info.get("pid") if isinstance(info.get("pid"), int) and info.get("pid") > 0 else None
    return Pod(status.id, status.metadata.name, status.metadata.namespace or "default", status.metadata.uid,
               runtime, status.state == SANDBOX_READY, None if host_network else path, pid, host_network,
               status.network.ip, tuple(sorted(containers)))


def containers_by_sandbox(response) -> Dict[str, List[str]]:
    """A ListContainersResponse -> sandbox id -> names of its running containers."""
    found: Dict[str, List[str]] = {}
    for c in response.containers:
        if c.state == CONTAINER_RUNNING:
            found.setdefault(c.pod_sandbox_id, []).append(c.metadata.name)
    return found


# --- the client ---------------------------------------------------------------------

class Runtime:
    """A CRI runtime on a unix socket. Calls raise grpc.RpcError (or ImportError without grpcio)."""

    def __init__(self, path: str, runtime: str, timeout: Optional[float] = None):
        import grpc

        from .cri_api import cri_runtime_v1_pb2 as api

        self.path, self.runtime, self.api = path, runtime, api
        self.timeout = CALL_TIMEOUT if timeout is None else timeout
        self.channel = grpc.insecure_channel(f"unix://{path}")

    def _stub(self, method: str, request_type, response_type):
        return self.channel.unary_unary(f"{SERVICE}/{method}", request_serializer=request_type.SerializeToString,
                                        response_deserializer=response_type.FromString)

    def call(self, method: str, request, response_type):
        return self._stub(method, type(request), response_type)(request, timeout=self.timeout)

    def version(self):
        return self.call("Version", self.api.VersionRequest(version="v1"), self.api.VersionResponse)

    def ready_sandboxes(self):
        api = self.api
        flt = api.PodSandboxFilter(state=api.PodSandboxStateValue(state=SANDBOX_READY))
        return self.call("ListPodSandbox", api.ListPodSandboxRequest(filter=flt), api.ListPodSandboxResponse).items

    def sandbox_status(self, sandbox_id: str):
        request = self.api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
        return self.call("PodSandboxStatus", request, self.api.PodSandboxStatusResponse)

    def sandbox_statuses(self, sandbox_ids: List[str]) -> Dict[str, object]:
        """Verbose statuses of many sandboxes, asked all at once on the one channel (a node's first
        discovery asks one per pod); a sandbox removed meanwhile is left out."""
        import grpc

        stub = self._stub("PodSandboxStatus", self.api.PodSandboxStatusRequest, self.api.PodSandboxStatusResponse)
        pending = {i: stub.future(self.api.PodSandboxStatusRequest(pod_sandbox_id=i, verbose=True), timeout=self.timeout)
                   for i in sandbox_ids}
        found = {}
        for sandbox_id, future in pending.items():
            try:
                found[sandbox_id] = future.result()
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                log.debug("CRI: sandbox %s went away before its status was read", sandbox_id[:12])
        return found

    def running_containers(self) -> Dict[str, List[str]]:
        api = self.api
        flt = api.ContainerFilter(state=api.ContainerStateValue(state=CONTAINER_RUNNING))
        return containers_by_sandbox(self.call("ListContainers", api.ListContainersRequest(filter=flt),
                                               api.ListContainersResponse))

    def close(self) -> None:
        self.channel.close()


CONTAINERS_TTL = 10.0  # seconds a listing of the running containers is reused (they only name pods' containers)
_runtimes: Dict[str, Runtime] = {}  # socket -> client (a channel reconnects by itself)
_statuses: Dict[str, Optional[Pod]] = {}  # sandbox id -> the Pod its verbose status made (without containers)
_containers: Dict[str, Tuple[float, Dict[str, List[str]]]] = {}  # socket -> (when, sandbox id -> names)
RETRY_AFTER = 30.0  # seconds a runtime that failed is left alone: a hung one must not slow every scrape
_failing: Dict[str, float] = {}  # socket -> when its last call failed (one log line per outage)


def _client(runtime: str, path: str) -> Runtime:
    if path not in _runtimes:
        _runtimes[path] = Runtime(path, runtime)
    return _runtimes[path]


def _note_failure(path: str, exc: BaseException) -> None:
    detail = getattr(exc, "details", None)
    text = detail() if callable(detail) else str(exc)
    if path not in _failing:
        log.warning("CRI runtime at %s does not answer (%s): pods are named pid:N until it does", path, text)
    else:
        log.debug("CRI runtime at %s still does not answer: %s", path, text)
    _failing[path] = time.monotonic()


def _running_containers(client: Runtime, path: str, new_sandbox: bool) -> Dict[str, List[str]]:
    """The running containers by sandbox, listed again after CONTAINERS_TTL or for a new sandbox."""
    when, listing = _containers.get(path, (0.0, {}))
    if new_sandbox or time.monotonic() - when > CONTAINERS_TTL:
        listing = client.running_containers()
        _containers[path] = (time.monotonic(), listing)
    return listing


def pods() -> List[Pod]:
    """The node's ready pod sandboxes ([] without a CRI runtime, or when it does not answer).
    One ListPodSandbox per call; a sandbox's status is asked once, when it first appears."""
    found = runtime_endpoint()
    if found is None:
        return []
    runtime, path = found
    if path in _failing and time.monotonic() - _failing[path] < RETRY_AFTER:
        return []
    try:
        client = _client(runtime, path)
        sandboxes = client.ready_sandboxes()
        new = [s.id for s in sandboxes if s.id not in _statuses]
        fresh = client.sandbox_statuses(new) if new else {}
        for sandbox_id, status in fresh.items():
            _statuses[sandbox_id] = pod_from_status(status, runtime)
        containers = _running_containers(client, path, bool(fresh))
        result = []
        for sandbox in sandboxes:
            pod = _statuses.get(sandbox.id)
            if pod is not None and pod.ready:
                names = tuple(sorted(containers.get(sandbox.id, ())))
                result.append(pod if names == pod.containers else replace(pod, containers=names))
        for gone in set(_statuses) - {s.id for s in sandboxes}:
            del _statuses[gone]
    except ImportError as exc:  # grpcio or protobuf missing: pods cannot be named
        _note_failure(path, ImportError(f"{exc}; {MISSING_CLIENT}"))
        return []
    except Exception as exc:  # grpc.RpcError (unavailable, deadline), a malformed answer
        _note_failure(path, exc)
        return []
    if _failing.pop(path, None) is not None:
        log.warning("CRI runtime at %s answers again", path)
    return result


def availability() -> Dict:
    """What `doctor` reports: the endpoint, whether it answers, the runtime's name and version."""
    found = runtime_endpoint()
    report: Dict = {"endpoint": found[1] if found else None, "api": False, "runtime": None, "version": None}
    if found is None:
        report["detail"] = "no CRI runtime socket (containerd, CRI-O); set --cri-endpoint if it is elsewhere"
        return report
    try:
        answer = _client(*found).version()
    except ImportError:
        report["detail"] = MISSING_CLIENT
        return report
    except Exception as exc:  # grpc.RpcError
        report["detail"] = f"the runtime does not answer: {exc}"
        return report
    report.update(api=True, runtime=answer.runtime_name, version=answer.runtime_version,
                  detail="pod namespaces are named pod:NAMESPACE/NAME")
    return report
