"""Issue 12 on the host side (qp-validator-ctl): the newest INTACT replica, corrupt ones moved aside; errors
carry their cause in one line; the epoch gate also waits for the beacon node's slot clock.

The module is loaded from its file with a temporary config, as tests/failover/test_validator_ctl_units.py
does (the host loads /etc/quantapool/validator-ctl.json).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

CTL_FILE = Path(__file__).resolve().parents[2] / "cloud_init" / "files" / "qp_validator_ctl.py"


@pytest.fixture
def ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    config = {"replica_dir": str(tmp_path / "replicas"), "validator_datadir": str(tmp_path / "validator"),
              "beacon_rest": "http://127.0.0.1:1/eth/v1", "lock_file": str(tmp_path / "LOCKED"),
              "backup_senders": {"h-primary": {"address": "10.0.0.11", "public_key": "ssh-ed25519 AAAA"}}}
    path = tmp_path / "validator-ctl.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("QP_CTL_CONFIG", str(path))
    spec = importlib.util.spec_from_file_location("qp_validator_ctl_safety", CTL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.CFG = module.load_config()
    monkeypatch.setitem(sys.modules, "qp_validator_ctl_safety", module)
    return module


def ship(directory: Path, name: str, data: bytes, age: float) -> Path:
    """A replica as receive-backup stores it (file + sha256 sidecar), `age` seconds old."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    (directory / f"{name}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_truncated_newest_replica_is_moved_aside_and_the_previous_used(ctl: ModuleType, tmp_path: Path) -> None:
    d = tmp_path / "replicas" / "from" / "h-primary"  # the sender's own directory
    ship(d, "h-primary--A.db", b"oldest" * 100, 900)
    ship(d, "h-primary--B.db", b"middle" * 100, 600)
    newest = ship(d, "h-primary--C.db", b"newest" * 100, 300)
    newest.write_bytes(newest.read_bytes()[:50])  # truncated after its checksum was written
    os.utime(newest, (time.time() - 300, time.time() - 300))
    doc = ctl.select_replica()
    assert doc["name"] == "h-primary--B.db" and doc["source"] == "h-primary"
    assert 590 < doc["age_seconds"] < 700
    assert [s["name"] for s in doc["skipped"]] == ["h-primary--C.db"]
    assert "fails its checksum" in doc["skipped"][0]["reason"]
    assert not newest.exists() and (d / "quarantine" / "h-primary--C.db").exists()
    assert (d / "quarantine" / "h-primary--C.db.sha256").exists()
    # A re-run is not a dead end: the same intact copy, nothing more to move.
    again = ctl.select_replica()
    assert again["name"] == "h-primary--B.db" and again["skipped"] == []
    # export-replica refuses the corrupt file by itself as well (if someone passes it by path).
    with pytest.raises(ctl.Refused, match="checksum"):
        ctl.export_replica(str(_corrupt(ship(d, "h-primary--D.db", b"x" * 10, 1))))


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"y" * 10)
    return path


def test_replica_without_checksum_is_not_chosen(ctl: ModuleType, tmp_path: Path) -> None:
    d = tmp_path / "replicas" / "from" / "h-primary"  # the sender's own directory
    ship(d, "h-primary--A.db", b"good", 600)
    lone = d / "h-primary--B.db"
    lone.write_bytes(b"no sidecar")
    doc = ctl.select_replica()
    assert doc["name"] == "h-primary--A.db"
    assert doc["skipped"][0]["reason"] == "no checksum file"


def test_all_replicas_corrupt_returns_none_with_reasons(ctl: ModuleType, tmp_path: Path) -> None:
    d = tmp_path / "replicas" / "from" / "h-primary"  # the sender's own directory
    _corrupt(ship(d, "h-primary--A.db", b"good", 600))
    doc = ctl.select_replica()
    assert doc["path"] is None and len(doc["skipped"]) == 1
    assert ctl.select_replica() == {"path": None, "skipped": []}


def test_no_replica_dir(ctl: ModuleType) -> None:
    assert ctl.select_replica() == {"path": None, "skipped": []}


# Real-shaped stderr of a validator import that hit a full disk (the stand-in's SQLite rollback).
ENOSPC_TRACEBACK = b"""Traceback (most recent call last):
  File "/usr/lib/quantapool/validator/slashing_db.py", line 142, in import_interchange
    self._conn.executemany("INSERT OR IGNORE INTO attestations VALUES(?,?,?,?)", atts)
sqlite3.OperationalError: database or disk is full

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/usr/lib/quantapool/validator/slashing_db.py", line 147, in import_interchange
    self._conn.execute("ROLLBACK")
sqlite3.OperationalError: cannot rollback - no transaction is active
"""


