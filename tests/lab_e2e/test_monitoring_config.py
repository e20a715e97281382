"""The monitoring host's configuration on a running lab (issues 11 and 14): the monitoring-config bundle.

- First boot: the configuration Prometheus and Alertmanager run came from the bundle (user-data carries
  none of it), and the applier recorded it as the last good configuration.
- An alert rule changed by a stack-config edit reaches Prometheus through `lab apply` (as `pulumi up`):
  the bundle step re-runs on the monitoring host only and the new rule is in /api/v1/rules.
- An invalid rule is refused on the host before anything is replaced: the apply fails with one line naming
  the rule file and promtool's message, and the old rules keep running.
- The dead-man's switch reaches a receiver OUTSIDE the monitoring host (an HTTP sink on the lab bridge set
  as heartbeatWebhookUrl), periodically, and stops when Alertmanager on the monitoring host stops.

The rule edit is `alerting.expectedActiveKeys.<pair>`: the only stack key whose value is in a rule's text
(the recording rule ValidatorKeysNotActive compares with). No stack key can make a rule invalid, so the
invalid rule is injected into the program's rendering (monkeypatch), exactly where a bad edit of
cloud_init/monitoring/rules/*.yml would show up.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloud_init import monitoring
from core import ports
from lab.apply import ApplyError, apply
from lab.state import LabState
from lab.testing import config_variant

from .conftest import LAB_MARKS, Lab, module_lab, one_host, out, wait_for

pytestmark = LAB_MARKS

STACK = "e2emon"
OCTET = 26
#: Alertmanager repeats the heartbeat every 60-90 s (HEARTBEAT_ROUTE); silence longer than this = stopped.
HEARTBEAT_SILENCE = 150


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from module_lab(STACK, OCTET, tmp_path_factory.mktemp(STACK))


def _api(lab: Lab, path: str) -> Any:
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    return json.loads(out(dep, mon, f"curl -sf {shlex.quote(f'http://127.0.0.1:{ports.PROMETHEUS}/api/v1/{path}')}"))[
        "data"]


def _expected_keys_exprs(lab: Lab) -> set[str]:
    return {r["query"] for g in _api(lab, "rules")["groups"] for r in g["rules"]
            if r.get("name") == monitoring.EXPECTED_KEYS_METRIC}


def _config(tmp_path: Path, keys: int | None) -> Path:
    def mutate(config: dict[str, Any]) -> None:
        if keys is not None:
            config.setdefault("quantapool:alerting", {})["expectedActiveKeys"] = {
                p["name"]: keys for p in config["quantapool:validatorPairs"]}

    return config_variant(tmp_path / f"Pulumi.{STACK}.yaml", OCTET, mutate=mutate)


def _bundle_step(host: str) -> str:
    """A changed bundle changes the step's triggers: pulumi-command replaces it, which runs `create`."""
    return f"{host}: bundle-monitoring-config create"


def _reload_ok(lab: Lab, metric: str, port: int) -> str:
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    text = out(dep, mon, f"curl -sf http://127.0.0.1:{port}/metrics")
    return next(ln.split()[-1] for ln in text.splitlines() if ln.startswith(metric + " "))


def test_first_boot_configuration_came_from_the_bundle(lab: Lab) -> None:
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    user_data = out(dep, mon, "sudo cat /var/lib/cloud/instance/user-data.txt 2>/dev/null || true")
    assert "prometheus.yml" not in user_data and "alertmanager.yml.in" not in user_data
    installed = json.loads(out(dep, mon, "sudo cat /var/lib/quantapool/bundles/monitoring-config.json"))
    assert monitoring.RULES_FILE in installed["files"] and monitoring.PROMETHEUS_CONFIG in installed["files"]
    last_good = "/var/lib/quantapool/monitoring-config/last-good"
    same = out(dep, mon, f"sudo cmp {last_good}{monitoring.RULES_FILE} {monitoring.RULES_FILE} && echo same")
    assert same.strip() == "same"
    assert _reload_ok(lab, "prometheus_config_last_reload_successful", ports.PROMETHEUS) == "1"
    assert _reload_ok(lab, "alertmanager_config_last_reload_successful", ports.ALERTMANAGER) == "1"
    alerts = {r["name"] for g in _api(lab, "rules")["groups"] for r in g["rules"] if r["type"] == "alerting"}
    assert {"ValidatorRunningOnTwoHosts", "DeadMansSwitch"} <= alerts


