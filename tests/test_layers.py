"""Dependencies point one way (STYLE.md 12): the import graph between mixfleet's packages,
and between its modules (every import, also those inside functions or under
TYPE_CHECKING), has no cycle; no module is over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mixfleet"


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def package_graph() -> dict[str, set[str]]:
    """{package: packages it imports}, packages being the top-level modules of mixfleet."""
    graph: dict[str, set[str]] = {}
    for f in SRC.rglob("*.py"):
        src = _package(f)
        deps = graph.setdefault(src, set())
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "mixfleet":
                    names = [f"mixfleet.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                parts = n.split(".")
                if parts[0] == "mixfleet" and len(parts) > 1 and parts[1] != src:
                    deps.add(parts[1])
    return graph


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> dict[str, set[str]]:
    """{module: mixfleet modules it imports}; ``from pkg import mod`` counts as ``pkg.mod``,
    and a module never depends on its own packages (their ``__init__`` only maps them)."""
    files = {_module_name(f): f for f in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            deps |= {n for n in names if n in files and n != name
                     and not name.startswith(n + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycle_between_packages() -> None:
    """No package imports one that (directly or not) imports it back."""
    graph = package_graph()
    assert {"train", "bench", "emulate", "fleet", "sim", "report"} <= set(graph)
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_no_import_cycle_between_modules() -> None:
    """No module imports one that (directly or not) imports it back."""
    graph = module_graph()
    assert "mixfleet.train.health.base" in graph["mixfleet.train.step"]
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_no_module_over_400_lines() -> None:
    """Small modules (STYLE.md 2): past 400 lines a module is usually two things."""
    long = {str(f.relative_to(SRC)): n for f in SRC.rglob("*.py")
            if (n := len(f.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_the_check_finds_a_cycle() -> None:
    """The cycle finder itself: a -> b -> a is found, a DAG is not."""
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
