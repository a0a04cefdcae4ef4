"""The shape of the code, checked by parsing it: import directions, no cycles, one job per module.

* ``common`` imports nothing from ``server``, ``client``, ``simulation`` or ``cli``;
  ``server`` and ``client`` never import each other; nothing imports ``cli`` but ``cli``.
* No import cycle between modules, counting imports inside functions too (a function-level
  import hides a cycle from Python, not from this test).
* Every module starts with a docstring whose first line says its job.
* No two modules share a file name unless they are package ``__init__`` files.
* Every Sphinx cross-reference in the source (``:mod:`fedward...```, ``:func:``...) names
  something that exists, so moving a module cannot leave a docstring pointing nowhere.

The checks read the source with :mod:`ast`, so adding a forbidden import makes them fail
before anything runs.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("common", "server", "client", "simulation", "cli")
FORBIDDEN = {
    "common": {"server", "client", "simulation", "cli"},
    "server": {"client", "simulation", "cli"},
    "client": {"server", "simulation", "cli"},
    "simulation": {"cli"},
    "cli": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "fedward." + ".".join(parts)


def sources() -> dict[str, Path]:
    return {
        module_name(path): path
        for room in ROOMS
        for path in sorted((REPO / room).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def fedward_imports(path: Path, modules: set[str]) -> set[str]:
    """The fedward modules ``path`` imports, anywhere in the file (``from x import y`` may name a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fedward")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedward"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
    return {name for name in found if name in modules}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = sources()
    return {name: fedward_imports(path, set(modules)) - {name} for name, path in modules.items()}


def room(module: str) -> str:
    return module.split(".")[1]


def test_sources_are_found(graph: dict[str, set[str]]) -> None:
    assert len(graph) > 80 and {room(m) for m in graph} == set(ROOMS)


@pytest.mark.parametrize("source", ROOMS)
def test_rooms_import_only_in_the_allowed_directions(graph: dict[str, set[str]], source: str) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if room(module) == source
        for target in targets
        if room(target) in FORBIDDEN[source]
    )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    """Tarjan's strongly connected components; any component of two or more modules is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_module_says_its_job_in_its_first_docstring_line() -> None:
    missing = []
    for name, path in sources().items():
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        first = (docstring or "").strip().splitlines()[0] if docstring else ""
        if len(first) < 20 or not first.endswith((".", ":")):
            missing.append(f"{name}: {first!r}")
    assert not missing, "modules whose first docstring line does not state their job:\n" + "\n".join(missing)


def test_no_two_modules_share_a_file_name() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for name, path in sources().items():
        if path.name != "__init__.py":
            by_name[path.name].append(name)
    shared = {file: names for file, names in by_name.items() if len(names) > 1}
    assert not shared, shared


REFERENCE = re.compile(r":(?:mod|func|class|meth|data|attr):`~?(fedward\.[A-Za-z_.]+)`")


def resolves(reference: str) -> bool:
    """Whether ``fedward.a.b.Name.attr`` names an importable module and attributes on it."""
    parts = reference.split(".")
    for cut in range(len(parts), 1, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def test_docstring_references_name_what_exists() -> None:
    broken = sorted(
        f"{path.relative_to(REPO)}: {match}"
        for path in sources().values()
        for match in REFERENCE.findall(path.read_text(encoding="utf-8"))
        if not resolves(match)
    )
    assert not broken, "\n".join(broken)
