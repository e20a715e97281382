"""Alertmanager: the template + host-side secret substitution give configs amtool accepts, and routes are right.

Alertmanager 0.25 facts these tests pin (checked with amtool): PagerDuty has `routing_key_file`; Discord has
no `webhook_url_file` and Telegram no `bot_token_file` (they arrive in later releases). The secret-free
template therefore uses placeholders that qp-alertmanager-config fills in on the host.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloud_init import monitoring

from .support import ALL_SECRETS, tool, variant

pytestmark = pytest.mark.realtools

SCRIPT = monitoring.SCRIPTS_SRC / "qp-alertmanager-config.py"
FAKE = {
    monitoring.SECRET_NAME["discord"]: "https://discord.com/api/webhooks/123/fake-token",
    monitoring.SECRET_NAME["telegram"]: "123456:FAKE-token",
    monitoring.SECRET_NAME["pagerduty"]: "fake-routing-key",
    monitoring.SECRET_NAME["heartbeat"]: "https://hc-ping.example/fake-uuid",
}
VARIANTS = {
    "none": frozenset(),
    "discord": frozenset({"discordWebhookUrl"}),
    "telegram": frozenset({"telegramBotToken"}),
    "pagerduty": frozenset({"pagerdutyRoutingKey"}),
    "heartbeat": frozenset({"heartbeatWebhookUrl"}),
    "all": ALL_SECRETS | {"heartbeatWebhookUrl"},
}


def _render(tmp: Path, secrets: frozenset[str], installed: set[str] | None = None, cfg=None,
            extra: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Template for `secrets`, secret files for `installed` (default: all), run the host script."""
    sec_dir = tmp / "secrets"
    sec_dir.mkdir(exist_ok=True)
    paths = {name: str(sec_dir / name) for name in FAKE}
    for name, value in FAKE.items():
        if installed is None or name in installed:
            Path(paths[name]).write_text(value + "\n")
    cfg = cfg or variant(secrets=secrets)
    template = tmp / "alertmanager.yml.in"
    template.write_text(yaml.safe_dump(monitoring.alertmanager_template(cfg, paths), sort_keys=False))
    out = tmp / "alertmanager.yml"
    res = subprocess.run([sys.executable, str(SCRIPT), "--template", str(template), "--output", str(out),
                          "--secrets-dir", str(sec_dir), "--group", "", "--amtool", tool("amtool"), *extra],
                         capture_output=True, text=True, timeout=60, check=False)
    return res, out


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool"), "check-config", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)


