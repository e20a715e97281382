"""The project's packages import each other in one direction only: no import circle, each layer above the last.

Why: a circle between packages means neither can be read, tested or changed alone (and Python resolves
it only by import order). The graph is computed from the source with `ast`, every import counted (module
level, inside functions and under TYPE_CHECKING alike), so the check cannot be fooled by a late import.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Bottom first. A package may import only packages listed before it.
LAYERS = ["core", "exporter", "cloud_init", "components", "qpool", "lab", "qpool_cli"]


def _imported_modules(tree: ast.AST, package: str, module_parts: tuple[str, ...]) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the package it is written in
                yield package
            elif node.module:
                yield node.module


def package_imports(root: Path = REPO, packages: Iterable[str] = LAYERS) -> dict[str, dict[str, set[str]]]:
    """package -> imported project package -> the files (relative to root) that import it."""
    names = set(packages)
    graph: dict[str, dict[str, set[str]]] = {p: {} for p in names}
    for package in names:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            tree = ast.parse(path.read_text(), filename=str(rel))
            for module in _imported_modules(tree, package, rel.parts):
                top = module.split(".")[0]
                if top in names and top != package:
                    graph[package].setdefault(top, set()).add(str(rel))
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Every elementary circle found by a depth-first search, each as [a, b, ..., a]."""
    found: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, {})):
            if nxt == path[0]:
                cycle = [*path, nxt]
                key = tuple(sorted(path))
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            elif nxt not in path and nxt > path[0]:
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


@pytest.fixture(scope="module")
def repo_graph() -> dict[str, dict[str, set[str]]]:
    """The repository's import graph, computed once for the checks below (each used to parse every file)."""
    return package_imports()


def test_no_import_circle_between_packages(repo_graph: dict[str, dict[str, set[str]]]) -> None:
    graph = repo_graph
    found = cycles(graph)
    detail = [" -> ".join(c) + ": " + "; ".join(
        f"{a}->{b} in {sorted(graph[a][b])}" for a, b in itertools.pairwise(c)) for c in found]
    assert not found, "import circles between packages:\n" + "\n".join(detail)


def test_packages_import_only_lower_layers(repo_graph: dict[str, dict[str, set[str]]]) -> None:
    graph = repo_graph
    upward = [f"{a} imports {b} ({', '.join(sorted(files))})"
              for a, targets in graph.items() for b, files in targets.items()
              if LAYERS.index(b) > LAYERS.index(a)]
    assert not upward, "imports that point up the layers " + " < ".join(LAYERS) + ":\n" + "\n".join(upward)


def test_core_imports_nothing_of_the_project(repo_graph: dict[str, dict[str, set[str]]]) -> None:
    assert repo_graph["core"] == {}


def test_the_check_finds_a_circle(tmp_path: Path) -> None:
    """The checker itself can fail: a two-package circle made on disk is reported, with its files."""
    (tmp_path / "alpha").mkdir()
    (tmp_path / "beta").mkdir()
    (tmp_path / "alpha" / "a.py").write_text("from beta import b\n")
    (tmp_path / "beta" / "b.py").write_text("def f():\n    import alpha.a\n")
    graph = package_imports(tmp_path, ["alpha", "beta"])
    assert graph == {"alpha": {"beta": {"alpha/a.py"}}, "beta": {"alpha": {"beta/b.py"}}}
    assert cycles(graph) == [["alpha", "beta", "alpha"]]


def test_the_qpool_command_has_every_group_and_qpool_alone_has_no_lab() -> None:
    """The console script (qpool_cli.main) assembles lab's group; qpool's own group stays free of lab."""
    from click.testing import CliRunner

    from qpool.cli import main as qpool_group
    from qpool_cli.main import main as command

    assert command is qpool_group  # one group: every qpool command, plus lab
    assert {"lab", "keys", "status", "failover", "activate"} <= set(command.commands)
    result = CliRunner().invoke(command, ["lab", "--help"])
    assert result.exit_code == 0 and "local lab" in result.output
