"""The monitoring-config bundle on a fake host root with the REAL Prometheus, Alertmanager, promtool and amtool.

The bundle goes through the real bundle applier (cloud_init/bundles.py) exactly as `<host>-bundle-monitoring-
config` runs it; only `systemctl` is a stand-in (it sends SIGHUP to the test's Prometheus / Alertmanager).
What must hold (issue 11): a valid change is installed and reloaded, and the reload is verified; a bad rule,
a bad Alertmanager template or a missing receiver secret is refused on the STAGED copy with one line naming
the file, nothing is installed and the running services keep their rules; a reload that fails puts the
last good files back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cloud_init import HostFile, monitoring
from cloud_init.bundles import Bundle
from core.config import StackConfig
from tests.bundles.support import FakeHost, fake_host

from .mon_stack import ALERTMANAGER_BIN, PROMETHEUS_BIN, free_port
from .support import ALL_SECRETS, tool, variant

pytestmark = pytest.mark.realtools

SCRIPT = monitoring.SCRIPTS_SRC / "qp-monitoring-config.py"
FAKE_SYSTEMCTL = r"""#!/bin/sh
echo "systemctl $*" >> "$QP_FAKE_LOG"
case "$1" in
  is-active) [ -f "$QP_FAKE_PIDS/$3" ]; exit $? ;;
  daemon-reload) exit 0 ;;
  reload|restart)
    if [ -n "$QP_FAKE_FAIL" ] && [ "$QP_FAKE_FAIL" = "$1 $2" ]; then echo "Job for $2 failed." >&2; exit 1; fi
    [ -f "$QP_FAKE_PIDS/$2" ] || exit 5
    kill -HUP "$(cat "$QP_FAKE_PIDS/$2")" ;;
