"""The monitoring host's scripts: shellcheck-clean bash, and a Python script that only needs stdlib + PyYAML."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from cloud_init import monitoring
from cloud_init.secrets_table import SECRET_FILES
from core import ports

from .support import tool, variant

pytestmark = pytest.mark.realtools


def test_start_script_is_shellcheck_clean(tmp_path: Path) -> None:
    script = tmp_path / "qp-start-monitoring"
    script.write_text(monitoring.start_monitoring_script())
    res = subprocess.run([tool("shellcheck"), "--shell=bash", str(script)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_alertmanager_script_imports_only_what_debian_has() -> None:
    tree = ast.parse((monitoring.SCRIPTS_SRC / "qp-alertmanager-config.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    # PyYAML is python3-yaml, a dependency of cloud-init: present wherever user-data runs
    assert imported - {"__future__", "argparse", "grp", "os", "re", "shutil", "subprocess", "sys", "tempfile",
                       "pathlib", "yaml"} == set()


def test_start_script_waits_for_every_service() -> None:
    text = monitoring.start_monitoring_script()
    for needle in (f"127.0.0.1:{ports.ALERTMANAGER}/-/ready", f"127.0.0.1:{ports.PROMETHEUS}/-/ready",
                   f"https://127.0.0.1:{ports.GRAFANA}/api/health",
                   *(s.path for n, s in SECRET_FILES.items() if n.startswith("grafana-"))):
        assert needle in text, needle


def test_alertmanager_dropin_parses_on_debians_unit(tmp_path: Path) -> None:
    unit = Path("/lib/systemd/system/prometheus-alertmanager.service")
    if not unit.exists():
        pytest.skip("SKIPPED LOUDLY: prometheus-alertmanager's unit is not installed")
    analyze = tool("systemd-analyze")
    (tmp_path / unit.name).write_text(unit.read_text())
    dropin_dir = tmp_path / f"{unit.name}.d"
    dropin_dir.mkdir()
    files = {f.path: f.content for f in monitoring.monitoring_files(variant())}
    (dropin_dir / "quantapool.conf").write_text(files[monitoring.ALERTMANAGER_DROPIN])
    res = subprocess.run([analyze, "verify", str(tmp_path / unit.name)], capture_output=True, text=True,
                         timeout=60, check=False, env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"})
    assert "quantapool.conf" not in res.stderr + res.stdout, res.stderr
