"""The rendered Prometheus config and rules pass promtool, and every alert passes its unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from cloud_init import monitoring

from .promtool_cases import ALWAYS_FIRING, CASES, EXPECTED_KEYS, promtool_test_doc
from .support import tool, variant, write_files

pytestmark = pytest.mark.realtools


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("stack,pool,paused", [("testnet", True, True), ("testnet", True, False),
                                               ("mainnet", False, None)])
def test_promtool_check_config_and_rules(tmp_path: Path, stack: str, pool: bool, paused: bool | None) -> None:
    cfg = variant(stack, pool=pool, expect_paused=paused)
    root = write_files(cfg, tmp_path)
    prom = root / "etc/prometheus/prometheus.yml"
    doc = yaml.safe_load(prom.read_text())
    doc["rule_files"] = [str(root / "etc/prometheus/rules/*.yml")]  # the host path, re-rooted
    prom.write_text(yaml.safe_dump(doc))
    res = _run(tool("promtool"), "check", "config", str(prom))
    assert res.returncode == 0, res.stdout + res.stderr
    n_files = len(list((root / "etc/prometheus/rules").glob("*.yml")))
    assert f"SUCCESS: {n_files} rule files found" in res.stdout
    res = _run(tool("promtool"), "check", "rules", *map(str, (root / "etc/prometheus/rules").glob("*.yml")))
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_firing_and_quiet_cases() -> None:
    names = set(monitoring.all_alert_names())
    firing = {c.alert for c in CASES if c.expect}
    quiet = {c.alert for c in CASES if not c.expect}
    assert names - firing == set()
    assert names - quiet == set(ALWAYS_FIRING)
    assert {c.alert for c in CASES} <= names


@pytest.fixture(scope="module")
def rendered_rules(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    cfg = variant(expect_paused=False)
    cfg = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"expected_active_keys": EXPECTED_KEYS})})
    root = write_files(cfg, tmp_path_factory.mktemp("rules"))
    rules = {r["alert"]: r for r in monitoring.alert_rules(cfg)}
    return root / "etc/prometheus/rules", rules


@pytest.mark.parametrize("alert", sorted(monitoring.all_alert_names()))
def test_promtool_unit_tests(alert: str, rendered_rules: tuple[Path, dict], tmp_path: Path) -> None:
    rules_dir, rules = rendered_rules
    cases = [c for c in CASES if c.alert == alert]
    files = []
    for interval in sorted({c.interval for c in cases}):
        doc = promtool_test_doc(sorted(str(p) for p in rules_dir.glob("*.yml")),
                                [c for c in cases if c.interval == interval], rules, evaluation_interval=interval)
        files.append(tmp_path / f"{alert}.{interval}.test.yml")
        files[-1].write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    res = _run(tool("promtool"), "test", "rules", *map(str, files))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(files)
