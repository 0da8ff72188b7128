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


def pytest_configure(config):
    """Runtimes name namespaces in-process as they do in the CLI (which calls runtimes.install())."""
    from bpftools import runtimes

    runtimes.install()


@pytest.fixture(scope="session")
def kernel_features():
    """feature name -> available, from the same probes `bpftools doctor` runs."""
    if not IS_ROOT:
        return {}
    from bpftools.kernel.features import probe_all, probe_dict

    return probe_dict(probe_all(load_modules=True))  # the tests create such devices anyway


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
    """A Topology whose namespaces are removed after the test, pass or fail, with the pins
    made for them (a killed xdp-decap leaves its allow-list pinned under the namespace's name)."""
    from bpftools.topology import Topology

    with Topology("bt") as topology:
        try:
            yield topology
        finally:
            remove_pins_of(topology.namespaces)


def remove_pins_of(labels) -> None:
    """Remove what is pinned under /sys/fs/bpf/bpftools for these namespace labels."""
    from bpftools import bpfsys, namespaces

    components = {namespaces.label_as_path_component(label) for label in labels}
    for directory, _dirs, files in list(os.walk(bpfsys.PIN_ROOT)):
        parts = os.path.relpath(directory, bpfsys.PIN_ROOT).split(os.sep)
        if len(parts) >= 2 and parts[1] in components:
            for name in files:
                bpfsys.unpin(os.path.join(directory, name))


_before = None  # what existed when the session started (tests/leftovers.py)


def pytest_sessionstart(session):
    global _before
    if IS_ROOT:
        import uuid

        from leftovers import SESSION_VARIABLE, Snapshot

        os.environ[SESSION_VARIABLE] = uuid.uuid4().hex  # marks every process the tests start
        _before = Snapshot.take()


def pytest_sessionfinish(session, exitstatus):
    """The suite must leave no bpftools programs or processes, pins, namespaces, qdiscs, Docker
    objects or test containerds (and their pods' namespaces) behind: fail the run naming each, then remove them so the next run starts clean."""
    if not IS_ROOT or _before is None:
        return
    from leftovers import new_since, other_sessions, remove

    found = new_since(_before)
    others = other_sessions()
    if others:
        maybe_theirs = [item for item in found if not item.surely_ours]
        if maybe_theirs:
            sys.stderr.write(f"\nnew since this session started, left alone: other test sessions run beside it "
                             f"(pytest PIDs {', '.join(map(str, others))}):\n"
                             + "".join(f"  {item.description}\n" for item in maybe_theirs))
        found = [item for item in found if item.surely_ours]
    if not found:
        return
    errors = remove(found)
    sys.stderr.write("\nbpftools tests left these behind (removed now):\n" + "".join(
        f"  {item.description}{' (could not remove: ' + errors[item.description] + ')' if item.description in errors else ''}\n"
        for item in found))
    session.exitstatus = 1