def test_disk_full_import_error_names_the_cause_in_one_line(ctl: ModuleType, tmp_path: Path) -> None:
    msg = ctl._client_cause("import", ENOSPC_TRACEBACK, str(tmp_path))
    assert "\n" not in msg and msg.startswith("import failed: disk full")
    assert "free space" in msg and "rollback" not in msg


def test_permission_and_other_errors_are_one_line(ctl: ModuleType, tmp_path: Path) -> None:
    perm = ctl._client_cause("export", b"open /var/lib/x/validator.db: permission denied\n", str(tmp_path))
    assert perm.startswith("export failed: permission denied") and "\n" not in perm
    other = ctl._client_cause("import", b"Traceback (most recent call last):\n  File x\nValueError: bad root\n",
                              str(tmp_path))
    assert other == "import failed: ValueError: bad root"


def test_oserror_reaches_the_operator_as_one_line_json(ctl: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def full(_data: bytes, _sha: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/qp-import-x/slashing_protection.json")

    monkeypatch.setattr(ctl, "import_slashing", full)
    monkeypatch.setattr(ctl, "load_config", lambda: ctl.CFG)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{}")))
    assert ctl.main(["import-slashing", "--sha256", "0" * 64]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"].startswith("import-slashing: disk full on /tmp/qp-import-x")


def test_gate_epoch_on_the_host_is_the_earlier_of_its_clock_and_the_beacon_slot_clock(
        ctl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    genesis = time.time() - 10 * 8  # 2 s slots, 4 per epoch: epoch 10 by this host's clock
    monkeypatch.setattr(ctl, "chain_clock", lambda: {"genesis_time": genesis, "seconds_per_slot": 2.0,
                                                     "slots_per_epoch": 4})
    monkeypatch.setattr(ctl, "http_json", lambda _u: (200, {"data": {"head_slot": "30", "sync_distance": "2"}}))
    assert ctl.current_epoch() == 8  # beacon slot 32 -> epoch 8: behind the host clock's epoch 10
    monkeypatch.setattr(ctl, "http_json", lambda _u: (200, {"data": {"head_slot": "60", "sync_distance": "0"}}))
    assert ctl.current_epoch() == 10
    monkeypatch.setattr(ctl, "http_json", lambda _u: (0, None))  # beacon silent: the host clock alone
    assert ctl.current_epoch() == 10


# -- probe-peer: the target's private-network witness (issue 12 item 6) ------------------------------------

def test_probe_peer_listening_port_is_alive(ctl: ModuleType) -> None:
    import socket

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        result = ctl.probe_peer("127.0.0.1", [port], 1.0, 1)
    assert result["verdict"] == "alive" and result["answered"] == [f"{port}: open"]


def test_probe_peer_refused_port_still_proves_a_running_kernel(ctl: ModuleType) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on: the kernel answers with a reset
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = ctl.probe_peer("127.0.0.1", [port], 1.0, 1)
    assert result["verdict"] == "alive" and result["answered"] == [f"{port}: refused"]


def test_probe_peer_silent_only_when_nothing_answers_in_every_round(ctl: ModuleType,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = iter([TimeoutError(), OSError(errno.EHOSTUNREACH, "No route to host"), TimeoutError(),
                     TimeoutError()])

    def connect(_addr: tuple[str, int], timeout: float) -> None:
        raise next(outcomes)

    monkeypatch.setattr(ctl.socket, "create_connection", connect)
    monkeypatch.setattr(ctl.time, "sleep", lambda _s: None)
    result = ctl.probe_peer("10.0.0.11", [22, 8081], 1.0, 2)
    assert result["verdict"] == "silent"
    assert result["rounds"] == [{"22": "timeout", "8081": "unreachable"}, {"22": "timeout", "8081": "timeout"}]


# -- wallet public keys in `status` (issue 12 item 2) ---------------------------------------------------------

LISTING = ("(keymanager kind) \x1b[1;92mlocal wallet\x1b[0m\n\nShowing \x1b[93m2\x1b[0m validator accounts\n"
           "\n\x1b[1;94mAccount 0\x1b[0m | \x1b[1;92mx\x1b[0m\n\x1b[1;95m[validating public key]\x1b[0m 0xAB12\n"
           "\n\x1b[1;94mAccount 1\x1b[0m | \x1b[1;92my\x1b[0m\n\x1b[1;95m[validating public key]\x1b[0m 0xcd34\n")


def test_accounts_list_parsed_through_its_colours(ctl: ModuleType) -> None:
    assert ctl.parse_accounts_list(LISTING) == ["0xab12", "0xcd34"]
    assert ctl.parse_accounts_list("Showing 0 validator accounts\n") == []


def test_wallet_pubkeys_cached_by_wallet_digest(ctl: ModuleType, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    wallet = tmp_path / "wallet"
    ctl.CFG.update(wallet_dir=str(wallet), wallet_password_file=str(tmp_path / "pw"), validator_bin="/bin/validator")
    monkeypatch.setattr(ctl, "WALLET_CACHE", tmp_path / "run" / "wallet-pubkeys.json")
    assert ctl.wallet_pubkeys() == {"pubkeys": []}, "no wallet file: no keys (not unknown)"
    (wallet / "direct" / "accounts").mkdir(parents=True)
    (wallet / "direct" / "accounts" / "all-accounts.keystore.json").write_text("{}")
    calls = []

    def fake(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, LISTING.encode(), b"")

    monkeypatch.setattr(ctl, "_as_validator", fake)
    assert ctl.wallet_pubkeys() == {"pubkeys": ["0xab12", "0xcd34"]}
    assert ctl.wallet_pubkeys() == {"pubkeys": ["0xab12", "0xcd34"]}
    assert len(calls) == 1 and calls[0][1:3] == ["accounts", "list"], "the second read came from the cache"
    (wallet / "direct" / "accounts" / "all-accounts.keystore.json").write_text('{"changed": 1}')
    monkeypatch.setattr(ctl, "_as_validator", lambda argv, timeout=300: subprocess.CompletedProcess(
        argv, 1, b"", b"wrong password for wallet entered"))
    got = ctl.wallet_pubkeys()
    assert got["pubkeys"] is None and "wrong password" in got["error"], "a changed wallet is read again"


# -- the metrics relay: /metrics only, never /db/backup (issue 12 item 4) -----------------------------------

@pytest.fixture
def upstream() -> Iterator[tuple[int, list[str]]]:
    """A stand-in for the validator's loopback listener: /metrics and the /db/backup webhook."""
    import http.server
    import threading

    seen: list[str] = []

    class Validator(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            seen.append(f"{self.command} {self.path}")
            body = b"validator_statuses 3\n" if self.path == "/metrics" else b"OK"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _any

        def log_message(self, *_a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Validator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()


@pytest.fixture
def relay(ctl: ModuleType, upstream: tuple[int, list[str]]) -> Iterator[tuple[int, list[str]]]:
    import threading

    port, seen = upstream
    server = ctl.relay_server("127.0.0.1", 0, f"http://127.0.0.1:{port}/metrics")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()


def _http(port: int, raw: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_relay_serves_metrics(relay: tuple[int, list[str]]) -> None:
    port, seen = relay
    answer = _http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"validator_statuses 3\n")
    assert seen == ["GET /metrics"]


@pytest.mark.parametrize("raw", [
    b"GET /db/backup HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /db/backup HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"GET /db/backup?permanent HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics/../db/backup HTTP/1.1\r\nHost: x\r\n\r\n",
    # pipelined: a scrape followed by the webhook on one connection (payload matching would miss this)
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /db/backup HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_relay_never_reaches_the_backup_webhook(relay: tuple[int, list[str]], raw: bytes) -> None:
    port, seen = relay
    answer = _http(port, raw)
    assert answer.startswith((b"HTTP/1.0 404", b"HTTP/1.0 405", b"HTTP/1.0 200"))
    assert not any("/db/backup" in call for call in seen), seen


def test_relay_without_validator_is_503(ctl: ModuleType) -> None:
    import socket
    import threading

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        dead = free.getsockname()[1]
    server = ctl.relay_server("127.0.0.1", 0, f"http://127.0.0.1:{dead}/metrics")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _http(server.server_address[1], b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 503")
    finally:
        server.shutdown()


def test_leftover_local_webhook_copies_are_pruned(ctl: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "db-backups"
    out.mkdir()
    ctl.CFG["db_backup_dir"] = str(out)
    old, fresh = out / "qrysm_validatordb_1.backup", out / "qrysm_validatordb_2.backup"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert ctl.prune_local_copies() == [old.name]
    assert sorted(p.name for p in out.iterdir()) == [fresh.name]
