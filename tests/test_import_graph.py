"""The project's modules import each other in one direction, with no cycle.

Every import statement counts, including those inside functions: a function-level import that closes
a cycle is a cycle all the same. The stages (docs/architecture.md), lowest first:

    errors/version → config → deploy (+ hwprofiles) → engine (+ policies, workloads) → measure
    → runs → plan, fidelity → report → api → commands/cli

A module may import its own stage or a lower one, never a higher one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sim", "policies", "workloads", "hwprofiles")

# (module-name prefix, rank); the longest matching prefix decides
STAGES: list[tuple[str, int]] = [
    ("sim.errors", 0), ("sim.version", 0), ("sim.limits", 0), ("sim.strict_yaml", 0), ("sim.outpaths", 0),
    ("sim.config", 1), ("sim.config_base", 1), ("sim.speculative_config", 1), ("sim.kv_tiers_config", 1),
    ("sim.deploy", 2), ("hwprofiles", 2),
    ("sim.engine", 3), ("policies", 3), ("workloads", 3),
    ("sim.measure", 4),
    ("sim.runs", 5),
    ("sim.plan", 6), ("sim.fidelity", 6),
    ("sim.data", 0),
    ("sim.report", 7),
    ("sim.api", 8),
    ("sim.commands", 9), ("sim.cli", 9), ("sim.__main__", 9),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            mods[_module_name(path)] = path
    return mods


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            # `from pkg import sub` imports the submodule when it is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _rank(module: str) -> int:
    best = None
    for prefix, rank in STAGES:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, rank)
    assert best is not None, f"{module}: no stage assigned in tests/test_import_graph.py"
    return best[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sccs


def test_no_import_cycle(graph):
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_planted_cycle(graph):
    planted = {k: set(v) for k, v in graph.items()}
    planted["sim.errors"].add("sim.config")  # config imports errors: errors → config closes a loop
    assert any({"sim.errors", "sim.config"} <= set(c) for c in _cycles(planted))


def test_imports_point_down_the_stages(graph):
    upward = [f"{src} → {dst}" for src, dsts in graph.items() if src != "sim"
              for dst in dsts if _rank(dst) > _rank(src)]
    assert upward == []


def test_package_facade_is_the_only_importer_of_sim_api_below_commands(graph):
    """``sim/__init__`` re-exports the API lazily; nothing inside the stages imports the facade."""
    importers = sorted(src for src, dsts in graph.items() if "sim.api" in dsts)
    assert set(importers) <= {"sim"} | {m for m in graph if m.startswith("sim.commands")}, importers
