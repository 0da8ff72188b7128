"""The container runtimes, handed to the namespace registry as sources.

`namespaces.py` imports no runtime: it knows only `Source`s. This module turns what each
runtime reports (cri.Pod, docker_engine.Container) into registry entries and selectors, and
`install()` registers them; the CLI calls it once at start-up (tests and benchmarks too).
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Tuple

from . import cri, docker_engine, namespaces
from .errors import BpftoolsError
from .namespaces import Netns, Source


def pod_netns(pod: cri.Pod) -> Tuple[str, Netns]:
    """(path, entry) of a pod's namespace; the inode is filled in by whoever opens it."""
    path = pod.netns_path or (f"/proc/{pod.pid}/ns/net" if pod.pid else "")
    return path, Netns(0, pod.label, "pod", path or None, container=",".join(pod.containers) or None,
                       pod=pod.name, k8s_namespace=pod.k8s_namespace, runtime=pod.runtime, pid=pod.pid,
                       pod_uid=pod.uid or None)


def pod_namespaces() -> List[Netns]:
    found = []
    for pod in cri.pods():
        if pod.host_network:
            continue  # the node's namespace: "host" names it
        path, ns = pod_netns(pod)
        inode = namespaces.stat_inode(path)
        if inode is not None:
            found.append(replace(ns, inode=inode))
    return found


def pod_selected(value: str) -> Tuple[str, Netns]:
    endpoint = cri.runtime_endpoint()
    if endpoint is None:
        raise BpftoolsError(f"--netns pod:{value}: no CRI runtime on this node (no socket at "
                            f"{', '.join(p for _n, p in cri.RUNTIME_SOCKETS)}; --cri-endpoint to name another)")
    for ns in pod_namespaces():
        if ns.label == f"pod:{value}":
            return ns.path, ns
    if not cri.availability()["api"]:
        raise BpftoolsError(f"--netns pod:{value}: the CRI runtime at {endpoint[1]} does not answer")
    raise BpftoolsError(f"--netns pod:{value}: no such ready pod on this node (with its own network namespace)")


def docker_namespaces() -> List[Netns]:
    found = []
    for c in docker_engine.containers(running_only=True):
        if c.network_mode == "host" or c.network_mode.startswith("container:") or not c.pid:
            continue  # shares a namespace named by another source
        path = f"/proc/{c.pid}/ns/net"
        inode = namespaces.stat_inode(path)
        if inode is None:
            path, inode = c.sandbox_key, namespaces.stat_inode(c.sandbox_key)
        if inode is not None:
            found.append(Netns(inode, f"docker:{c.name}", "docker", path, container=c.name, container_id=c.id,
                               runtime="docker", pid=c.pid))
    return found


def docker_selected(value: str) -> Tuple[str, Netns]:
    """(path to open, namespace) of a running container, by name or id."""
    engine = docker_engine.client()
    if engine is None:
        raise BpftoolsError(f"--netns docker:{value}: the Docker Engine does not answer at "
                            f"{docker_engine.socket_path()} (is dockerd running?)")
    c = docker_engine.container(engine, value)
    if c is None:
        raise BpftoolsError(f"--netns docker:{value}: no such Docker container (see `docker ps -a`)")
    if not c.running or not c.pid:
        raise BpftoolsError(f"--netns docker:{value}: container {c.name} is not running (it has no network namespace)")
    if c.network_mode == "host":
        host = namespaces.host_netns()
        if host is None:
            raise BpftoolsError(f"--netns docker:{value}: it uses the host's namespace, which we cannot see")
        return host.path, host
    path = f"/proc/{c.pid}/ns/net"
    return path, Netns(0, f"docker:{c.name}", "docker", path, container=c.name, container_id=c.id,
                       runtime="docker", pid=c.pid)


SOURCES = (Source("pod", pod_namespaces, pod_selected), Source("docker", docker_namespaces, docker_selected))


def install() -> None:
    """Register every runtime with the namespace registry (idempotent)."""
    for source in SOURCES:
        namespaces.register_source(source)
