"""pytest plugin (loaded by addopts `-p tests.xdist_groups`): how `make test` splits the suite over workers.

Why: a lab module deploys its own lab (the slowest part of the suite) and many modules build module-scoped
fixtures (a running Prometheus, rendered stacks), so each module must run on one worker; and the modules that
only read a lab share one (`shared_lab` in tests/lab_e2e/conftest.py), so those must run on the same worker.
Under `pytest -n N --dist loadgroup` this plugin supplies the scheduler: one work unit per test module, except
that every module using `shared_lab` forms one unit. (xdist's own `xdist_group` marks are not used: with
pytest 9.2 the node-id suffix they rely on no longer takes effect, pytest-dev/pytest-xdist#1386.)
Lab modules on different workers run at the same time: they use their own stack names (hence kernel object
names, lab/deploy.py lab_name), subnets and state roots.

Order: longest unit first (the classic longest-processing-time rule), so the run does not end with one worker
still busy on a long unit it got last. A unit's length is what it took in this checkout's last run with the
same tests (kept in .pytest_cache), else the figure measured once and written below (SEED_SECONDS), else a
guess from its source (a lab or `slow` module counts as long, anything else keeps xdist's order). A worker gets
its next unit only when it is down to its last test (xdist's default is two), so a worker busy with a
minutes-long lab row does not hold a unit another, idle worker could run. Without `-n` this plugin changes
nothing.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest

SHARED_LAB_GROUP = "lab:shared"
CACHE_KEY = "xdist_groups/unit_seconds"

#: What in a module's source marks it as long-running (the scheduler sees node ids only, not markers).
_LONG_MARKERS = ("pytest.mark.lab", "LAB_MARKS", "shared_lab", "pytest.mark.slow")
#: Assumed length of a long unit with no measured figure: about what a module with one lab of its own takes.
LONG_DEFAULT_SECONDS = 300.0

#: Seconds per long unit (setup + calls + teardown of all its tests) in one `make test` on the 2-core machine
#: (2026-12-02, 4 workers, load average 9-13 from other work; docs/testing.md): the order for a checkout
#: without .pytest_cache figures (a clean clone, CI). Figures of other units come from the cache or the guess.
SEED_SECONDS: dict[str, float] = {
    "tests/failover/test_fault_matrix_fenced.py": 573.0,
    "tests/failover/test_fault_matrix_safety.py": 564.0,
    "tests/failover/test_fault_matrix.py": 521.0,
    "tests/failover/test_fault_matrix_keymove.py": 82.0,
    "tests/lab_e2e/test_healthy_alerts.py": 383.0,
    "tests/monitoring/test_e2e_alerting.py": 308.0,
    "tests/keys_e2e/test_backup_restore_lab.py": 273.0,
    SHARED_LAB_GROUP: 257.0,
    "tests/leak/test_leak_lab.py": 143.0,
    "tests/lab_hosts/test_lab_hosts.py": 114.0,
    "tests/monitoring/test_exporter_alerts.py": 87.0,
    "tests/lab_e2e/test_reboot.py": 75.0,
    "tests/lab_e2e/test_cli.py": 55.0,
    "tests/lab_hosts/test_lab_exporter_overlay.py": 51.0,
}


@cache
def _source(module: Path) -> str:
    try:
        return module.read_text()
    except OSError:
        return ""


def scope_of(nodeid: str, rootpath: Path) -> str:
    """The work unit of a test: its module, or the shared-lab group."""
    module = nodeid.split("::", 1)[0]
    return SHARED_LAB_GROUP if "shared_lab" in _source(rootpath / module) else module


def is_long(scope: str, rootpath: Path) -> bool:
    """Whether a work unit is a lab module, the shared lab, or a module marked slow."""
    return scope == SHARED_LAB_GROUP or any(m in _source(rootpath / scope) for m in _LONG_MARKERS)


def expected_seconds(scope: str, tests: int, rootpath: Path, measured: dict[str, list[float]]) -> float:
    """How long a unit of `tests` tests will take: last run's figure if it ran the same number of tests."""
    figure = measured.get(scope)
    if figure is not None and int(figure[0]) == tests:
        return float(figure[1])
    if scope in SEED_SECONDS:
        return SEED_SECONDS[scope]
    return LONG_DEFAULT_SECONDS if is_long(scope, rootpath) else 0.0


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and config.getvalue("dist") == "loadgroup"


class _UnitTimer:
    """On the controller: sums each unit's reported durations and stores them in .pytest_cache at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.seconds: dict[str, float] = defaultdict(float)
        self.tests: dict[str, set[str]] = defaultdict(set)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        scope = scope_of(report.nodeid, self.config.rootpath)
        self.seconds[scope] += report.duration
        self.tests[scope].add(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        cache_ = getattr(self.config, "cache", None)
        if cache_ is None or not self.seconds:
            return
        stored = dict(cache_.get(CACHE_KEY, {}))
        for scope, seconds in self.seconds.items():
            stored[scope] = [len(self.tests[scope]), round(seconds, 1)]
        cache_.set(CACHE_KEY, stored)


def pytest_configure(config: pytest.Config) -> None:
    if _is_controller(config) and config.getvalue("numprocesses"):
        config.pluginmanager.register(_UnitTimer(config), "xdist_groups_unit_timer")


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # a no-op without pytest-xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    cache_ = getattr(config, "cache", None)
    measured: dict[str, list[float]] = dict(cache_.get(CACHE_KEY, {})) if cache_ is not None else {}

    class ModuleAndSharedLabScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid, config.rootpath)

        def _assign_work_unit(self, node: Any) -> None:
            # Longest remaining unit first; ties (e.g. all unmeasured short modules) keep the queue's order.
            longest = max(self.workqueue, key=lambda scope: expected_seconds(
                scope, len(self.workqueue[scope]), config.rootpath, measured))
            self.workqueue.move_to_end(longest, last=False)
            super()._assign_work_unit(node)

        def _reschedule(self, node: Any) -> None:
            # A worker keeps one test back until it knows the next one; give it a new unit only then.
            if not node.shutting_down and self.workqueue and self._pending_of(self.assigned_work[node]) > 1:
                return
            super()._reschedule(node)

    return ModuleAndSharedLabScheduling(config, log)