def _route(path: Path, **labels: str) -> str:
    res = subprocess.run([tool("amtool"), "config", "routes", "test", "--config.file", str(path),
                          *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rendered_config_is_valid(tmp_path: Path, name: str) -> None:
    res, out = _render(tmp_path, VARIANTS[name])
    assert res.returncode == 0, res.stderr
    check = _check(out)
    assert check.returncode == 0, check.stdout + check.stderr
    doc = yaml.safe_load(out.read_text())
    integrations = {k for r in doc["receivers"] for k in r if k.endswith("_configs")}
    expected = {"none": set(), "discord": {"discord_configs"}, "telegram": {"telegram_configs"},
                "pagerduty": {"pagerduty_configs"}, "heartbeat": {"webhook_configs"},
                "all": {"discord_configs", "telegram_configs", "pagerduty_configs", "webhook_configs"}}[name]
    assert integrations == expected
    _assert_every_receiver_integrated(doc)
    assert "@@file:" not in out.read_text()
    assert (out.stat().st_mode & 0o777) == 0o640


def test_secret_values_land_only_in_the_generated_file(tmp_path: Path) -> None:
    res, out = _render(tmp_path, VARIANTS["all"])
    assert res.returncode == 0
    text = out.read_text()
    assert FAKE[monitoring.SECRET_NAME["discord"]] in text and FAKE[monitoring.SECRET_NAME["telegram"]] in text
    assert FAKE[monitoring.SECRET_NAME["heartbeat"]] in text
    assert FAKE[monitoring.SECRET_NAME["pagerduty"]] not in text  # read by Alertmanager itself (routing_key_file)
    for f in monitoring.monitoring_files(variant(secrets=VARIANTS["all"])):
        for value in FAKE.values():
            assert value not in f.content, f.path


def _assert_every_receiver_integrated(doc: dict) -> None:
    """No receiver without an integration (alerts silently dropped), except the explicit `null` one."""
    for receiver in doc["receivers"]:
        has = any(k.endswith("_configs") and receiver[k] for k in receiver)
        assert has or receiver["name"] == "null", receiver
    used: set[str] = set()

    def walk(route: dict) -> None:
        used.add(route["receiver"])
        for child in route.get("routes", []):
            walk(child)

    walk(doc["route"])
    assert used <= {r["name"] for r in doc["receivers"]}


def test_missing_secret_fails_loudly_and_keeps_the_live_config(tmp_path: Path) -> None:
    res, out = _render(tmp_path, VARIANTS["all"])
    assert res.returncode == 0, res.stderr
    live = out.read_text()
    (tmp_path / "secrets" / monitoring.SECRET_NAME["telegram"]).unlink()
    res2, _ = _render(tmp_path, VARIANTS["all"], installed=set())
    assert res2.returncode == 1
    assert monitoring.SECRET_NAME["telegram"] in res2.stderr and "not installed" in res2.stderr
    assert out.read_text() == live
    # the start-up fallback does not apply once a config of ours is live
    res3, _ = _render(tmp_path, VARIANTS["all"], installed=set(), extra=("--first-boot-fallback",))
    assert res3.returncode == 1 and out.read_text() == live


def test_first_boot_routes_missing_receivers_to_null(tmp_path: Path) -> None:
    res, out = _render(tmp_path, VARIANTS["all"], installed={monitoring.SECRET_NAME["pagerduty"]},
                       extra=("--first-boot-fallback",))
    assert res.returncode == 0, res.stderr
    assert "not installed" in res.stderr and "null receiver" in res.stderr
    doc = yaml.safe_load(out.read_text())
    assert {r["name"] for r in doc["receivers"]} == {"null", "critical"}
    crit = next(r for r in doc["receivers"] if r["name"] == "critical")
    assert set(crit) == {"name", "pagerduty_configs"}
    _assert_every_receiver_integrated(doc)
    assert _check(out).returncode == 0
    assert _route(out, alertname="DeadMansSwitch", severity="heartbeat") == "null"
    assert _route(out, alertname="X", host="h", pair="p1", severity="warning") == "null"


def test_strict_run_in_the_start_script() -> None:
    text = monitoring.start_monitoring_script()
    line = next(ln for ln in text.splitlines() if monitoring.ALERTMANAGER_RENDER_SCRIPT in ln and "||" in ln)
    assert "--first-boot-fallback" not in line and "die" in line
    dropin = next(f.content for f in monitoring.monitoring_files(variant())
                  if f.path == monitoring.ALERTMANAGER_DROPIN)
    reload_line = next(ln for ln in dropin.splitlines() if ln.startswith("ExecReload=-+"))
    assert "--first-boot-fallback" not in reload_line


def test_bad_generated_config_keeps_the_live_one(tmp_path: Path) -> None:
    res, out = _render(tmp_path, ALL_SECRETS)
    assert res.returncode == 0
    live = out.read_text()
    (tmp_path / "secrets" / monitoring.SECRET_NAME["discord"]).write_text("not a url\n")
    res2, _ = _render(tmp_path, ALL_SECRETS, installed=set())  # keep the files as they are
    assert res2.returncode == 1
    assert "not a url" not in res2.stderr + res2.stdout  # never echo a secret
    assert out.read_text() == live


def test_placeholder_outside_secrets_dir_is_refused(tmp_path: Path) -> None:
    cfg = variant(secrets=frozenset({"discordWebhookUrl"}))
    template = tmp_path / "t.yml"
    doc = monitoring.alertmanager_template(cfg, {**{n: "/etc/passwd" for n in FAKE}})
    template.write_text(yaml.safe_dump(doc))
    (tmp_path / "secrets").mkdir()
    res = subprocess.run([sys.executable, str(SCRIPT), "--template", str(template), "--output",
                          str(tmp_path / "o.yml"), "--secrets-dir", str(tmp_path / "secrets"), "--group", "",
                          "--amtool", ""], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode != 0 and "outside" in res.stderr
    assert not (tmp_path / "o.yml").exists()


def test_telegram_needs_a_numeric_chat_id() -> None:
    cfg = variant(secrets=frozenset({"telegramBotToken"}))
    bad = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"telegram_chat_id": "@ops"})})
    with pytest.raises(ValueError, match="numeric chat id"):
        monitoring.alertmanager_template(bad)
    no_chat = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"telegram_chat_id": None})})
    assert all("telegram_configs" not in r for r in monitoring.alertmanager_template(no_chat)["receivers"])


@pytest.mark.parametrize("name,severity,receiver", [
    ("all", "critical", "critical"), ("all", "warning", "warning"), ("all", "heartbeat", "heartbeat"),
    ("all", "unknown", "warning"),
    ("pagerduty", "critical", "critical"), ("pagerduty", "warning", "null"),
    ("discord", "critical", "critical"), ("discord", "warning", "warning"),
    ("none", "critical", "null"), ("none", "warning", "null"), ("none", "heartbeat", "null"),
    ("heartbeat", "heartbeat", "heartbeat"), ("heartbeat", "critical", "null"),
])
def test_routes(tmp_path: Path, name: str, severity: str, receiver: str) -> None:
    res, out = _render(tmp_path, VARIANTS[name])
    assert res.returncode == 0
    assert _route(out, alertname="ValidatorDownOnActiveHost", host="h", pair="p1", severity=severity) == receiver


def test_heartbeat_repeats_every_few_minutes() -> None:
    doc = monitoring.alertmanager_template(variant(secrets=VARIANTS["all"]))
    (hb,) = [r for r in doc["route"]["routes"] if r["matchers"] == ['severity="heartbeat"']]
    assert hb["receiver"] == "heartbeat"
    assert hb["repeat_interval"] in ("1m", "2m", "5m") and hb["group_wait"] == "0s"


def test_grouping_and_inhibition_shape() -> None:
    doc = monitoring.alertmanager_template(variant(secrets=ALL_SECRETS))
    assert doc["route"]["group_by"] == ["alertname", "host", "pair"]
    (inhibit,) = doc["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert inhibit["equal"] == ["host", "pair"]
    critical = next(r for r in doc["route"]["routes"] if r["receiver"] == "critical")
    assert critical["group_wait"] == "10s"
