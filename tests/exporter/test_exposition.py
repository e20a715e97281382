"""What Prometheus sees: promtool-clean exposition, documented names, the HTTP endpoint, the process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from exporter.metrics import METRIC_NAMES
from exporter.server import run_loop, serve_metrics

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def family_names(exporter) -> set[str]:
    names = set()
    for metric in exporter.registry.collect():
        names.add(f"{metric.name}_total" if metric.type == "counter" else metric.name)
    return names


def fetch(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return resp.read().decode()


@pytest.mark.realtools
@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool missing: apt-get install prometheus")
@pytest.mark.parametrize("healthy", [True, False])
def test_exposition_passes_promtool(make_exporter, node, pool_values, healthy):
    node.head = 300
    node.add_log("deposit_pool", "Paused(address)", 10, 0, data=b"\0" * 32)
    exporter = make_exporter()
    exporter.collect_once()
    if not healthy:
        node.method_faults["call"] = "error"
        exporter.collect_once()
    text = generate_latest(exporter.registry)
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.decode().strip() == "" and proc.stderr.decode().strip() == ""


def test_every_exposed_family_is_a_known_name(make_exporter, node, pool_values):
    exporter = make_exporter()
    exporter.collect_once()
    exposed = family_names(exporter)
    assert exposed <= METRIC_NAMES, exposed - METRIC_NAMES
    # After one full healthy cycle, every name is present (shape mismatches: none, so no samples).
    assert METRIC_NAMES - exposed == set()


def test_metrics_md_documents_exactly_metric_names():
    text = (REPO / "exporter" / "METRICS.md").read_text()
    documented = set(re.findall(r"^\| `(quantapool_[a-z0-9_]+)` \|", text, flags=re.MULTILINE))
    assert documented == METRIC_NAMES, (documented ^ METRIC_NAMES)


def test_required_names_exist():
    required = {
        "quantapool_exporter_up", "quantapool_exporter_last_success_timestamp_seconds",
        "quantapool_exporter_call_success", "quantapool_exporter_rpc_errors_total",
        "quantapool_exporter_rpc_latency_seconds", "quantapool_chain_block_height", "quantapool_pool_paused",
        "quantapool_stqrl_total_pooled_qrl", "quantapool_pool_exchange_rate", "quantapool_pool_balance_qrl",
        "quantapool_validators_active", "quantapool_events_total", "quantapool_exporter_event_cursor_block",
    }
    assert required <= METRIC_NAMES


def test_http_endpoint_and_loop(make_exporter, node, pool_values):
    exporter = make_exporter()  # interval_seconds (the cycle budget) stays 30 s; the loop runs faster
    server = serve_metrics(exporter, "127.0.0.1", 0)
    try:
        stop = threading.Event()
        assert run_loop(exporter, 0.05, stop, max_cycles=2) == 2
        body = fetch(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert "quantapool_exporter_up 1.0" in body
    assert 'quantapool_pool_paused{contract="deposit_pool"} 1.0' in body
    assert "python_gc_objects_collected_total" not in body  # private registry, not the global one


def test_loop_survives_a_crashing_cycle(make_exporter, node, pool_values, monkeypatch):
    exporter = make_exporter()
    exporter.collect_once()
    monkeypatch.setattr(exporter, "collect_once", lambda: 1 / 0)
    assert run_loop(exporter, 0.01, threading.Event(), max_cycles=2) == 2
    assert exporter.registry.get_sample_value("quantapool_exporter_up") == 0.0


def test_process_serves_health_while_rpc_is_down_and_stops_on_sigterm(
    tmp_path, free_port, start_node, config_factory, profile, node, pool_values
):
    """End to end: `python -m exporter`, RPC unreachable at first, then up; SIGTERM exits 0."""
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        listen_port = sock.getsockname()[1]
    config = config_factory(profile, f"http://127.0.0.1:{free_port}", tmp_path / "state",
                            listen_port=listen_port, interval_seconds=1.0)
    path = tmp_path / "exporter.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(path), "--log-level", "WARNING"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{listen_port}/metrics"
    try:
        body = wait_for(url, "quantapool_exporter_up 0.0")
        assert "quantapool_stqrl_total_pooled_qrl" not in body
        start_node(port=free_port, node=node)
        body = wait_for(url, "quantapool_exporter_up 1.0")
        assert "quantapool_stqrl_total_pooled_qrl 123456.5" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=15)
        proc.stdout.close()
        proc.stderr.close()


def wait_for(url: str, needle: str, attempts: int = 150) -> str:
    body = ""
    for _ in range(attempts):  # bounded: 150 x 0.1 s
        try:
            body = fetch(url)
        except OSError:
            body = ""
        if needle in body:
            return body
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared at {url}; last body:\n{body[:2000]}")


def test_requirements_pin_the_tested_versions():
    pins = {}
    for line in (REPO / "exporter" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name)] = pinned
    for module in ("prometheus_client", "eth_abi", "eth-hash", "pycryptodome", "PyYAML", "pydantic"):
        assert module in pins, module
    for name, pinned in pins.items():
        assert version(name) == pinned, name