esac
exit 0
"""
SECRETS = {  # loopback only: no test ever reaches a real receiver
    "alertmanager-discord-webhook": "http://127.0.0.1:9/discord-secret-value",
    "alertmanager-pagerduty-key": "pagerduty-secret-value",
    "alertmanager-heartbeat-url": "http://127.0.0.1:9/heartbeat-secret-value",
}


def stack(keys: int = 2) -> StackConfig:
    cfg = variant(secrets=frozenset({"discordWebhookUrl", "pagerdutyRoutingKey", "heartbeatWebhookUrl"}))
    pairs = {p.name: keys for p in cfg.validator_pairs}
    return cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"expected_active_keys": pairs})})


class Services:
    """The real Prometheus and Alertmanager reading their files from the fake host root, on loopback ports."""

    def __init__(self, host: FakeHost, work: Path) -> None:
        self.host, self.work = host, work
        self.prom_port, self.am_port = free_port(), free_port()
        self.pids = work / "pids"
        self.pids.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        # what Debian's packages run with before the bundle lands: their own minimal configs
        prom_cfg = self.host.file(monitoring.PROMETHEUS_CONFIG)
        prom_cfg.parent.mkdir(parents=True)
        prom_cfg.write_text("global:\n  scrape_interval: 15s\n")
        am_cfg = self.host.file(monitoring.ALERTMANAGER_CONFIG)
        am_cfg.write_text("route:\n  receiver: debian\nreceivers:\n- name: debian\n")
        self._spawn("prometheus.service", [PROMETHEUS_BIN, f"--config.file={prom_cfg}",
                                           f"--storage.tsdb.path={self.work / 'tsdb'}",
                                           f"--web.listen-address=127.0.0.1:{self.prom_port}"])
        self._spawn("prometheus-alertmanager.service", [
            ALERTMANAGER_BIN, f"--config.file={am_cfg}", f"--storage.path={self.work / 'am'}",
            f"--web.listen-address=127.0.0.1:{self.am_port}", "--cluster.listen-address="])
        for port in (self.prom_port, self.am_port):
            wait_http(f"http://127.0.0.1:{port}/-/ready")

    def _spawn(self, unit: str, argv: list[str]) -> None:
        log = open(self.work / f"{unit}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        (self.pids / unit).write_text(str(proc.pid))

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def rules(self) -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.prom_port}/api/v1/rules", timeout=10) as r:
            return [rule for g in json.loads(r.read())["data"]["groups"] for rule in g["rules"]]

    def receivers(self) -> list[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.am_port}/api/v2/status", timeout=10) as r:
            return [rc["name"] for rc in yaml.safe_load(json.loads(r.read())["config"]["original"])["receivers"]]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    h = fake_host(tmp_path)
    (h.bin / "systemctl").write_text(FAKE_SYSTEMCTL)
    sec = h.file("/etc/quantapool/secrets")
    sec.mkdir(parents=True)
    for name, value in SECRETS.items():
        (sec / name).write_text(value + "\n")
    tool("promtool")
    tool("amtool")
    return h


@pytest.fixture
def services(host: FakeHost, tmp_path: Path) -> Iterator[Services]:
    if not (Path(PROMETHEUS_BIN).exists() and Path(ALERTMANAGER_BIN).exists()):
        pytest.skip("SKIPPED LOUDLY: Debian's prometheus / prometheus-alertmanager are not installed")
    work = tmp_path / "work"
    work.mkdir()
    svc = Services(host, work)
    try:
        svc.start()
        yield svc
    finally:
        svc.stop()


def for_test(cfg: StackConfig, svc: Services, rules: str | None = None, template: str | None = None) -> Bundle:
    """The rendered bundle, fitted to the fake host: every scrape target and the alertmanager address on a
    closed loopback port (no traffic leaves the machine), rule_files relative to prometheus.yml (so the
    live Prometheus reads the fake root), metrics URLs on the test's ports. `rules`/`template` replace the
    rendered rule file / Alertmanager template (a deliberately broken edit)."""
    files = []
    for f in monitoring.monitoring_files(cfg):
        content = f.content
        if f.path == monitoring.PROMETHEUS_CONFIG:
            doc = yaml.safe_load(content)
            for job in doc["scrape_configs"]:
                for sc in job["static_configs"]:
                    sc["targets"] = ["127.0.0.1:1"]
            doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = ["127.0.0.1:1"]
            assert doc["rule_files"] == [f"{monitoring.RULES_DIR}/*.yml"]
            doc["rule_files"] = ["rules/*.yml"]
            content = yaml.safe_dump(doc, sort_keys=False)
        elif f.path == monitoring.RULES_FILE and rules is not None:
            content = rules
        elif f.path == monitoring.ALERTMANAGER_TEMPLATE and template is not None:
            content = template
        elif f.path == monitoring.MANIFEST:
            doc = json.loads(content)
            doc["prometheus"]["metrics_url"] = f"http://127.0.0.1:{svc.prom_port}/metrics"
            doc["alertmanager"]["metrics_url"] = f"http://127.0.0.1:{svc.am_port}/metrics"
            doc["alertmanager"]["group"] = ""  # the test runs as any user
            content = json.dumps(doc)
        files.append(HostFile(f.path, content, f.mode, f.owner))
    return dataclasses.replace(monitoring.monitoring_bundle(cfg), files=tuple(files))


def apply(host: FakeHost, bundle: Bundle, svc: Services, **extra: str) -> subprocess.CompletedProcess[str]:
    return host.apply(bundle, QP_FAKE_PIDS=str(svc.pids), **extra)


def hups(host: FakeHost) -> list[str]:
    return [c for c in host.calls() if c.startswith(("systemctl reload", "systemctl restart"))]


def expected_keys_exprs(svc: Services) -> set[str]:
    return {r["query"] for r in svc.rules() if r.get("name") == monitoring.EXPECTED_KEYS_METRIC}


def test_first_apply_installs_reloads_and_verifies(host: FakeHost, services: Services) -> None:
    cfg = stack()
    res = apply(host, for_test(cfg, services), services)
    assert res.returncode == 0, res.stderr
    # flags and drop-in are new: restarts (the stand-in systemctl turns them into SIGHUP); Grafana is not
    # running yet (first boot: qp-start-monitoring starts it), so it is left alone
    assert hups(host) == ["systemctl restart prometheus.service", "systemctl restart prometheus-alertmanager.service"]
    assert "systemctl is-active --quiet grafana-server.service" in host.calls()
    alert_names = {r["name"] for r in services.rules() if r["type"] == "alerting"}
    assert {"ValidatorRunningOnTwoHosts", "DeadMansSwitch"} <= alert_names
    assert expected_keys_exprs(services) == {"vector(2)"}
    # alertmanager.yml was rendered from the template with the secrets, and is what Alertmanager runs
    assert set(services.receivers()) == {"null", "heartbeat", "critical", "warning"}
    assert "heartbeat-secret-value" in host.file(monitoring.ALERTMANAGER_CONFIG).read_text()
    assert "secret-value" not in res.stdout + res.stderr
    for name in monitoring.dashboards(cfg):
        assert json.loads(host.file(f"{monitoring.GRAFANA_DASHBOARDS_DIR}/{name}").read_text())["panels"]


def test_changed_rule_is_reloaded_and_unchanged_apply_touches_nothing(host: FakeHost, services: Services) -> None:
    assert apply(host, for_test(stack(2), services), services).returncode == 0
    before = len(hups(host))
    res = apply(host, for_test(stack(3), services), services)
    assert res.returncode == 0, res.stderr
    assert f"changed {monitoring.RULES_FILE}" in res.stdout
    assert hups(host)[before:] == ["systemctl reload prometheus.service"]
    assert expected_keys_exprs(services) == {"vector(3)"}
    again = apply(host, for_test(stack(3), services), services)
    assert again.returncode == 0 and "no change" in again.stdout, again.stdout
    assert len(hups(host)) == before + 1


def test_invalid_rule_is_refused_and_old_rules_keep_running(host: FakeHost, services: Services) -> None:
    cfg = stack(2)
    assert apply(host, for_test(cfg, services), services).returncode == 0
    live = host.file(monitoring.RULES_FILE).read_text()
    before = len(hups(host))
    doc = yaml.safe_load(monitoring.monitoring_bundle(stack(3)).files[2].content)
    doc["groups"][0]["rules"][0]["expr"] = "sum(rate(up[5m]) by"  # a broken edit
    res = apply(host, for_test(stack(3), services, rules=yaml.safe_dump(doc)), services)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert monitoring.RULES_FILE in lines[0] and "promtool check rules" in lines[0], lines[0]
    assert "parse error" in lines[0] or "unexpected" in lines[0], lines[0]
    assert "staged" not in lines[0]  # host paths, not the staging dir
    assert host.file(monitoring.RULES_FILE).read_text() == live
    assert hups(host)[before:] == []
    assert expected_keys_exprs(services) == {"vector(2)"}


def test_invalid_alertmanager_template_is_refused(host: FakeHost, services: Services) -> None:
    cfg = stack()
    assert apply(host, for_test(cfg, services), services).returncode == 0
    live = host.file(monitoring.ALERTMANAGER_TEMPLATE).read_text()
    doc = yaml.safe_load(live)
    doc["route"]["routes"][1]["receiver"] = "nobody"  # a route to a receiver that does not exist
    res = apply(host, for_test(stack(3), services, template=yaml.safe_dump(doc)), services)
    assert res.returncode == 1, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert monitoring.ALERTMANAGER_TEMPLATE in line and "amtool check-config" in line and "nobody" in line, line
    assert host.file(monitoring.ALERTMANAGER_TEMPLATE).read_text() == live
    assert expected_keys_exprs(services) == {"vector(2)"}  # the valid rule change in the same bundle waits too


def test_missing_receiver_secret_is_refused_without_leaking(host: FakeHost, services: Services) -> None:
    host.file("/etc/quantapool/secrets/alertmanager-heartbeat-url").unlink()
    res = apply(host, for_test(stack(), services), services)
    assert res.returncode == 1, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "alertmanager-heartbeat-url" in line and "secret not installed" in line, line
    assert "secret-value" not in res.stdout + res.stderr
    assert not host.file(monitoring.RULES_FILE).exists()


def test_failed_reload_puts_the_last_good_files_back(host: FakeHost, services: Services) -> None:
    assert apply(host, for_test(stack(2), services), services).returncode == 0
    good = host.file(monitoring.RULES_FILE).read_text()
    res = apply(host, for_test(stack(3), services), services, QP_FAKE_FAIL="reload prometheus.service")
    assert res.returncode == 1, res.stderr
    assert "prometheus.service: systemctl reload failed" in res.stderr and "restored" in res.stderr, res.stderr
    assert host.file(monitoring.RULES_FILE).read_text() == good
    assert expected_keys_exprs(services) == {"vector(2)"}


def test_script_manifest_path_and_imports_match_the_program() -> None:
    import ast

    text = SCRIPT.read_text()
    assert f'MANIFEST = "{monitoring.MANIFEST.lstrip("/")}"' in text
    tree = ast.parse(text)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__", "argparse", "contextlib", "json", "os", "re", "shutil", "subprocess", "sys",
                       "tempfile", "time", "urllib", "pathlib", "yaml"} == set()
    assert ALL_SECRETS  # the shared secret set is what support.variant() renders by default


@pytest.mark.parametrize("stack_name", ["testnet", "mainnet"])
def test_every_rendered_bundle_passes_its_own_check(stack_name: str, tmp_path: Path) -> None:
    """The check on the staged copies accepts what the program renders, with every receiver configured
    (telegram included) and their secret files installed, on both stacks."""
    cfg = variant(stack_name, secrets=ALL_SECRETS | {"heartbeatWebhookUrl"})
    staged, root = tmp_path / "staged", tmp_path / "root"
    for f in monitoring.monitoring_bundle(cfg).files:
        path = staged / f.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.content)
    sec = root / "etc/quantapool/secrets"
    sec.mkdir(parents=True)
    for name in ("alertmanager-discord-webhook", "alertmanager-telegram-token", "alertmanager-pagerduty-key",
                 "alertmanager-heartbeat-url"):
        (sec / name).write_text("http://127.0.0.1:9/x\n" if "token" not in name else "123456:fake\n")
    tool("promtool")
    tool("amtool")
    res = subprocess.run(["python3", str(SCRIPT), "check", str(staged)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "QP_BUNDLE_ROOT": str(root)})
    assert res.returncode == 0, res.stderr
    assert "passes promtool and amtool" in res.stdout
