"""Mainnet refuses to deploy when nobody would be paged: no PagerDuty, no heartbeat, no expected key counts."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml
from click.testing import CliRunner

from components import stack as stack_module
from core.config import ConfigError, deployment_issues, load_stack_config, warnings_for
from qpool.cli import main
from tests.conftest import filled_mainnet_doc

REPO = Path(__file__).resolve().parents[2]
SECURE = {"secure": "v1:AAAA"}  # how a stack file stores a secret set with `pulumi config set --secret`


def _mainnet(tmp_path: Path, secrets: tuple[str, ...] = (), counts: dict | None = None) -> Path:
    doc = filled_mainnet_doc()  # the committed file with the test-only pins (tests/conftest.py)
    for key in secrets:
        doc["config"][f"quantapool:{key}"] = SECURE
    if counts is not None:
        doc["config"]["quantapool:alerting"]["expectedActiveKeys"] = counts
    path = tmp_path / "mainnet.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _validate(path: Path):
    return CliRunner().invoke(main, ["validate", "--stack", "mainnet", "--config-file", str(path)])


def test_mainnet_without_pager_or_heartbeat_is_refused(tmp_path: Path) -> None:
    res = _validate(_mainnet(tmp_path))
    assert res.exit_code == 2
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert any("quantapool:pagerdutyRoutingKey" in ln for ln in errors)
    assert any("quantapool:heartbeatWebhookUrl" in ln for ln in errors)
    assert any("alerting.expectedActiveKeys.p1" in ln for ln in errors)
    assert any("alerting.expectedActiveKeys.p2" in ln for ln in errors)


def test_mainnet_missing_only_the_heartbeat_is_refused(tmp_path: Path) -> None:
    res = _validate(_mainnet(tmp_path, ("pagerdutyRoutingKey",), {"p1": 2, "p2": 2}))
    assert res.exit_code == 2
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "heartbeatWebhookUrl" in errors[0]


def test_mainnet_with_pager_heartbeat_and_counts_validates(tmp_path: Path) -> None:
    res = _validate(_mainnet(tmp_path, ("pagerdutyRoutingKey", "heartbeatWebhookUrl"), {"p1": 2, "p2": 1}))
    assert res.exit_code == 0, res.output


def test_testnet_gets_warnings_not_errors() -> None:
    res = CliRunner().invoke(main, ["validate", "--stack", "testnet"])
    assert res.exit_code == 0
    assert "heartbeatWebhookUrl is not set" in res.output
    assert "alerting.expectedActiveKeys has no count for p1" in res.output


def test_expected_keys_must_name_pairs_and_be_positive(mainnet_raw) -> None:
    raw = dict(mainnet_raw)
    raw["alerting"] = {**raw["alerting"], "expectedActiveKeys": {"p9": 1}}
    with pytest.raises(ConfigError, match=r"alerting\.expectedActiveKeys\.p9: no validator pair 'p9'"):
        load_stack_config(raw)
    raw["alerting"] = {**raw["alerting"], "expectedActiveKeys": {"p1": 0}}
    with pytest.raises(ConfigError, match=r"alerting\.expectedActiveKeys: p1: 0 is not a key count"):
        load_stack_config(raw)


def test_program_refuses_a_real_mainnet_deploy(mainnet_raw, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside Pulumi's mocks (a real `pulumi up`/preview) the program raises before creating anything."""
    cfg = load_stack_config(mainnet_raw)
    assert deployment_issues(cfg)
    import pulumi.runtime.settings as settings

    monkeypatch.setattr(settings, "get_monitor", lambda: object())
    with pytest.raises(pulumi.RunError, match="mainnet alerting is incomplete"):
        stack_module._refuse_unmonitored_deploy(cfg)
    counts = cfg.alerting.model_copy(update={"expected_active_keys": {"p1": 1, "p2": 1}})
    ok = cfg.model_copy(update={"secrets_present": frozenset({"pagerdutyRoutingKey", "heartbeatWebhookUrl"}),
                                "alerting": counts})
    assert deployment_issues(ok) == []
    stack_module._refuse_unmonitored_deploy(ok)
    assert not any("heartbeat" in w for w in warnings_for(ok))
