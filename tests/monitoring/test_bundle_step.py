"""The program delivers the monitoring configuration as the `monitoring-config` bundle step (issue 11).

What must hold: the step's stdin is the bundle's plain tar (every monitoring file, no secret), its trigger is
the tar's digest (re-run exactly when a file changes: a config edit that changes a rule re-runs it, an edit
that changes nothing of the monitoring host does not), it runs after every receiver secret (its check renders
the Alertmanager template with them) and before start-monitoring.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import tarfile

import pytest

from cloud_init import monitoring
from qpool.program import ProgramRun

COMMAND = "command:remote:Command"
STEP = "qp-testnet-monitoring-bundle-monitoring-config"
WEBHOOK = "https://discord.com/api/webhooks/1/monitoring-bundle-canary"


def _run(mutate=None) -> ProgramRun:  # type: ignore[no-untyped-def]
    from qpool.program import run_program
    from tests.conftest import stack_raw
    from tests.program.test_hosts import secrets

    raw = copy.deepcopy(stack_raw("testnet"))
    if mutate is not None:
        mutate(raw)
    return run_program("testnet", raw, {**secrets(), "discordWebhookUrl": WEBHOOK,
                                        "heartbeatWebhookUrl": "https://hc-ping.example/canary-uuid"})


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return _run()


def _step(run: ProgramRun):  # type: ignore[no-untyped-def]
    return next(c for c in run.of_type(COMMAND) if c.name == STEP)


def test_bundle_step_carries_every_monitoring_file_and_no_secret(run: ProgramRun) -> None:
    inputs = _step(run).plain_inputs()
    raw = base64.b64decode(inputs["stdin"])
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = {"/" + m.name for m in tar.getmembers() if not m.name.startswith(".qp-bundle")}
    for path in (monitoring.PROMETHEUS_CONFIG, monitoring.RULES_FILE, monitoring.ALERTMANAGER_TEMPLATE,
                 monitoring.GRAFANA_INI, monitoring.APPLY_SCRIPT, monitoring.MANIFEST):
        assert path in names, path
    assert WEBHOOK.encode() not in raw and b"canary-uuid" not in raw
    assert hashlib.sha256(inputs["stdin"].encode()).hexdigest() in inputs["triggers"]


def test_bundle_step_runs_after_the_receiver_secrets_and_before_start(run: ProgramRun) -> None:
    cmds = [c for c in run.of_type(COMMAND) if c.name.startswith("qp-testnet-monitoring-")]
    order = [c.name.removeprefix("qp-testnet-monitoring-") for c in cmds]
    assert order.index("bundle-monitoring-config") + 1 == order.index("start-monitoring"), order
    step = _step(run)
    by_name = {c.name: c for c in cmds}
    for secret in ("alertmanager-discord-webhook", "alertmanager-heartbeat-url"):
        assert by_name[f"qp-testnet-monitoring-secret-{secret}"].urn in step.dependencies, secret


def test_rule_edit_changes_only_the_monitoring_bundle_step(run: ProgramRun) -> None:
    def keys(raw: dict) -> None:
        raw["alerting"]["expectedActiveKeys"] = {"p1": 2}

    edited = _run(keys)
    old = {c.name: c.plain_inputs() for c in run.of_type(COMMAND)}
    new = {c.name: c.plain_inputs() for c in edited.of_type(COMMAND)}
    changed = sorted(n for n in new if new[n].get("triggers") != old.get(n, {}).get("triggers"))
    assert changed == [STEP]
