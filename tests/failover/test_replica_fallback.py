"""Issue 12 item 7 (operator side): a corrupt newest replica is no dead end, and a host's error (a full
disk on import) reaches the operator as its cause in one line, with the failover left resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.journal import journal_path, last_journal
from qpool.remote import Refused
from qpool.replicas import one_line_cause

from .safety_support import fake, make_ctx
from .test_operations_guards import BACKUP, PRIMARY, FakeSsh, _fenced_by_hetzner, interchange, stopped_status
from .test_validator_ctl_safety import ENOSPC_TRACEBACK


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    return make_ctx(tmp_path, monkeypatch)


class ReplicaDirSsh(FakeSsh):
    """The target's replica directory: newest first, some corrupt; select-replica behaves like the host's
    (moves the corrupt ones aside and returns the newest intact one)."""

    def __init__(self, statuses: dict[str, Any], copies: list[tuple[str, float, bytes, bool]]) -> None:
        super().__init__(statuses)
        self.copies = copies  # (name, age, data, intact), newest first
        self.quarantine: list[str] = []

    def ctl(self, host: Any, *args: str, input: bytes | None = None, timeout: float = 180) -> dict[str, Any]:
        if args[0] == "select-replica" and host.name == BACKUP.name:
            self.calls.append((host.name, "select-replica"))
            skipped = []
            while self.copies and not self.copies[0][3]:
                name, age, _d, _ok = self.copies.pop(0)
                self.quarantine.append(name)
                skipped.append({"name": name, "reason": "fails its checksum", "moved_to": f"/r/quarantine/{name}",
                                "age_seconds": age})
            if not self.copies:
                return {"path": None, "skipped": skipped}
            name, age, data, _ok = self.copies[0]
            self.replica = data
            return {"path": f"/r/{name}", "name": name, "age_seconds": age, "mtime": 0.0, "sha256": "x",
                    "source": name.split("--")[0], "skipped": skipped}
        return super().ctl(host, *args, input=input, timeout=timeout)


def _fenced(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch, copies: list[tuple[str, float, bytes, bool]]
            ) -> ReplicaDirSsh:
    clock = ctx.clock
    ssh = ReplicaDirSsh(fake(ctx).statuses, copies)
    ssh.statuses[PRIMARY.name] = None
    ssh.statuses[BACKUP.name] = stopped_status(
        newest_backup={"path": f"/r/{copies[0][0]}", "age_seconds": copies[0][1], "source": PRIMARY.name},
        chain_clock={"genesis_time": int(clock()) - 10 * 7680 - 100, "seconds_per_slot": 60.0,
                     "slots_per_epoch": 128})
    ctx.ssh = ssh  # type: ignore[assignment]
    ctx.hcloud = object()
    _fenced_by_hetzner(monkeypatch, lambda _c, _h: False)
    monkeypatch.setattr(ops, "_fence", lambda c, _h, _j: {"fenced_at": c.clock(), "already_off": False,
                                                          "power_off_sent": True})
    monkeypatch.setattr(ops, "_verify_fenced", lambda _c, _h: "powered off (fake)")
    return ssh


def test_corrupt_newest_replica_falls_back_to_the_previous_intact_one(ctx: ops.Context,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    older = interchange((1, 2), (2, 3))
    ssh = _fenced(ctx, monkeypatch, [("h-primary--C.db", 60.0, interchange((1, 2), (2, 3), (3, 4)), False),
                                     ("h-primary--B.db", 360.0, older, True)])
    said: list[str] = []
    ctx.report = said.append
    result = ops.failover(ctx, "p1")
    assert result["mode"] == "fenced"
    assert ssh.history[BACKUP.name] == older, "the intact previous replica was imported"
    assert ssh.quarantine == ["h-primary--C.db"]
    doc = last_journal(journal_path("t", "p1", ctx.journal_dir))
    assert doc is not None
    moved = doc["steps"]["move-history"]["data"]
    assert moved["replica"] == "h-primary--B.db" and moved["replica_age_seconds"] == 360.0
    assert moved["replicas_moved_aside"] == ["h-primary--C.db"]
    assert any("h-primary--C.db" in m and "moved aside" in m for m in said)
    assert any("h-primary--B.db" in m and "360s old" in m and "newest intact" in m for m in said)


def test_intact_fallback_must_still_be_fresh(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The age bound applies to the copy actually used: an old fallback is refused (override only)."""
    _fenced(ctx, monkeypatch, [("h-primary--C.db", 60.0, interchange((1, 2)), False),
                               ("h-primary--B.db", ops.MAX_REPLICA_AGE_SECONDS + 1.0, interchange((1, 2)), True)])
    with pytest.raises(QpoolError, match=r"h-primary--B\.db.*old"):
        ops.failover(ctx, "p1")
    assert (BACKUP.name, "activate") not in [c[:2] for c in fake(ctx).calls]


def test_every_replica_corrupt_is_refused_not_a_crash(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    _fenced(ctx, monkeypatch, [("h-primary--C.db", 60.0, interchange((1, 2)), False)])
    with pytest.raises(QpoolError, match="no replicated slashing-protection backup"):
        ops.failover(ctx, "p1")
    assert fake(ctx).changed() == []


def test_one_line_cause_of_a_traceback() -> None:
    text = ENOSPC_TRACEBACK.decode()
    assert one_line_cause(text).startswith("disk full (")
    assert "\n" not in one_line_cause(text)
    assert one_line_cause("Traceback (most recent call last):\n  File x\nKeyError: 'data'\n") == "KeyError: 'data'"


class FullDiskSsh(FakeSsh):
    """The target's disk is full: its import fails the way the host reports it (one JSON error line)."""

    full = True

    def ctl(self, host: Any, *args: str, input: bytes | None = None, timeout: float = 180) -> dict[str, Any]:
        if args[0] == "import-slashing" and host.name == BACKUP.name and self.full:
            self.calls.append((host.name, "import-slashing-failed"))
            raise Refused(f"{host.name}: import-slashing refused: import failed: disk full (4096 bytes free on the "
                          "file system of /var/lib/quantapool/validator); free space there and re-run (nothing "
                          "was started)")
        return super().ctl(host, *args, input=input, timeout=timeout)


def test_full_disk_on_import_is_clear_starts_nothing_and_resumes(ctx: ops.Context) -> None:
    ssh = FullDiskSsh(fake(ctx).statuses)
    ctx.ssh = ssh  # type: ignore[assignment]
    with pytest.raises(Refused) as refused:
        ops.failover(ctx, "p1")
    assert "disk full" in str(refused.value) and "\n" not in str(refused.value)
    assert (BACKUP.name, "activate") not in [c[:2] for c in ssh.calls]
    doc = last_journal(journal_path("t", "p1", ctx.journal_dir))
    assert doc is not None and not doc.get("aborted") and doc["steps"]["stop"]["done"]
    assert "move-history" not in doc["steps"] or not doc["steps"]["move-history"]["done"]
    ssh.full = False  # the operator freed space
    result = ops.failover(ctx, "p1")
    assert result["changed"] and result["run_id"] == doc["run_id"], "the same run resumed"
    assert ssh.history[BACKUP.name] == ssh.history[PRIMARY.name]
