"""The node exporter metric names the rules and dashboards use exist in Debian's node exporter (1.5)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from cloud_init import monitoring

from .mon_stack import free_port
from .support import tool

pytestmark = pytest.mark.realtools


def test_node_metrics_exist_in_the_real_node_exporter(tmp_path: Path) -> None:
    binary = tool("prometheus-node-exporter")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    # what the key hosts' textfile collector exports (written by the lock and backup tooling)
    (textfiles / "quantapool.prom").write_text(
        "quantapool_validator_locked 1\nquantapool_slashing_protection_backup_timestamp_seconds 1.7e9\n")
    port = free_port()
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}",
                             f"--collector.textfile.directory={textfiles}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    body = resp.read().decode()
            except OSError:
                time.sleep(0.2)
        assert body, "node exporter did not answer"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    names = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and not line.startswith("#")}
    assert monitoring.NODE_METRICS - names == set()
    assert names >= monitoring.TEXTFILE_METRICS
