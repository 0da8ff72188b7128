"""Shared fixtures: namespace topologies (unique names, always torn down), feature-based
skips decided by `bpftools doctor`'s probes, and a runner for bpftools processes."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="session")
def kernel_features():
    """feature name -> available, from the same probes `bpftools doctor` runs."""
    if not IS_ROOT:
        return {}
    from bpftools.kernel.features import probe_all, probe_dict

    return probe_dict(probe_all())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in item.path.parts and not IS_ROOT:
            item.add_marker(pytest.mark.skip(reason="integration tests need root and a BPF-capable kernel"))


@pytest.fixture(autouse=True)
def _skip_missing_features(request):
    marker = request.node.get_closest_marker("feature")
    if marker is None:
        return
    features = request.getfixturevalue("kernel_features")
    missing = [name for name in marker.args if not features.get(name)]
    if missing:
        pytest.skip(f"kernel lacks {', '.join(missing)} (see `bpftools doctor`)")


@pytest.fixture
def topo():
    """A Topology whose namespaces are removed after the test, pass or fail."""
    from bpftools.topology import Topology

    with Topology("bt") as topology:
        yield topology


def _leftovers() -> list:
    """Namespaces this test run created and did not remove, and netlink attachments in ours."""
    import docker_env
    from bpftools.status import find_attachments
    from bpftools.topology import Topology

    found = [f"network namespace {n}" for n in sorted(Topology.created_in_this_process)
             if os.path.exists(f"/run/netns/{n}")]
    found += [f"{a['hook']} program {a['prog_name']} on {a['ifname']} (netns {a['netns']})"
              for a in find_attachments([None]) if a["held_by"] == "netlink"]
    found += [f"stale pin {a['prog_name']}" for a in find_attachments()
              if a["held_by"] == "stale pin" and a["netns"] in Topology.created_in_this_process]
    found += docker_env.leftovers()
    return found


def pytest_sessionfinish(session, exitstatus):
    """The suite must leave no namespaces, links or programs behind: fail the run if it does."""
    if not IS_ROOT:
        return
    leftovers = _leftovers()
    if leftovers:
        sys.stderr.write("\nbpftools tests left these behind:\n" + "".join(f"  {x}\n" for x in leftovers))
        session.exitstatus = 1
