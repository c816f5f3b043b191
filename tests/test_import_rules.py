"""The package's layers, as ARCHITECTURE.md draws them: imports only go down, and never in a circle.

Every ``import`` counts, including those under ``if TYPE_CHECKING:`` and inside functions: a
type-only import still ties one module to another.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = "ollama_keepwarm"
SRC = Path(__file__).resolve().parent.parent / "src" / PACKAGE

# Top to bottom. A module may import its own layer and the layers listed for it, nothing else.
ALLOWED: Mapping[str, frozenset[str]] = {
    "cli": frozenset({"package", "commands", "daemon", "fake", "edge", "core"}),
    "commands": frozenset({"daemon", "fake", "edge", "core"}),
    "daemon": frozenset({"edge", "core"}),
    "fake": frozenset({"core"}),
    "edge": frozenset({"package", "core"}),  # the version, for the keeper's User-Agent
    "core": frozenset(),
    "package": frozenset(),
}
_EDGE = {f"{PACKAGE}.ollama", f"{PACKAGE}.logs"}
_CLI = {f"{PACKAGE}.cli", f"{PACKAGE}.__main__"}


def layer_of(module: str) -> str:
    """Name the layer a module of ours belongs to, from where it sits in the tree."""
    if module == PACKAGE:
        return "package"
    if module in _CLI:
        return "cli"
    if module in _EDGE:
        return "edge"
    for folder in ("core", "daemon", "commands", "fake"):
        if module == f"{PACKAGE}.{folder}" or module.startswith(f"{PACKAGE}.{folder}."):
            return folder
    raise AssertionError(f"{module} sits in no layer: place it, and add it to ARCHITECTURE.md")


def _module_names() -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _owner(name: str, modules: Mapping[str, Path]) -> str:
    """The module of ours that ``name`` (a module or a name inside one) refers to."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def _imported(module: str, path: Path, modules: Mapping[str, Path]) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` imports the module a.b when there is one, else a name from a.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(f"{PACKAGE}."):
                yield _owner(target, modules)


def import_graph() -> dict[str, set[str]]:
    """Map each of our modules to the modules of ours it imports (itself excluded)."""
    modules = _module_names()
    return {
        name: {target for target in _imported(name, path, modules) if target != name}
        for name, path in modules.items()
    }


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """Return one import circle as a path (first module repeated at the end), or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_stack:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in done and (found := visit(nxt)):
                return found
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (found := visit(start)):
            return found
    return None


GRAPH = import_graph()


def test_the_graph_sees_our_imports() -> None:
    """The parser finds known edges, type-only and function-level ones included."""
    assert f"{PACKAGE}.core.plan" in GRAPH[f"{PACKAGE}.daemon.keeper"]
    assert f"{PACKAGE}.core.ps" in GRAPH[f"{PACKAGE}.ollama"]
    assert f"{PACKAGE}.daemon.keeper" in GRAPH[f"{PACKAGE}.cli"]  # imported inside a function
    assert f"{PACKAGE}.fake.server" in GRAPH[f"{PACKAGE}.fake"]  # under TYPE_CHECKING


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down(module: str) -> None:
    """A module imports only its own layer and the layers below it."""
    layer = layer_of(module)
    wrong = sorted(
        f"{target} ({layer_of(target)})"
        for target in GRAPH[module]
        if layer_of(target) != layer and layer_of(target) not in ALLOWED[layer]
    )
    assert not wrong, f"{module} ({layer}) may not import {', '.join(wrong)}"


def test_no_import_circle() -> None:
    """No module reaches itself through imports, TYPE_CHECKING ones counted."""
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_find_cycle_reports_the_path() -> None:
    """The circle check finds a circle, and names it in order."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_readme_module_table_matches_the_tree() -> None:
    """README's module table lists every module of ours, and nothing that is not there."""
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| module | owns |", 1)[1].split("\n\n", 1)[0]
    listed = {
        cell
        for row in table.splitlines()[2:]
        for cell in re.findall(r"`([\w/]+(?:\.py|/))`", row.split("|")[1])
    }
    present = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name not in {"__init__.py", "__main__.py"} and path.parent.name != "fake"
    } | {"fake/"}
    assert listed == present, (
        f"README's module table misses {sorted(present - listed)}, "
        f"and lists {sorted(listed - present)} that are not in the tree"
    )
