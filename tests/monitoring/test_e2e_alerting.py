"""End to end on the real binaries: rendered rules and routing, stand-in targets, a webhook sink.

Scrape and evaluation run every second here; the rules' `for` and the routes' group_wait are the rendered
production values (bench/alert_latency.py measures with production intervals too).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_init import monitoring

from .mon_stack import MonitoringStack, active_and_standby
from .support import ALL_SECRETS, tool, variant

pytestmark = [pytest.mark.realtools, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoringStack]:
    tool("prometheus")
    tool("prometheus-alertmanager")
    cfg = variant(secrets=ALL_SECRETS | {"heartbeatWebhookUrl"}, expect_paused=False)
    # the stand-in validator reports one active key (mon_stack.py): expected 1, so ValidatorKeysNotActive is quiet
    cfg = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"expected_active_keys": {"p1": 1}})})
    with MonitoringStack(cfg, tmp_path_factory.mktemp("monstack"), fast=True) as s:
        assert s.wait_until('up{job="validator"}', lambda r: len(r) == 2, timeout=30), "validators not scraped"
        yield s


def test_active_validator_down_pages(stack: MonitoringStack) -> None:
    active, _ = active_and_standby(stack.cfg)
    # Steady state first: rules evaluated, nothing about the active validator delivered.
    assert stack.wait_until('ALERTS{alertname="DeadMansSwitch"}', bool, timeout=30)
    assert stack.sink.alerts("ValidatorDownOnActiveHost") == []
    t0 = time.time()
    stack.standins.validator(active.name).stop()
    try:
        got = stack.sink.wait_for("ValidatorDownOnActiveHost", timeout=120, since=t0, host=active.name)
        assert got is not None, "ValidatorDownOnActiveHost never reached the sink"
        note, alert = got
        assert note.receiver == "critical"
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["pair"] == active.pair
        assert alert["annotations"]["runbook_url"].endswith("/ValidatorDownOnActiveHost.md")
    finally:
        stack.standins.validator(active.name).start()


def test_second_validator_in_pair_pages(stack: MonitoringStack) -> None:
    active, standby = active_and_standby(stack.cfg)
    assert stack.wait_until('sum by (pair) (up{job="validator"})', lambda r: r and float(r[0]["value"][1]) == 1,
                            timeout=30)
    t0 = time.time()
    stack.standins.validator(standby.name).start()
    try:
        got = stack.sink.wait_for("ValidatorRunningOnTwoHosts", timeout=60, since=t0, pair=active.pair)
        assert got is not None, "ValidatorRunningOnTwoHosts never reached the sink"
        assert got[0].receiver == "critical"
    finally:
        stack.standins.validator(standby.name).stop()


def test_heartbeat_routed_to_its_own_receiver(stack: MonitoringStack) -> None:
    got = stack.sink.wait_for("DeadMansSwitch", timeout=30)
    assert got is not None and got[0].receiver == "heartbeat"
    assert stack.sink.alerts("DeadMansSwitch") and all(n.receiver == "heartbeat"
                                                       for n, _ in stack.sink.alerts("DeadMansSwitch"))


def _substitute(expr: str) -> str:
    return re.sub(r"\$__rate_interval", "1m", re.sub(r"\$(pair|host)\b", ".*", expr))


def test_every_dashboard_query_runs(stack: MonitoringStack) -> None:
    failures = []
    for name, model in monitoring.dashboards(stack.cfg).items():
        for expr in monitoring.dashboard_queries(model):
            res = stack.query(_substitute(expr))
            if res.get("status") != "success":
                failures.append(f"{name}: {expr!r}: {res.get('error')}")
    assert failures == []


def test_rule_groups_evaluate_without_errors(stack: MonitoringStack) -> None:
    # every rule of the rendered files is loaded and its last evaluation succeeded against live data
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.prom_port}/api/v1/rules", timeout=10) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    names = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(names) == {r["alert"] for r in monitoring.alert_rules(stack.cfg)} | {monitoring.EXPECTED_KEYS_METRIC}
    assert [n for n, r in names.items() if r["health"] == "err"] == []


def test_self_metrics_used_by_rules_exist(stack: MonitoringStack) -> None:
    for metric in ("alertmanager_notifications_failed_total", "prometheus_rule_evaluation_failures_total",
                   "alertmanager_notifications_total"):
        assert stack.wait_until(f"count({metric})", bool, timeout=30), f"{metric} not exposed by the real binary"
    assert Path(stack.dir / "prometheus.log").exists()


def test_critical_inhibits_matching_warnings(stack: MonitoringStack) -> None:
    import json
    import urllib.request

    base = f"http://127.0.0.1:{stack.am_port}/api/v2/alerts"

    def post(alerts: list[dict]) -> None:
        req = urllib.request.Request(base, data=json.dumps(alerts).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            assert resp.status == 200

    common = {"pair": "p9", "environment": "testnet"}
    post([{"labels": {"alertname": "InhibitProbeCritical", "severity": "critical", "host": "h9", **common}},
          {"labels": {"alertname": "InhibitProbeWarning", "severity": "warning", "host": "h9", **common}},
          {"labels": {"alertname": "InhibitProbeWarning", "severity": "warning", "host": "other", **common}}])
    deadline = time.monotonic() + 30
    state: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(base, timeout=10) as resp:
            alerts = json.loads(resp.read())
        state = {f"{a['labels']['alertname']}@{a['labels']['host']}": a["status"]["inhibitedBy"] for a in alerts
                 if a["labels"]["alertname"].startswith("InhibitProbe")}
        if len(state) == 3 and state["InhibitProbeWarning@h9"]:
            break
        time.sleep(0.5)
    assert state["InhibitProbeWarning@h9"], "warning on the same host/pair not inhibited"
    assert state["InhibitProbeWarning@other"] == []
    assert state["InhibitProbeCritical@h9"] == []


def test_stand_ins_carry_the_rendered_target_labels(stack: MonitoringStack) -> None:
    res = stack.query("up")
    assert res["status"] == "success"
    seen = {(r["metric"]["job"], r["metric"]["host"], r["metric"]["role"], r["metric"]["pair"])
            for r in res["data"]["result"]}
    rendered = {(j["job_name"], sc["labels"]["host"], sc["labels"]["role"], sc["labels"]["pair"])
                for j in monitoring.scrape_jobs(stack.cfg) for sc in j["static_configs"]}
    assert seen == rendered


def test_keys_alert_quiet_with_the_expected_keys(stack: MonitoringStack) -> None:
    assert stack.wait_until(f'{monitoring.EXPECTED_KEYS_METRIC}{{pair="p1"}}', bool, timeout=30)
    assert stack.sink.alerts("ValidatorKeysNotActive") == []
    assert stack.sink.alerts("ValidatorBeaconDisconnected") == []


class _RealRendererStack(MonitoringStack):
    """Alertmanager config produced by the host-side qp-alertmanager-config from the rendered template, the
    heartbeat URL read from its secret file: the path a real monitoring server takes."""

    def _alertmanager_yml(self) -> dict:
        import subprocess
        import sys

        import yaml

        sec = self.dir / "secrets"
        sec.mkdir(parents=True, exist_ok=True)
        paths = {name: str(sec / name) for name in monitoring.secret_paths()}
        (sec / monitoring.SECRET_NAME["heartbeat"]).write_text(self.sink.url("external-dms") + "\n")
        template = self.dir / "alertmanager.yml.in"
        template.write_text(yaml.safe_dump(monitoring.alertmanager_template(self.cfg, paths), sort_keys=False))
        out = self.dir / "alertmanager.rendered.yml"
        res = subprocess.run([sys.executable, str(monitoring.SCRIPTS_SRC / "qp-alertmanager-config.py"),
                              "--template", str(template), "--output", str(out), "--secrets-dir", str(sec),
                              "--group", "", "--amtool", tool("amtool")], capture_output=True, text=True,
                             timeout=60, check=False)
        assert res.returncode == 0, res.stderr
        return yaml.safe_load(out.read_text())


def test_heartbeat_reaches_external_sink_and_stops_with_alertmanager(tmp_path: Path) -> None:
    """Production heartbeat timings (repeat 1m): two pings arrive, none after Alertmanager is stopped."""
    tool("prometheus")
    tool("prometheus-alertmanager")
    cfg = variant(secrets=frozenset({"heartbeatWebhookUrl"}), expect_paused=False)
    route = next(r for r in monitoring.alertmanager_template(cfg)["route"]["routes"] if r["receiver"] == "heartbeat")
    repeat = _seconds(route["repeat_interval"]) + _seconds(route["group_interval"])  # worst-case ping period
    with _RealRendererStack(cfg, tmp_path, fast=True) as s:
        first = s.sink.wait_for("DeadMansSwitch", timeout=150)  # Prometheus sends its first alerts ~1 min after start
        assert first is not None and first[0].receiver == "external-dms"
        second = s.sink.wait_for("DeadMansSwitch", timeout=repeat + 30, since=first[0].received + 1)
        assert second is not None, "the heartbeat did not repeat"
        assert second[0].received - first[0].received <= repeat + 10
        am = s.procs[0]  # spawned first (mon_stack.MonitoringStack.start)
        import os
        import signal

        os.killpg(am.pid, signal.SIGTERM)
        am.wait(timeout=10)
        stopped = time.time()
        time.sleep(repeat + 20)
        assert s.sink.alerts("DeadMansSwitch", since=stopped + 1) == [], "pings after Alertmanager stopped"


def _seconds(text: str) -> int:
    return sum(int(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in re.findall(r"(\d+)([smh])", text))
