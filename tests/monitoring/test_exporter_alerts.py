"""The contract exporter's alert rules on the exporter's REAL output.

The real exporter (in-process `Exporter` + `serve_metrics` + `run_loop`, configured from the config that
cloud_init/exporter_deploy.py renders for the stack, with only the RPC URL, listen port, state dir and
interval replaced) reads the fake JSON-RPC node of tests/exporter; the real Prometheus scrapes it with the
rendered rules and the real Alertmanager routes to a webhook sink (mon_stack.py). The production `for`
holds of these rules (5-15 minutes) are shortened to 3 s; expressions, labels and routes are as rendered.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud_init import exporter_deploy, monitoring
from core.config import StackConfig
from exporter.collector import Exporter
from exporter.config import parse_config
from exporter.server import run_loop, serve_metrics

from ..exporter import conftest as fake_node  # the fake JSON-RPC node (one module, as pytest loaded it)
from .mon_stack import MonitoringStack
from .support import tool, variant

pytestmark = [pytest.mark.realtools, pytest.mark.slow]

FAST_FOR = {"ContractExporterFailing": "3s", "ContractExporterStale": "3s", "PoolPaused": "3s"}
EXPORTER_ALERTS = 'ALERTS{alertname=~"ContractExporterFailing|ContractExporterStale"}'




@dataclass
class RealExporter:
    exporter: Exporter
    server: Any
    stop: threading.Event
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_port

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.server.shutdown()


def start_exporter(cfg: StackConfig, rpc_url: str, state_dir: Path) -> RealExporter:
    data = exporter_deploy.exporter_config(cfg)  # the rendered config...
    data.pop("rpc_urls", None)
    data.update(rpc_url=rpc_url, listen_port=0, state_dir=str(state_dir),  # ...re-pointed at loopback
                interval_seconds=1, rpc_timeout_seconds=1, rpc_retries=0)
    config = parse_config(data)
    exporter = Exporter(config)
    server = serve_metrics(exporter, config.listen_address, config.listen_port)
    stop = threading.Event()
    thread = threading.Thread(target=run_loop, args=(exporter, config.interval_seconds, stop), daemon=True)
    thread.start()
    return RealExporter(exporter, server, stop, thread)


@dataclass
class Rig:
    node: Any  # FakeNode
    node_server: Any  # NodeServer
    exporter: RealExporter
    stack: MonitoringStack


@contextlib.contextmanager
def _rig(cfg: StackConfig, tmp: Path, rule_for: dict[str, str]) -> Iterator[Rig]:
    tool("prometheus")
    tool("prometheus-alertmanager")
    node = fake_node.FakeNode(namespace="qrl", prefix="Q")  # the testnet stack is gqrl
    fake_node.populate_pool(node)  # deposit pool paused() = true, stQRL paused() = false
    node_server = fake_node.NodeServer(node)
    exp = start_exporter(cfg, node_server.url, tmp / "exporter-state")
    try:
        with MonitoringStack(cfg, tmp / "mon", fast=True, targets={monitoring.JOB_CONTRACT_EXPORTER: exp.port},
                             rule_for=rule_for) as stack:
            assert stack.wait_until('quantapool_exporter_up{job="contract_exporter"}',
                                    lambda r: len(r) == 1 and r[0]["value"][1] == "1", timeout=30), \
                "the real exporter was not scraped healthy"
            yield Rig(node, node_server, exp, stack)
    finally:
        exp.close()
        node_server.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with _rig(variant(expect_paused=False), tmp_path_factory.mktemp("exp-alerts"), FAST_FOR) as r:
        yield r


def test_healthy_exporter_pages_nothing_and_paused_pool_alerts(rig: Rig) -> None:
    stack = rig.stack
    # The exporter's own view first: a healthy cycle with the deposit pool reported paused.
    assert stack.wait_until('quantapool_pool_paused{job="contract_exporter"}', lambda r: len(r) == 2, timeout=30)
    got = stack.sink.wait_for("PoolPaused", timeout=90, contract="deposit_pool")
    assert got is not None, "PoolPaused never reached the sink"
    note, alert = got
    assert note.receiver == "warning" and alert["labels"]["host"] == stack.cfg.monitoring_host().name
    assert alert["annotations"]["runbook_url"].endswith("/PoolPaused.md")
    # stQRL is not paused: no alert for it; and a healthy exporter is neither failing nor stale, although
    # both rules' 3 s hold has long passed by now (PoolPaused waited out the 30 s warning group_wait).
    assert stack.sink.alerts("PoolPaused") and all(
        a["labels"]["contract"] == "deposit_pool" for _, a in stack.sink.alerts("PoolPaused"))
    res = stack.query(EXPORTER_ALERTS)
    assert res["status"] == "success" and res["data"]["result"] == [], res
    age = stack.query('time() - quantapool_exporter_last_success_timestamp_seconds{job="contract_exporter"}')
    assert float(age["data"]["result"][0]["value"][1]) < 60
    assert stack.sink.alerts("ContractExporterFailing") == [] and stack.sink.alerts("ContractExporterStale") == []


def test_rpc_down_delivers_contract_exporter_failing(rig: Rig) -> None:
    stack = rig.stack
    t0 = time.time()
    rig.node_server.stop()  # the execution client goes away: connection refused
    got = stack.sink.wait_for("ContractExporterFailing", timeout=120, since=t0)
    assert got is not None, "ContractExporterFailing never reached the sink"
    note, alert = got
    assert note.receiver == "warning" and alert["labels"]["severity"] == "warning"
    assert alert["labels"]["job"] == "contract_exporter"
    # the exporter itself kept serving (up == 1 for the scrape), reporting its own failure
    res = stack.query('up{job="contract_exporter"}')
    assert res["data"]["result"][0]["value"][1] == "1"
    assert rig.exporter.exporter.registry.get_sample_value("quantapool_exporter_up") == 0.0


def test_expected_pause_does_not_alert(tmp_path: Path) -> None:
    cfg = variant(expect_paused=True)
    assert "PoolPaused" not in {r["alert"] for r in monitoring.alert_rules(cfg)}
    rule_for = {k: v for k, v in FAST_FOR.items() if k != "PoolPaused"}
    with _rig(cfg, tmp_path, rule_for) as rig:
        stack = rig.stack
        # paused() = 1 scraped for several evaluations, and nothing about the pool or the exporter fires
        assert stack.wait_until(
            'count_over_time(quantapool_pool_paused{job="contract_exporter", contract="deposit_pool"}[30s]) >= 6',
            lambda r: len(r) == 1, timeout=45)
        assert stack.query('quantapool_pool_paused{contract="deposit_pool"}')["data"]["result"][0]["value"][1] == "1"
        res = stack.query('ALERTS{alertname=~"PoolPaused|ContractExporter.*"}')
        assert res["status"] == "success" and res["data"]["result"] == [], res
