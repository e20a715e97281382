"""The test loop: how `make test` splits the suite over pytest-xdist workers (tests/xdist_groups.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.xdist_groups import CACHE_KEY, SHARED_LAB_GROUP, expected_seconds, pytest_xdist_make_scheduler, scope_of


def test_xdist_scopes_keep_modules_together_and_share_the_read_only_lab() -> None:
    """`make test` (-n N --dist loadgroup): one work unit per module; the shared-lab modules form one unit."""
    root = Path(__file__).resolve().parents[2]
    assert scope_of("tests/lab_e2e/test_bootstrap.py::test_alertmanager_ready", root) == SHARED_LAB_GROUP
    assert scope_of("tests/lab_e2e/test_ports.py::test_ssh_open_to_the_whole_private_subnet_by_design",
                    root) == SHARED_LAB_GROUP
    assert scope_of("tests/lab_e2e/test_reboot.py::test_x", root) == "tests/lab_e2e/test_reboot.py"
    assert scope_of("tests/keys/test_seal.py::test_a[1]", root) == "tests/keys/test_seal.py"


class _Config:
    """What the scheduler reads of pytest's config: the dist mode, the worker specs, the root and the cache."""

    def __init__(self, root: Path, measured: dict[str, list[float]]) -> None:
        self.rootpath = root
        self.option = SimpleNamespace(loadscopereorder=True)
        self.cache = SimpleNamespace(get=lambda key, default: measured if key == CACHE_KEY else default)
        self._values = {"dist": "loadgroup", "tx": ["2*popen"]}

    def getvalue(self, name: str) -> Any:
        return self._values[name]


class _Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[list[int]] = []

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent.append(indexes)

    def shutdown(self) -> None:
        self.shutting_down = True


def _scheduler(root: Path, measured: dict[str, list[float]], collection: list[str]) -> tuple[Any, _Node, _Node]:
    sched = pytest_xdist_make_scheduler(_Config(root, measured), None)  # type: ignore[arg-type]
    a, b = _Node("a"), _Node("b")
    for node in (a, b):
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    return sched, a, b


def _scopes_sent(sched: Any, node: _Node) -> list[str]:
    return [scope_of(sched.collection[i[0]], sched.config.rootpath) for i in node.sent]


def test_longest_unit_first_by_last_runs_figures(tmp_path: Path) -> None:
    """Units go out longest first by the cached figures (same test count), a lab module before short modules."""
    # The marker is spelled in two pieces so that this module's own source does not read as a lab module.
    lab_source = "pytestmark = pytest.mark." + "lab\n"
    for name, body in (("test_lab.py", lab_source), ("test_a.py", ""), ("test_b.py", ""), ("test_c.py", "")):
        (tmp_path / name).write_text(body)
    collection = [f"{m}::test_{i}" for m in ("test_a.py", "test_b.py", "test_c.py", "test_lab.py") for i in range(3)]
    measured = {"test_b.py": [3, 50.0], "test_c.py": [3, 200.0], "test_a.py": [2, 999.0]}  # a: other test count
    sched, a, b = _scheduler(tmp_path, measured, collection)
    assert _scopes_sent(sched, a) == ["test_lab.py"]  # unmeasured lab module: assumed long
    assert _scopes_sent(sched, b) == ["test_c.py"]
    assert list(sched.workqueue) == ["test_a.py", "test_b.py"]  # the stale figure for test_a.py is ignored
    assert expected_seconds("test_a.py", 3, tmp_path, measured) == 0.0
    assert expected_seconds("test_b.py", 3, tmp_path, measured) == 50.0


def test_next_unit_only_when_a_worker_is_down_to_its_last_test(tmp_path: Path) -> None:
    """A worker in a long unit does not hold the next unit while another worker could take it."""
    for name in ("test_long.py", "test_x.py", "test_y.py"):
        (tmp_path / name).write_text("")
    collection = [f"test_long.py::test_{i}" for i in range(4)] + ["test_x.py::test_0", "test_x.py::test_1",
                                                                   "test_y.py::test_0", "test_y.py::test_1"]
    sched, a, b = _scheduler(tmp_path, {"test_long.py": [4, 900.0], "test_x.py": [2, 5.0]}, collection)
    assert _scopes_sent(sched, a) == ["test_long.py"] and _scopes_sent(sched, b) == ["test_x.py"]
    sched.mark_test_complete(a, 0)
    sched.mark_test_complete(a, 1)  # two of four left: xdist's default would hand a the next unit here
    assert _scopes_sent(sched, a) == ["test_long.py"]
    sched.mark_test_complete(b, 4)  # b is down to its last test: it gets test_y.py
    assert _scopes_sent(sched, b) == ["test_x.py", "test_y.py"]
