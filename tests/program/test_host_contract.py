"""Each host contract value (admin user, script paths, units, lab markers) is written once, in cloud_init.

Why: the operator side (components, qpool, lab, bench) must call what cloud-init installed; a second copy
of a path can drift from the one that is installed. Scripts shipped alone to hosts (cloud_init/files,
cloud_init/monitoring/scripts) cannot import and are left out.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from cloud_init import host_tools, key_host, monitoring
from cloud_init.base import ADMIN_USER

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "cloud_init", "components", "qpool", "lab", "qpool_cli", "bench")
SHIPPED_ALONE = ("cloud_init/files", "cloud_init/monitoring/scripts")

CONTRACT = {
    "admin user": ADMIN_USER,
    "qp-wait-ready": key_host.WAIT_READY, "qp-set-host-env": key_host.SET_HOST_ENV,
    "qp-import-keys": key_host.IMPORT_KEYS, "qp-start-clients": key_host.START_CLIENTS,
    "qp-install-secret": key_host.INSTALL_SECRET, "qp-validator-ctl": host_tools.CTL_PATH,
    "qp-start-monitoring": monitoring.START_MONITORING_SCRIPT,
    "execution unit": key_host.EXECUTION_UNIT, "beacon unit": key_host.BEACON_UNIT,
    "validator unit": key_host.VALIDATOR_UNIT,
    "lab grafana marker": monitoring.LAB_NO_GRAFANA_MARKER,
}


@cache
def _literals() -> dict[str, set[str]]:
    """string constant -> modules that write it out literally.

    Parsed once per test process (every parameter of the check reads the same tree; parsing it per
    parameter cost seconds each). Tests only read the result."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith(SHIPPED_ALONE):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.setdefault(node.value, set()).add(rel)
    return found


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_written_once_in_cloud_init(name: str) -> None:
    holders = _literals().get(CONTRACT[name], set())
    assert len(holders) <= 1, f"{name} ({CONTRACT[name]}) is written out in {sorted(holders)}: import it"
    assert all(h.startswith("cloud_init/") for h in holders), f"{name} is defined outside cloud_init: {holders}"


def test_one_jinja_environment_renders_every_host_file() -> None:
    """Only cloud_init/render.py builds a Jinja environment (strict undefined, one set of filters)."""
    users = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "cloud_init").rglob("*.py")
                   if not p.relative_to(REPO).as_posix().startswith(SHIPPED_ALONE) and "jinja2" in p.read_text())
    assert users == ["cloud_init/render.py"]


def test_template_names_are_unique_across_the_template_folders() -> None:
    from cloud_init.render import MONITORING_TEMPLATE_DIR, TEMPLATE_DIR

    shared = {p.name for p in TEMPLATE_DIR.iterdir()} & {p.name for p in MONITORING_TEMPLATE_DIR.iterdir()}
    assert not shared, f"the first folder would shadow {sorted(shared)}"
