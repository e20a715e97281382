"""pytest plugin (loaded by addopts `-p tests.xdist_groups`): how `make test` splits the suite over workers.

Why: a lab module deploys its own lab (the slowest part of the suite) and many modules build module-scoped
fixtures (a running Prometheus, rendered stacks), so each module must run on one worker; and the modules that
only read a lab share one (`shared_lab` in tests/lab_e2e/conftest.py), so those must run on the same worker.
Under `pytest -n N --dist loadgroup` this plugin supplies the scheduler: one work unit per test module, except
that every module using `shared_lab` forms one unit. (xdist's own `xdist_group` marks are not used: with
pytest 9.2 the node-id suffix they rely on no longer takes effect, pytest-dev/pytest-xdist#1386.)
Lab modules on different workers run at the same time: they use their own stack names, subnets and state
roots. Without `-n` this plugin changes nothing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

SHARED_LAB_GROUP = "lab:shared"


@cache
def _uses_shared_lab(module: Path) -> bool:
    try:
        return "shared_lab" in module.read_text()
    except OSError:
        return False


def scope_of(nodeid: str, rootpath: Path) -> str:
    """The work unit of a test: its module, or the shared-lab group."""
    module = nodeid.split("::", 1)[0]
    return SHARED_LAB_GROUP if _uses_shared_lab(rootpath / module) else module


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleAndSharedLabScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid, config.rootpath)

    return ModuleAndSharedLabScheduling(config, log)
