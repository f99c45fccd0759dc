"""The layout keeps showing the design: short modules, no import cycle, one-way layers, no path hacks.

Read from the source files (not from what happens to be imported), so a lazy import inside a function
counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"app": "dcrn.app", "engine": "dcrn.engine", "models": "dcrn.models"}
LAYERS = ("dcrn.models", "dcrn.engine", "dcrn.app")  # each may import only those before it
MAX_LINES = 500
MAX_ENGINE_TOP_LEVEL = 12


def modules() -> dict[str, Path]:
    """Every module of the three code folders by its dotted name (a package by its own name)."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # "from package import submodule" imports the submodule; "from module import name" the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # "import dcrn.engine.sources.factory as f" and the like
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_the_projects_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_of_sees_imports_inside_functions_and_relative_ones(tmp_path):
    module = tmp_path / "mod.py"
    module.write_text("from .errors import X\ndef f():\n    from dcrn.engine.backends import choice\n")
    known = {"dcrn.models.errors": Path(), "dcrn.engine.backends.choice": Path(), "dcrn.models.mod": module}
    assert imports_of("dcrn.models.mod", module, known) == {"dcrn.models.errors", "dcrn.engine.backends.choice"}


def test_layers_import_one_way_app_engine_models():
    for name, targets in import_graph().items():
        layer = next(i for i, prefix in enumerate(LAYERS) if name.startswith(prefix))
        allowed = LAYERS[: layer + 1]
        wrong = sorted(t for t in targets if not t.startswith(allowed))
        assert not wrong, f"{name} (layer {LAYERS[layer]}) imports {wrong}"


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_no_module_is_longer_than_500_lines(folder):
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_engine_keeps_at_most_a_dozen_modules_at_its_top_level():
    top = sorted(p.name for p in (ROOT / "engine").glob("*.py"))
    assert len(top) <= MAX_ENGINE_TOP_LEVEL, f"{len(top)} modules at engine/'s top level: {top}"


def test_no_sys_path_edits_outside_the_test_configuration():
    offenders = []
    for folder in ("app", "engine", "models", "scripts", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "conftest.py" or path == Path(__file__).resolve():
                continue
            if "sys.path" in path.read_text():
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"sys.path edited in {sorted(offenders)}"
