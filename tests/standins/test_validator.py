"""The validator stand-in as a process: wallet, DB lock, signing log, slashing protection, interchange, backup."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from lab.standins import chain
from lab.standins.harness import (
    SLOT_SECONDS,
    SLOTS_PER_EPOCH,
    Runner,
    Stack,
    free_port,
    http_get,
    http_post,
    import_keys,
    parse_metrics,
    promtool_check,
    signing_log,
    start_stack,
    validator_args,
    wait_until,
)

LOCK_MSG = "cannot obtain database lock, database may be in use by another process"
#: what a healthy stand-in exports after its first attestations: qrysm creates failed_* and proposal series only
#: on their first increment, and never increments the *_rejected_total counters (metrics_catalogue.yml)
VALIDATOR_METRICS = ("validator_statuses", "validator_balance", "validator_last_attested_slot",
                     "validator_successful_attestations", "grpc_client_msg_received_total")
NEVER_EXPORTED = ("validator_attestations_rejected_total", "validator_proposals_rejected_total",
                  "validator_failed_attestations")
KNOWN_LINT = ('should have "_total" suffix',)
GVR = chain.genesis_validators_root(chain.DEFAULT_GENESIS_TIME)


def _current_epoch() -> int:
    clock = chain.Clock(chain.DEFAULT_GENESIS_TIME, float(SLOT_SECONDS), int(SLOTS_PER_EPOCH))
    return clock.epoch_of(clock.current_slot())


def _wallet(runner: Runner, tmp_path: Path, keys: dict[str, Any]) -> Path:
    wallet_dir = tmp_path / "wallet"
    res = import_keys(runner, wallet_dir, keys)
    assert res.returncode == 0, res.stderr
    return wallet_dir


def _signed_all(datadir: Path, pubkeys: list[str]) -> list[dict[str, Any]] | None:
    lines = signing_log(datadir)
    return lines if {line["pubkey"] for line in lines} >= set(pubkeys) else None


def _metrics(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    return parse_metrics(http_get(f"http://127.0.0.1:{port}/metrics")[1].decode())


def _per_key(samples: dict, name: str, pubkey: str) -> float | None:
    return next((v for labels, v in samples.get(name, []) if labels.get("pubkey") == pubkey), None)


def _export(runner: Runner, datadir: Path, out: Path) -> Any:
    return runner.run("validator", "slashing-protection-history", "export", f"--datadir={datadir}",
                      f"--slashing-protection-export-dir={out}", "--accept-terms-of-use")


def _import(runner: Runner, datadir: Path, src: Path) -> Any:
    return runner.run("validator", "slashing-protection-history", "import", f"--datadir={datadir}",
                      f"--slashing-protection-json-file={src}", "--accept-terms-of-use")


def test_accounts_import_wrong_password_fails(runner: Runner, tmp_path: Path, keys: dict[str, Any]) -> None:
    keys["account_pw"].write_text("not-the-password\n")
    res = import_keys(runner, tmp_path / "wallet", keys)
    assert res.returncode == 1
    assert "incorrect password for keystore" in res.stderr
    assert not (tmp_path / "wallet" / "direct").exists()


def test_accounts_import_idempotent_and_wallet_password(runner: Runner, tmp_path: Path,
                                                        keys: dict[str, Any]) -> None:
    wallet_dir = _wallet(runner, tmp_path, keys)
    assert import_keys(runner, wallet_dir, keys).returncode == 0
    keys["wallet_pw"].write_text("other-wallet-pass\n")
    assert import_keys(runner, wallet_dir, keys).returncode == 1
    res = runner.run("validator", "--accept-terms-of-use", "--wallet-dir", str(wallet_dir),
                     "--wallet-password-file", str(keys["wallet_pw"]), "--datadir", str(tmp_path / "v"))
    assert res.returncode == 1
    assert "wrong password for wallet" in res.stderr


def _listed(runner: Runner, wallet_dir: Path, keys: dict[str, Any]) -> list[str]:
    import re

    res = runner.run("validator", "accounts", "list", f"--wallet-dir={wallet_dir}",
                     f"--wallet-password-file={keys['wallet_pw']}", "--accept-terms-of-use")
    assert res.returncode == 0, res.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout)  # qrysm colours its listing unconditionally
    return re.findall(r"\[validating public key\] (0x[0-9a-f]+)", plain)


def test_accounts_list_and_delete_as_qrysm(runner: Runner, tmp_path: Path, keys: dict[str, Any]) -> None:
    """qp-import-keys lists the wallet and deletes keys no longer assigned to the pair (issue 12 item 2)."""
    wallet_dir = _wallet(runner, tmp_path, keys)
    assert _listed(runner, wallet_dir, keys) == keys["pubkeys"]
    res = runner.run("validator", "accounts", "delete", f"--wallet-dir={wallet_dir}",
                     f"--wallet-password-file={keys['wallet_pw']}", f"--delete-public-keys={keys['pubkeys'][0]}",
                     "--accept-terms-of-use")
    assert res.returncode == 0, res.stderr
    assert _listed(runner, wallet_dir, keys) == keys["pubkeys"][1:]
    res = runner.run("validator", "accounts", "delete", f"--wallet-dir={wallet_dir}",
                     f"--wallet-password-file={keys['wallet_pw']}", f"--delete-public-keys={keys['pubkeys'][0]}",
                     "--accept-terms-of-use")
    assert res.returncode == 1 and "not in the wallet" in res.stderr


def test_signing_log_metrics_lock_and_backup(runner: Runner, stack: Stack, tmp_path: Path,
                                             keys: dict[str, Any]) -> None:
    wallet_dir = _wallet(runner, tmp_path, keys)
    datadir, backups, port = tmp_path / "vdata", tmp_path / "backups", free_port()
    proc = runner.start("validator", *validator_args(
        wallet_dir, datadir, keys["wallet_pw"], stack, port, "--enable-db-backup-webhook",
        "--db-backup-output-dir", str(backups)))
    lines = wait_until(lambda: _signed_all(datadir, keys["pubkeys"]), 20, "both keys to attest")
    spe = int(SLOTS_PER_EPOCH)
    for line in lines:
        assert line["host"] == socket.gethostname() and line["duty"] == "attestation"
        assert line["target_epoch"] == line["slot"] // spe
        assert line["source_epoch"] == line["target_epoch"] - 1
        assert line["signing_root"].startswith("0x") and len(line["signing_root"]) == 66
        assert line["slot"] % spe == keys["pubkeys"].index(line["pubkey"]) % spe
    assert len({(x["pubkey"], x["target_epoch"]) for x in lines}) == len(lines)

    text = http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    samples = parse_metrics(text)
    for name in VALIDATOR_METRICS:
        assert name in samples, name
    for name in NEVER_EXPORTED:
        assert name not in samples, name
    for pubkey in keys["pubkeys"]:
        assert _per_key(samples, "validator_statuses", pubkey) == 3
        assert _per_key(samples, "validator_successful_attestations", pubkey) >= 1
    findings = promtool_check(text)
    assert all(any(k in f for k in KNOWN_LINT) for f in findings), findings

    second = runner.run("validator", *validator_args(wallet_dir, datadir, keys["wallet_pw"], stack, free_port()))
    assert second.returncode == 1 and LOCK_MSG in second.stderr
    exported = _export(runner, datadir, tmp_path / "out")
    assert exported.returncode == 1 and LOCK_MSG in exported.stderr

    assert http_get(f"http://127.0.0.1:{port}/db/backup")[0] == 200
    status, _ = http_post(f"http://127.0.0.1:{port}/db/backup", {})
    assert status == 200
    copies = sorted(backups.glob("prysm_validatordb_*.backup"))
    assert copies
    with sqlite3.connect(copies[-1]) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM attestations").fetchone()[0] >= len(keys["pubkeys"])

    assert proc.stop() == 0
    assert _export(runner, datadir, tmp_path / "out").returncode == 0  # lock released on SIGTERM


def test_interchange_roundtrip_and_refusal_to_resign(runner: Runner, stack: Stack, tmp_path: Path,
                                                     keys: dict[str, Any]) -> None:
    wallet_dir = _wallet(runner, tmp_path, keys)
    primary, backup = tmp_path / "primary", tmp_path / "backup"
    proc = runner.start("validator", *validator_args(wallet_dir, primary, keys["wallet_pw"], stack, free_port()))
    wait_until(lambda: _signed_all(primary, keys["pubkeys"]), 20, "primary to attest with both keys")
    assert proc.stop() == 0

    res = _export(runner, primary, tmp_path / "out")
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "out" / "slashing_protection.json").read_text())
    assert doc["metadata"] == {"interchange_format_version": "5", "genesis_validators_root": GVR}
    assert {entry["pubkey"] for entry in doc["data"]} == set(keys["pubkeys"])
    signed = {(e["pubkey"], int(a["target_epoch"])) for e in doc["data"] for a in e["signed_attestations"]}
    assert {(x["pubkey"], x["target_epoch"]) for x in signing_log(primary)} <= signed

    # As if the other host had already signed the next epochs (e.g. it ran ahead before the failover).
    future = range(_current_epoch() + 1, _current_epoch() + 4)
    for entry in doc["data"]:
        entry["signed_attestations"] += [{"source_epoch": str(t - 1), "target_epoch": str(t),
                                          "signing_root": "0x" + "11" * 32} for t in future]
    (tmp_path / "with-future.json").write_text(json.dumps(doc))
    res = _import(runner, backup, tmp_path / "with-future.json")
    assert res.returncode == 0, res.stderr
    assert _import(runner, backup, tmp_path / "out" / "slashing_protection.json").returncode == 0  # union

    assert _export(runner, backup, tmp_path / "out2").returncode == 0
    doc2 = json.loads((tmp_path / "out2" / "slashing_protection.json").read_text())
    signed2 = {(e["pubkey"], int(a["target_epoch"])) for e in doc2["data"] for a in e["signed_attestations"]}
    assert signed2 == signed | {(pk, t) for pk in keys["pubkeys"] for t in future}

    port = free_port()
    proc_b = runner.start("validator", *validator_args(wallet_dir, backup, keys["wallet_pw"], stack, port,
                                                       "--enable-doppelganger"))
    key0 = keys["pubkeys"][0]
    wait_until(lambda: (_per_key(_metrics(port), "validator_failed_attestations", key0) or 0) >= 1, 20,
               "slashing protection to reject a re-sign")
    assert "rejected by local slashing protection" in proc_b.log()
    assert "validator_attestations_rejected_total" not in _metrics(port)  # as in qrysm: never incremented
    assert "Doppelganger check ran" in proc_b.log() and "skipped=2" in proc_b.log()
    resigned = [x for x in signing_log(backup) if (x["pubkey"], x["target_epoch"]) in signed2]
    assert resigned == []
    assert proc_b.stop() == 0


def test_import_refuses_wrong_network_version_and_garbage(runner: Runner, tmp_path: Path,
                                                          keys: dict[str, Any]) -> None:
    entry = {"pubkey": keys["pubkeys"][0], "signed_blocks": [],
             "signed_attestations": [{"source_epoch": "1", "target_epoch": "2", "signing_root": "0x" + "22" * 32}]}
    cases = {
        "wrong-root": ({"interchange_format_version": "5", "genesis_validators_root": "0x" + "00" * 32},
                       "genesis_validators_root"),
        "old-version": ({"interchange_format_version": "4", "genesis_validators_root": GVR},
                        "interchange_format_version"),
    }
    for name, (meta, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"metadata": meta, "data": [entry]}))
        res = _import(runner, tmp_path / "v", path)
        assert res.returncode == 1 and message in res.stderr, (name, res.stderr)
    (tmp_path / "garbage.json").write_text('{"metadata": ')
    res = _import(runner, tmp_path / "v", tmp_path / "garbage.json")
    assert res.returncode == 1 and "not valid JSON" in res.stderr
    assert _export(runner, tmp_path / "v", tmp_path / "out").returncode == 0
    assert json.loads((tmp_path / "out" / "slashing_protection.json").read_text())["data"] == []


def test_export_without_db_creates_empty_db_and_fails(runner: Runner, tmp_path: Path) -> None:
    res = _export(runner, tmp_path / "elsewhere", tmp_path / "out")
    assert res.returncode == 1
    assert "no slashing protection data found" in res.stderr
    assert (tmp_path / "elsewhere" / "validator.db").exists()
    assert not (tmp_path / "out" / "slashing_protection.json").exists()


def test_no_signing_without_beacon(runner: Runner, tmp_path: Path, keys: dict[str, Any]) -> None:
    wallet_dir = _wallet(runner, tmp_path, keys)
    datadir, port = tmp_path / "vdata", free_port()
    proc = runner.start("validator", "--accept-terms-of-use", "--wallet-dir", str(wallet_dir),
                        "--wallet-password-file", str(keys["wallet_pw"]), "--datadir", str(datadir),
                        "--beacon-rpc-provider", f"127.0.0.1:{free_port()}", "--monitoring-host", "127.0.0.1",
                        "--monitoring-port", str(port), "--disable-account-metrics")
    wait_until(lambda: proc.log().count("Waiting for beacon node to sync") >= 3, 10, "validator to wait")
    time.sleep(float(SLOT_SECONDS) * int(SLOTS_PER_EPOCH))  # one full epoch: every key had its duty slot
    assert signing_log(datadir) == []
    samples = _metrics(port)
    assert not any("pubkey" in labels for series in samples.values() for labels, _ in series)
    assert proc.stop() == 0


def test_sigstop_sigcont_keeps_lock_and_history(runner: Runner, stack: Stack, tmp_path: Path,
                                                keys: dict[str, Any]) -> None:
    wallet_dir = _wallet(runner, tmp_path, keys)
    datadir = tmp_path / "vdata"
    proc = runner.start("validator", *validator_args(wallet_dir, datadir, keys["wallet_pw"], stack, free_port()))
    before = len(wait_until(lambda: _signed_all(datadir, keys["pubkeys"]), 20, "both keys to attest"))
    proc.popen.send_signal(signal.SIGSTOP)
    try:
        exported = _export(runner, datadir, tmp_path / "out")
        assert exported.returncode == 1 and LOCK_MSG in exported.stderr  # a frozen holder still holds it
        time.sleep(float(SLOT_SECONDS) * int(SLOTS_PER_EPOCH))  # its duty slots pass while frozen
    finally:
        proc.popen.send_signal(signal.SIGCONT)
    lines = wait_until(lambda: len(signing_log(datadir)) > before and signing_log(datadir), 20,
                       "attesting to resume")
    assert len({(x["pubkey"], x["target_epoch"]) for x in lines}) == len(lines)
    assert proc.stop() == 0
    assert _export(runner, datadir, tmp_path / "out").returncode == 0
    doc = json.loads((tmp_path / "out" / "slashing_protection.json").read_text())
    exported_targets = {(e["pubkey"], int(a["target_epoch"])) for e in doc["data"] for a in e["signed_attestations"]}
    assert {(x["pubkey"], x["target_epoch"]) for x in signing_log(datadir)} == exported_targets


def test_no_signing_against_beacon_of_another_network(runner: Runner, tmp_path: Path,
                                                      keys: dict[str, Any]) -> None:
    stack = start_stack(runner, tmp_path, beacon_env={"QP_STANDIN_GENESIS_TIME": "1600000000"})
    wallet_dir = _wallet(runner, tmp_path, keys)
    datadir = tmp_path / "vdata"
    proc = runner.start("validator", *validator_args(wallet_dir, datadir, keys["wallet_pw"], stack, free_port()))
    wait_until(lambda: proc.log().count("beacon node is on another network") >= 2, 10, "genesis mismatch")
    time.sleep(float(SLOT_SECONDS) * int(SLOTS_PER_EPOCH))  # one full epoch: every key had its duty slot
    assert signing_log(datadir) == []
    assert proc.stop() == 0
