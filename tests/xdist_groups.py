"""pytest plugin (loaded by addopts `-p tests.xdist_groups`): how `make test` splits the suite over workers.

Why: a lab module deploys its own lab (the slowest part of the suite) and many modules build module-scoped
fixtures (a running Prometheus, rendered stacks), so each module must run on one worker; and the modules that
only read a lab share one (`shared_lab` in tests/lab_e2e/conftest.py), so those must run on the same worker.
Under `pytest -n N --dist loadgroup` this plugin supplies the scheduler: one work unit per test module, except
that every module using `shared_lab` forms one unit. (xdist's own `xdist_group` marks are not used: with
pytest 9.2 the node-id suffix they rely on no longer takes effect, pytest-dev/pytest-xdist#1386.)
Lab modules on different workers run at the same time: they use their own stack names, subnets and state
roots. Work units that take long (lab modules, modules marked `slow`) are handed out first, so the run does not
end with one worker still busy on a long module it got last. Without `-n` this plugin changes nothing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

SHARED_LAB_GROUP = "lab:shared"


#: What in a module's source marks it as long-running (the scheduler sees node ids only, not markers).
_LONG_MARKERS = ("pytest.mark.lab", "LAB_MARKS", "shared_lab", "pytest.mark.slow")


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


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # a no-op without pytest-xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleAndSharedLabScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid, config.rootpath)

        def _assign_work_unit(self, node: Any) -> None:
            # Long units first (queue order otherwise): move the first remaining long unit to the front.
            long_scope = next((scope for scope in self.workqueue if is_long(scope, config.rootpath)), None)
            if long_scope is not None:
                self.workqueue.move_to_end(long_scope, last=False)
            super()._assign_work_unit(node)

    return ModuleAndSharedLabScheduling(config, log)
