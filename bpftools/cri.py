"""Kubernetes pods on this node, from the CRI runtime (containerd, CRI-O) through `crictl`.

Optional like Docker: no crictl, no runtime socket or a failing call means "no pods"
(logged at debug). The JSON parsers are pure functions, tested with recorded output.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

log = logging.getLogger(__name__)

# Where each runtime listens; the first that exists is the node's CRI runtime.
RUNTIME_SOCKETS: Tuple[Tuple[str, str], ...] = (
    ("containerd", "/run/containerd/containerd.sock"),
    ("cri-o", "/var/run/crio/crio.sock"),
)
CRICTL_TIMEOUT = 5  # seconds


@dataclass(frozen=True)
class Pod:
    id: str  # the sandbox id
    name: str
    k8s_namespace: str
    runtime: str
    ready: bool
    netns_path: Optional[str]  # the sandbox's network namespace (runtime spec), if it has its own
    pid: Optional[int]  # the sandbox (pause) process

    @property
    def label(self) -> str:
        return f"pod:{self.k8s_namespace}/{self.name}"


def runtime_endpoint() -> Optional[Tuple[str, str]]:
    """(runtime name, socket path) of the node's CRI runtime, or None."""
    for name, path in RUNTIME_SOCKETS:
        if os.path.exists(path):
            return name, path
    return None


def parse_pods(text: str) -> List[Dict]:
    """`crictl pods -o json` -> its items."""
    return json.loads(text).get("items") or []


def parse_inspectp(text: str, runtime: str) -> Optional[Pod]:
    """`crictl inspectp -o json ID` -> a Pod (containerd and CRI-O put the spec in "info")."""
    doc = json.loads(text)
    status, info = doc.get("status") or {}, doc.get("info") or {}
    meta = status.get("metadata") or {}
    if not status.get("id") or not meta.get("name"):
        return None
    spec = info.get("runtimeSpec") or {}
    path = None
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "network":
            path = ns.get("path") or None
    pid = info.get("pid") or None
    return Pod(status["id"], meta["name"], meta.get("namespace") or "default", runtime,
               status.get("state") == "SANDBOX_READY", path, pid)


def _crictl(endpoint: str, *args: str) -> Optional[str]:
    """crictl's stdout, None on failure (logged at debug)."""
    from .facts.namespace import netns_output  # (lazily: facts imports the namespace registry)

    return netns_output(None, "crictl", "--runtime-endpoint", f"unix://{endpoint}", *args, timeout=CRICTL_TIMEOUT)


def pods() -> List[Pod]:
    """The node's ready pod sandboxes ([] without a CRI runtime or crictl)."""
    found = runtime_endpoint()
    if found is None or shutil.which("crictl") is None:
        return []
    runtime, endpoint = found
    listing = _crictl(endpoint, "pods", "--state", "ready", "-o", "json")
    result = []
    try:
        items = parse_pods(listing) if listing else []
        for item in items:
            text = _crictl(endpoint, "inspectp", "-o", "json", item["id"])
            pod = parse_inspectp(text, runtime) if text else None
            if pod is not None and pod.ready:
                result.append(pod)
    except (ValueError, KeyError, TypeError) as exc:
        log.debug("crictl: unexpected output: %s", exc)
    return result
