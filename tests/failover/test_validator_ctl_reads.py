"""The qp-validator-ctl subcommands that replaced qpool's shell over sudo (issue 13, two identities): the deploy
identity may run only qp-* tools as root, so listing and reading replicas, converting a raw copy, reading
Prometheus and sending the failover alert are subcommands that take names and numbers, never paths or shell.

The module is loaded from its file with a temporary config (as test_validator_ctl_safety.py does);
Prometheus and Alertmanager are a loopback HTTP server that records what it was asked.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .test_validator_ctl_safety import CTL_FILE, ship


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes]] = []

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, b""))
        self._answer(json.dumps({"status": "success", "data": {"result": [{"values": [[1.5, "1"]]}]}}).encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, body))
        self._answer(b"")

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: str) -> ModuleType:
    config = {"replica_dir": str(tmp_path / "replicas"), "prometheus_url": server, "alertmanager_url": server,
              "prometheus_validator_job": "validator", "validator_user": "nobody",
              "backup_senders": {name: {"address": "10.0.0.1", "public_key": "ssh-ed25519 AAAA"}
                                 for name in ("qp-t-p1-primary", "qp-t-p1-backup", "qp-t-p2-primary")}}
    path = tmp_path / "validator-ctl.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("QP_CTL_CONFIG", str(path))
    spec = importlib.util.spec_from_file_location("qp_validator_ctl_reads", CTL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.CFG = module.load_config()
    monkeypatch.setitem(sys.modules, "qp_validator_ctl_reads", module)
    return module


def _ship(replicas: Path, name: str, data: bytes, age: float) -> Path:
    """A copy as the receiver stores it: in the directory of its sender (`<replica dir>/from/<sender>/`)."""
    return ship(replicas / "from" / name.split("--")[0], name, data, age)


def test_list_replicas_names_only_the_asked_senders_newest_first(ctl: ModuleType, tmp_path: Path) -> None:
    d = tmp_path / "replicas"
    _ship(d, "qp-t-p1-primary--20260101T000000000000Z.db", b"a", 900)
    _ship(d, "qp-t-p1-backup--20260101T000100000000Z.db", b"b", 300)
    _ship(d, "qp-t-p2-primary--20260101T000200000000Z.db", b"c", 10)  # another pair
    ship(d, "qp-t-p1-primary--20260101T000300000000Z.db", b"flat", 5)  # old flat layout: not listed
    _ship(d, "qp-t-p9-primary--20260101T000400000000Z.db", b"p9", 5)  # not a sender here: never listed
    assert ctl.list_replicas(["qp-t-p9-primary"])["replicas"] == []
    (d / "from" / "qp-t-p1-backup" / "qp-t-p1-backup--20260101T000100000000Z.db.sha256").unlink()
    listed = ctl.list_replicas(["qp-t-p1-primary", "qp-t-p1-backup"])["replicas"]
    assert [r["name"] for r in listed] == ["qp-t-p1-backup--20260101T000100000000Z.db",
                                           "qp-t-p1-primary--20260101T000000000000Z.db"]
    assert [r["owner"] for r in listed] == ["qp-t-p1-backup", "qp-t-p1-primary"]
    assert listed[0]["sha256"] is None and listed[1]["sha256"] == hashlib.sha256(b"a").hexdigest()
    for bad in ("*", "../x", "qp-t-p1-primary/..", "", ".."):
        with pytest.raises(ctl.Refused):
            ctl.list_replicas([bad])


def test_read_replica_takes_a_name_in_the_replica_directory_only(ctl: ModuleType, tmp_path: Path) -> None:
    d = tmp_path / "replicas"
    _ship(d, "qp-t-p1-primary--20260101T000000000000Z.db", b"raw db", 10)
    _ship(d, "qp-t-p2-primary--20260101T000000000000Z.db", b"p2 db", 10)
    _ship(d, "qp-t-p9-primary--20260101T000000000000Z.db", b"p9 db", 10)  # not a sender here
    (tmp_path / "secret.db").write_bytes(b"not a replica")
    (d / "from" / "qp-t-p1-primary" / "qp-t-p1-primary--link.db").symlink_to(tmp_path / "secret.db")
    assert ctl.read_replica("qp-t-p1-primary--20260101T000000000000Z.db") == b"raw db"
    for bad in ("../secret.db", str(tmp_path / "secret.db"), "qp-t-p1-primary--link.db",
                "qp-t-p1-primary--20260101T000000000000Z.db.sha256", "missing--1Z.db",
                "qp-t-p1-primary--../qp-t-p2-primary/qp-t-p2-primary--20260101T000000000000Z.db",
                "qp-t-p1-primary--..db", "qp-t-p9-primary--20260101T000000000000Z.db"):
        with pytest.raises(ctl.Refused, match="is not a replicated copy"):
            ctl.read_replica(bad)


def test_convert_replica_checks_the_sha256_before_anything(ctl: ModuleType) -> None:
    with pytest.raises(ctl.Refused, match="checksum mismatch on arrival"):
        ctl.convert_replica(b"raw db", "00" * 32)


def test_prometheus_samples_builds_the_query_from_a_host_name(ctl: ModuleType) -> None:
    answer = ctl.prometheus_samples("qp-t-p1-primary", 600)
    assert answer["response"]["data"]["result"][0]["values"] == [[1.5, "1"]] and answer["now"] > 0
    [(method, path, _)] = _Recorder.seen
    query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)["query"]
    assert method == "GET" and query == ['up{job="validator",host="qp-t-p1-primary"}[600s]']
    for host, window in (('x"}or{job=~".+', 600), ("qp-t-p1-primary", 0), ("qp-t-p1-primary", 10**6)):
        with pytest.raises(ctl.Refused):
            ctl.prometheus_samples(host, window)


def test_alert_posts_one_failover_alert(ctl: ModuleType) -> None:
    assert ctl.send_alert("run-1", "moved p1 to the backup")["sent"] is True
    [(method, path, body)] = _Recorder.seen
    [alert] = json.loads(body)
    assert (method, path) == ("POST", "/api/v2/alerts")
    assert alert["labels"] == {"alertname": "QpoolFailoverCompleted", "severity": "warning", "run_id": "run-1"}
    assert alert["annotations"] == {"summary": "moved p1 to the backup"}
