"""pytest imports test modules by basename (rootdir mode, and tests import sibling helpers), so a
unit and an integration test module with the same name break collection of the whole suite."""
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def test_test_module_basenames_are_unique():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], "rename one of each pair: " + ", ".join(
        n for n, c in names.items() if c > 1)
