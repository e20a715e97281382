"""Lab drill for issue 8: back up a pair, lose a key host, rebuild it, restore, and sign again safely.

The story the test tells, on real lab hosts with the stand-in validator (which logs every signature):
the primary signs; a backup taken meanwhile does not stop it; the operator stops it and takes a backup;
the primary's disk is destroyed and a fresh host is built on its name; `qpool activate` refuses it (no
history); `qpool restore` puts keys and history back while it stays locked; now `qpool activate` starts it,
and everything signed before the loss is covered by the restored history, so nothing is signed twice.
Restore also refuses a running host, a tampered archive and an archive older than the host's own history.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from lab.deploy import LabClock, LabDeployment, replace_host
from lab.session import LabSession
from lab.testing import lab_unavailable_reason, operator_context, running_lab
from qpool import interchange
from qpool.backups import MERGED_MEMBER, open_archive
from qpool.cli import main
from qpool.errors import QpoolError
from qpool.operations import activate, running

pytestmark = [pytest.mark.lab, pytest.mark.skipif(lab_unavailable_reason() is not None,
                                                  reason=lab_unavailable_reason() or "")]

STACK = "kbrestore"
OCTET = 42
PAIR = "p1"
SIGNING_LOG = "/var/lib/quantapool/validator/signing-log.jsonl"
#: 2 s slots, 4 slots per epoch: each of the lab's two keys attests once every 8 s.
CLOCK = LabClock(slot_seconds=2, slots_per_epoch=4)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabDeployment, LabSession, Path]]:
    root = tmp_path_factory.mktemp("kb-restore-lab")
    with running_lab(STACK, OCTET, root / "state", clock=CLOCK, log=lambda _m: None) as (dep, session):
        yield dep, session, root


def qpool(*args: str) -> Result:
    """The real CLI; HCLOUD_FENCING_TOKEN (set from the lab's token file by the CLI) is removed again afterwards."""
    return CliRunner().invoke(main, list(args), env={"HCLOUD_FENCING_TOKEN": None, "QPOOL_KEYS_PASSPHRASE": None},
                              catch_exceptions=False)


def role_host(dep: LabDeployment, role: str) -> str:
    return next(name for name in dep.hosts if dep.spec(name).role == role)


def signing_log(dep: LabDeployment, host: str) -> list[dict[str, Any]]:
    proc = dep.ssh(host, f"sudo cat {SIGNING_LOG} 2>/dev/null || true")
    return [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]


def newest_targets(entries: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries:
        out[e["pubkey"].lower()] = max(out.get(e["pubkey"].lower(), -1), e["target_epoch"])
    return out


def wait_for_epochs(dep: LabDeployment, host: str, epochs: int, after: dict[str, int] | None = None,
                    timeout: float = 120) -> list[dict[str, Any]]:
    """Until every key signed `epochs` more target epochs on `host` than `after` records (or at all)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = signing_log(dep, host)
        per_key: dict[str, set[int]] = {}
        for e in entries:
            if after is None or e["target_epoch"] > after.get(e["pubkey"].lower(), -1):
                per_key.setdefault(e["pubkey"].lower(), set()).add(e["target_epoch"])
        if len(per_key) == 2 and all(len(v) >= epochs for v in per_key.values()):
            return entries
        if time.monotonic() > deadline:
            raise AssertionError(f"{host} did not sign {epochs} epoch(s) per key within {timeout}s: {per_key}")
        time.sleep(1)


def test_backup_lose_host_restore_and_sign_again(lab: tuple[LabDeployment, LabSession, Path]) -> None:
    dep, session, root = lab
    ctx = operator_context(session)
    inv = str(session.inventory_path)
    primary, standby = role_host(dep, "primary"), role_host(dep, "backup")
    bundle = root / "keys.sealed"
    bundle.write_bytes(base64.b64decode(dep.secrets["validatorKeys"]))
    keys_pw = root / "keys.pass"
    keys_pw.write_text(dep.secrets["validatorKeysPassphrase"] + "\n")
    archive_pw = root / "archive.pass"
    archive_pw.write_text(secrets.token_urlsafe(24) + "\n")
    archive_passphrase = archive_pw.read_text().strip()
    out_dir = root / "backups"

    activate(ctx, PAIR, first_start=True)
    wait_for_epochs(dep, primary, 2)
    shipped = dep.ssh(primary, "sudo qp-validator-ctl backup", timeout=120)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr

    # A backup while the primary signs: succeeds from the replicas, and never stops the signer.
    res = qpool("backup", "--stack", STACK, "--inventory", inv, "--pair", PAIR, "--out", str(out_dir),
                "--passphrase-file", str(archive_pw), "--key-bundle", str(bundle))
    assert res.exit_code == 0, res.output
    live = open_archive(Path(res.output.strip().splitlines()[-1]).read_bytes(), archive_passphrase)
    assert {s["kind"] for s in live.manifest["sources"]} == {"replica"}
    assert {s["host"] for s in live.manifest["sources"]} == {standby, role_host(dep, "monitoring")}
    assert running(ctx.ssh.status(ctx.inventory.hosts[primary])), "a backup stopped the signing validator"
    time.sleep(1.1)  # distinct archive names (one per second)

    # The operator stops the primary (one more epoch signed after the replica), then backs up.
    wait_for_epochs(dep, primary, 1, after=newest_targets(signing_log(dep, primary)))
    stop = dep.ssh(primary, "sudo qp-validator-ctl stop --reason 'restore drill'", timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    signed_before = signing_log(dep, primary)
    res = qpool("backup", "--stack", STACK, "--inventory", inv, "--pair", PAIR, "--out", str(out_dir),
                "--passphrase-file", str(archive_pw), "--key-bundle", str(bundle))
    assert res.exit_code == 0, res.output
    archive_path = Path(res.output.strip().splitlines()[-1])
    assert archive_path.parent == out_dir and archive_path.stat().st_mode & 0o777 == 0o600
    archive = open_archive(archive_path.read_bytes(), archive_passphrase)
    kinds = {(s["kind"], s["host"]) for s in archive.manifest["sources"]}
    assert ("export", primary) in kinds and ("replica", standby) in kinds
    # The manifest's newest target per key is what the primary last signed: the fresh export has it (the
    # replica was shipped while it still signed, so it can only be as new or older).
    expected = newest_targets(signed_before)
    assert {k: v["newest_target_epoch"] for k, v in archive.manifest["keys"].items()} == expected
    export_epochs = next(s["keys"] for s in archive.manifest["sources"] if s["kind"] == "export")
    assert {k: v["newest_target_epoch"] for k, v in export_epochs.items()} == expected
    replica_epochs = next(s["keys"] for s in archive.manifest["sources"] if s["host"] == standby)
    assert all(replica_epochs[k]["newest_target_epoch"] <= expected[k] for k in expected)
    assert archive.member("keys/validator-keys.sealed") == bundle.read_bytes()

    # Lose the primary's disk and volume; rebuild it on the same name (keys imported, LOCKED, no history).
    dep.hosts[primary].destroy()
    replace_host(dep, primary, log=lambda _m: None)
    fresh = ctx.ssh.status(ctx.inventory.hosts[primary])
    assert fresh["locked"] and not fresh["db_present"]
    with pytest.raises(QpoolError, match="no slashing-protection history"):
        activate(ctx, PAIR)

    # A tampered archive is refused before anything reaches the host.
    tampered = root / "tampered.qpbackup"
    blob = bytearray(archive_path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    tampered.write_bytes(bytes(blob))
    res = qpool("restore", "--stack", STACK, "--inventory", inv, "--host", primary, "--archive", str(tampered),
                "--passphrase-file", str(archive_pw), "--keys-passphrase-file", str(keys_pw))
    assert res.exit_code == 2 and "modified" in res.output, res.output
    assert not ctx.ssh.status(ctx.inventory.hosts[primary])["db_present"]

    res = qpool("restore", "--stack", STACK, "--inventory", inv, "--host", primary, "--archive", str(archive_path),
                "--passphrase-file", str(archive_pw), "--keys-passphrase-file", str(keys_pw))
    assert res.exit_code == 0, res.output
    host = ctx.inventory.hosts[primary]
    st = ctx.ssh.status(host)
    assert st["locked"] and not running(st) and st["db_present"]
    restored = interchange.parse(ctx.ssh.export_bytes(host, "export-slashing")[0], "restored")
    for e in signed_before:
        assert (e["source_epoch"], e["target_epoch"]) in restored.attestations[e["pubkey"].lower()], e

    # Now activation works, and the rebuilt primary signs only epochs after everything signed before.
    assert activate(ctx, PAIR)["changed"] is True
    after = wait_for_epochs(dep, primary, 1, after=expected)
    assert all(e["target_epoch"] > expected[e["pubkey"].lower()] for e in after), "re-signed an old epoch"
    assert not ctx.ssh.status(ctx.inventory.hosts[standby])["processes"]

    # Restore refuses a running host, and (once stopped) an archive older than the host's own history.
    res = qpool("restore", "--stack", STACK, "--inventory", inv, "--host", primary, "--archive", str(archive_path),
                "--passphrase-file", str(archive_pw), "--keys-passphrase-file", str(keys_pw))
    assert res.exit_code == 2 and "active or unlocked" in res.output, res.output
    assert running(ctx.ssh.status(host))
    stop = dep.ssh(primary, "sudo qp-validator-ctl stop --reason 'restore drill 2'", timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    before = ctx.ssh.export_bytes(host, "export-slashing")[0]
    res = qpool("restore", "--stack", STACK, "--inventory", inv, "--host", primary, "--archive", str(archive_path),
                "--passphrase-file", str(archive_pw), "--keys-passphrase-file", str(keys_pw))
    assert res.exit_code == 2 and "older than what" in res.output, res.output
    assert ctx.ssh.export_bytes(host, "export-slashing")[0] == before
    assert ctx.ssh.status(host)["oplock"] is None, "a refused restore left the operation lock behind"
    # The archive's merged history is the union it claims to be: it holds every source's entries.
    merged = interchange.parse(archive.member(MERGED_MEMBER), "merged")
    for source in archive.manifest["sources"]:
        part = interchange.parse(archive.member(source["member"]), source["member"])
        assert not interchange.missing(part, merged)