def test_changed_rule_is_reloaded_on_the_monitoring_host_only(lab: Lab, tmp_path: Path) -> None:
    dep, session = lab
    mon = one_host(dep, "monitoring")
    assert _expected_keys_exprs(lab) == set()
    for keys in (2, 3):
        log: list[str] = []
        result = apply(dep, _config(tmp_path, keys), log=log.append, session=session)
        assert result.ran == [_bundle_step(mon)], (result.ran, log)
        assert _expected_keys_exprs(lab) == {f"vector({keys})"}, log
    assert _reload_ok(lab, "prometheus_config_last_reload_successful", ports.PROMETHEUS) == "1"


def test_invalid_rule_is_refused_and_the_old_rules_keep_running(lab: Lab, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dep, session = lab
    mon = one_host(dep, "monitoring")
    config = _config(tmp_path, 3)
    assert apply(dep, config, session=session).plan.empty  # the state the previous test left
    live = out(dep, mon, f"sha256sum {monitoring.RULES_FILE}")
    before = _expected_keys_exprs(lab)
    assert before == {"vector(3)"}

    from cloud_init.monitoring import files, rules

    def broken(cfg):  # type: ignore[no-untyped-def]
        docs = rules.alert_rule_files(cfg)
        for doc in docs.values():
            doc["groups"][0]["rules"][0]["expr"] = "sum(rate(up[5m]) by"
        return docs

    monkeypatch.setattr(files, "alert_rule_files", broken)
    log: list[str] = []
    with pytest.raises(ApplyError) as err:
        apply(dep, config, log=log.append, session=session)
    msg = str(err.value)
    assert f"{mon}: step bundle-monitoring-config" in msg, msg
    assert monitoring.RULES_FILE in msg and "promtool check rules" in msg and "parse error" in msg, msg
    assert "nothing changed" in msg, msg
    assert out(dep, mon, f"sha256sum {monitoring.RULES_FILE}") == live
    assert _expected_keys_exprs(lab) == before
    assert _reload_ok(lab, "prometheus_config_last_reload_successful", ports.PROMETHEUS) == "1"

    monkeypatch.undo()
    again = apply(dep, config, session=session)
    assert again.plan.empty and again.ran == [], "the refused step was recorded as applied"


class HeartbeatSink:
    """An HTTP receiver on the lab bridge (outside every lab host) that records when pings arrive."""

    def __init__(self, address: str) -> None:
        self.times: list[float] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/heartbeat":
                    sink.times.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}/heartbeat"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HeartbeatSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_heartbeat_reaches_an_external_receiver_and_stops_with_alertmanager(lab: Lab, tmp_path: Path) -> None:
    dep, session = lab
    mon = one_host(dep, "monitoring")
    with HeartbeatSink(dep.network.bridge_ip) as sink:
        LabState(dep.state_dir).set_extra_secrets({"heartbeatWebhookUrl": sink.url})
        log: list[str] = []
        result = apply(dep, _config(tmp_path, 3), log=log.append, session=session)
        # the secret goes to its file, then the bundle (template with the heartbeat receiver) is checked with
        # it and Alertmanager reloaded: a receiver edit reaches the running host
        assert f"{mon}: secret-alertmanager-heartbeat-url create" in result.ran, (result.ran, log)
        assert result.ran[-1] == _bundle_step(mon), (result.ran, log)
        # the URL is a secret: in its root-only file and the rendered config, never in the bundle's template
        found = out(dep, mon, f"grep -c {shlex.quote(sink.url)} {monitoring.ALERTMANAGER_TEMPLATE} || true")
        assert found.strip() == "0"

        wait_for("two heartbeats at the external receiver", lambda: len(sink.times) >= 2, timeout=240, interval=2)
        gaps = [b - a for a, b in zip(sink.times, sink.times[1:], strict=False)]
        assert all(20 <= g <= 120 for g in gaps), f"heartbeat intervals {gaps}"

        out(dep, mon, "sudo systemctl stop prometheus-alertmanager.service")
        try:
            stopped = time.monotonic()
            time.sleep(HEARTBEAT_SILENCE)
            late = [t - stopped for t in sink.times if t > stopped + 5]
            assert late == [], f"heartbeats kept arriving with Alertmanager stopped: {late}"
        finally:
            out(dep, mon, "sudo systemctl start prometheus-alertmanager.service")
        resumed = len(sink.times)
        wait_for("heartbeats again once Alertmanager is back", lambda: len(sink.times) > resumed, timeout=180,
                 interval=2)
