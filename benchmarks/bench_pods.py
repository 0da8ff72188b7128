"""Cost of namespace discovery (`bpftools.namespaces.discover`) per Kubernetes pod, as a ratio
against what discovering the same namespaces cost before pods were named (no CRI runtime
consulted: each pod's namespace found as CNI's `cni-…` file, its pause process and its mount),
both measured in this run on the same namespaces, in alternating rounds so that the load of a
shared machine weighs on both alike.

A containerd with the CRI plugin is started as the tests start it (tests/cri_env.py: its own
root and socket, CNI in a namespace of its own) and N pods are created through `RunPodSandbox`.
Per namespace discovered (the machine's own plus the N pods'), the median of the rounds:
  before  the runtime not consulted (how every command discovered before pods were named);
  cri     pods named through the CRI API, statuses cached per sandbox id (every discovery after
          a command's first: one ListPodSandbox call);
  cold    the same with every sandbox's status asked again (a command's first discovery).
cri / before must stay within 2 (the script exits 1 otherwise).

    .venv/bin/python benchmarks/bench_pods.py [--pods 100] [--rounds 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import cri_env  # noqa: E402
from bench_namespaces import timed  # noqa: E402  (this directory is on the path)
from bpftools import cri, docker_engine, namespaces, runtimes  # noqa: E402

LIMIT = 2.0
NO_RUNTIME = "/nonexistent/bpftools-bench-no-runtime.sock"


def discovery(rounds: int, cold: bool = False) -> float:
    def once():
        if cold:
            cri._statuses.clear()
            cri._containers.clear()
        namespaces.discover(max_age=0)
    return timed(once, rounds)


def alternating(endpoint: str, rounds: int):
    """(median without the runtime, median with it): one round of each in turn."""
    without, with_cri = [], []
    for _ in range(rounds):
        for endpoint_now, into in ((NO_RUNTIME, without), (endpoint, with_cri)):
            cri.configure(endpoint_now)
            namespaces.discover(max_age=0)  # (the first after a switch fills the status cache)
            into.append(discovery(1))
    cri.configure(endpoint)
    return statistics.median(without), statistics.median(with_cri)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    reason = cri_env.missing()
    if reason:
        sys.exit(f"cannot run: {reason}")
    runtimes.install()
    docker_engine.client()  # import the SDK once, outside the timing (a command pays it once)
    runtime = cri_env.start(uuid.uuid4().hex[:6])
    cri.configure(runtime.endpoint)
    pods = cri_env.PodFactory(runtime)
    try:
        started = time.monotonic()
        for i in range(args.pods):
            pods.pod(f"p{i}", namespace="bench")
        created = time.monotonic() - started
        found = namespaces.discover(max_age=0)
        labelled = sum(1 for ns in found if ns.kind == "pod")
        before, named = alternating(runtime.endpoint, args.rounds)
        cold = discovery(args.rounds, cold=True)
        total = len(found)
        ratio = named / before
        print(f"pods created through RunPodSandbox: {args.pods} in {created:.1f} s; "
              f"namespaces discovered: {total}, {labelled} of them as pod:NS/NAME")
        print(f"before  no runtime consulted (pods as cni-…):  {before * 1e3:8.2f} ms  -> {before / total * 1e6:7.1f} us "
              "per namespace")
        print(f"cri     pods named, statuses cached:          {named * 1e3:8.2f} ms  -> {named / total * 1e6:7.1f} us "
              "per namespace")
        print(f"cold    pods named, every status asked again: {cold * 1e3:8.2f} ms  -> {cold / total * 1e6:7.1f} us "
              "per namespace")
        print(f"cri / before: {ratio:.2f}x (limit {LIMIT:g}x); cold / before: {cold / before:.2f}x")
        if labelled != args.pods:
            sys.exit(f"only {labelled} of {args.pods} pods were labelled pod:NS/NAME")
        if ratio > LIMIT:
            sys.exit(f"naming pods costs {ratio:.2f}x the discovery without it (limit {LIMIT:g}x)")
    finally:
        cri.configure(None)
        pods.close()
        cri_env.stop(runtime)


if __name__ == "__main__":
    main()
