"""The layers of bpftools, kept by a test: no module imports one of a layer above its own, and
no modules import each other in a circle. Imports inside functions count too: a lazy import
that climbs a layer is still a dependency upwards (it is how the old cycle between cri.py,
facts/namespace.py, namespaces.py and netlink.py hid).

From the bottom:
  foundation    errors, logging, the run loop, bpf(2), kernel facts, parsers, generated messages, text
  registry      namespaces.py: every network namespace, named and entered; imports no runtime
  runtimes      cri.py, docker_engine.py: talk to a container runtime, know nothing of namespaces
  sources       runtimes.py (hands the runtimes to the registry), netlink.py, the command renderer
  kernel access program, attach, facts/namespace.py, the feature probes
  capabilities  trace-drops, encap-stats, xdp-decap, serve, diagnose, status, lab, demo, doctor…
  cli           bpftools/cli/, __main__
A module not named below is a capability (or, under bpftools/cli/, the CLI).
"""
import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[2] / "bpftools"

LAYERS = ("foundation", "registry", "runtimes", "sources", "kernel access", "capabilities", "cli")
PLACED = {
    "foundation": {"bpftools", "bpftools.errors", "bpftools.logs", "bpftools.runloop", "bpftools.bpfsys",
                   "bpftools.addresses", "bpftools.metrics", "bpftools.topology", "bpftools.kernel",
                   "bpftools.kernel.btf", "bpftools.kernel.mounts", "bpftools.kernel.headers", "bpftools.kernel.kallsyms",
                   "bpftools.kernel.offsets", "bpftools.kernel.privileges", "bpftools.kernel.drop_reasons",
                   "bpftools.kernel.system", "bpftools.facts", "bpftools.facts.netfilter", "bpftools.facts.rtnl", "bpftools.facts.tun",
                   "bpftools.cri_api", "bpftools.cri_api.cri_runtime_v1_pb2", "bpftools.text", "bpftools.build",
                   "bpftools.names", "bpftools.rates", "bpftools.kernel.modules"},
    "registry": {"bpftools.namespaces"},
    "runtimes": {"bpftools.cri", "bpftools.docker_engine"},
    "sources": {"bpftools.runtimes", "bpftools.netlink", "bpftools.commands"},
    "kernel access": {"bpftools.program", "bpftools.attach", "bpftools.facts.namespace", "bpftools.kernel.features"},
}


def _modules() -> Dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "bpf" in path.relative_to(PACKAGE).parts[:1]:
            continue  # bpftools/bpf: the C sources
        parts = ("bpftools",) + path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> int:
    for name, members in PLACED.items():
        if module in members:
            return LAYERS.index(name)
    if module == "bpftools.__main__" or module.startswith("bpftools.cli"):
        return LAYERS.index("cli")
    return LAYERS.index("capabilities")


def imports_of(module: str) -> Set[str]:
    """The bpftools modules `module` imports, at the top or inside functions."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                candidate = f"{origin}.{alias.name}"
                found.add(candidate if candidate in MODULES else origin)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_no_module_imports_a_layer_above_its_own():
    upwards = [f"{m} ({LAYERS[layer_of(m)]}) imports {d} ({LAYERS[layer_of(d)]})"
               for m, deps in sorted(GRAPH.items()) for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not upwards, "imports that climb a layer (see this file's docstring):\n" + "\n".join(upwards)


def test_the_registry_imports_no_runtime():
    assert not GRAPH["bpftools.namespaces"] & {"bpftools.cri", "bpftools.docker_engine", "bpftools.runtimes"}
    assert not GRAPH["bpftools.cri"] & {"bpftools.namespaces", "bpftools.netlink", "bpftools.facts.namespace"}


def test_no_import_cycles():
    state: Dict[str, int] = {}  # 1 visiting, 2 done
    cycles = []

    def visit(module: str, trail: list) -> None:
        state[module] = 1
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(trail[trail.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, trail + [dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_test_sees_the_imports_it_keeps():
    """The parser finds relative, absolute and function-level imports (else the tests above pass vacuously)."""
    assert "bpftools.namespaces" in GRAPH["bpftools.netlink"]  # from . import namespaces
    assert "bpftools.cri_api.cri_runtime_v1_pb2" in GRAPH["bpftools.cri"]  # inside a method
    assert "bpftools.runtimes" in GRAPH["bpftools.cli.main"]  # inside main()
    assert len(MODULES) > 50
