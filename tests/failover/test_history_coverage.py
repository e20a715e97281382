"""Issue 12 item 1: every start needs the target's history to cover the newest copy of the pair's history
anywhere (peer DB, replicas on both key hosts, the monitoring server's replicas of this pair); --first-start
is refused when any copy exists; restore refuses an archive older than any copy.

The fake answers like the hosts: qp-validator-ctl's status/select-replica/export-replica on the key hosts,
and its list-replicas / read-replica (monitoring server) and convert-replica (key host) that qpool runs over SSH.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from qpool import history_coverage as hc
from qpool import interchange as ic
from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.inventory import HostRecord, Inventory
from qpool.journal import journal_path, last_journal
from qpool.remote import RemoteResult, deploy_command_problem

from .safety_support import make_ctx
from .test_operations_guards import BACKUP, GVR, KEY, PRIMARY, FakeSsh, _fenced_by_hetzner, interchange, stopped_status

MON = HostRecord("h-mon", "monitoring", None, "192.0.2.20", "10.0.0.20", server_id=3)


def blocks(*slots: int) -> bytes:
    return json.dumps({"metadata": {"interchange_format_version": "5", "genesis_validators_root": GVR},
                       "data": [{"pubkey": KEY, "signed_blocks": [{"slot": str(s)} for s in slots],
                                 "signed_attestations": []}]}).encode()


class PairSsh(FakeSsh):
    """Per-host replica directories (newest intact copy per host) and a monitoring server."""

    def __init__(self, statuses: dict[str, Any]) -> None:
        super().__init__(statuses)
        self.replicas: dict[str, tuple[str, bytes]] = {}  # host -> (name, interchange of that copy)
        self.mon_files: list[tuple[str, bytes, str | None]] = []  # newest first: (name, raw db, sidecar)
        self.raw_to_interchange: dict[bytes, bytes] = {}

    def set_replica(self, host: HostRecord, name: str, data: bytes) -> None:
        self.replicas[host.name] = (name, data)
        st = self.statuses[host.name]
        assert st is not None
        st["newest_backup"] = {"path": f"/r/{name}", "age_seconds": 30.0, "source": name.split("--")[0]}

    def ctl(self, host: HostRecord, *args: str, input: bytes | None = None, timeout: float = 180) -> dict[str, Any]:
        if args[0] == "select-replica":
            if host.name not in self.replicas:
                return {"path": None, "skipped": []}
            name = self.replicas[host.name][0]
            return {"path": f"/r/{name}", "name": name, "age_seconds": 30.0, "source": name.split("--")[0],
                    "skipped": []}
        return super().ctl(host, *args, input=input, timeout=timeout)

    def export_bytes(self, host: HostRecord, *args: str) -> tuple[bytes, str]:
        if args[0] == "export-replica":
            self.calls.append((host.name, "export-replica"))
            data = self.replicas[host.name][1]
            return data, hashlib.sha256(data).hexdigest()
        return super().export_bytes(host, *args)

    def run(self, host: HostRecord, command: str, *, input: bytes | None = None, timeout: float = 120
            ) -> RemoteResult:
        assert deploy_command_problem(command) is None, command  # what the deploy identity's sudo allows
        words = shlex.split(command)
        sub = words[2]
        if host.name == MON.name and sub == "list-replicas":
            # only the asked hosts' copies (other pairs' copies are not listed), newest first
            owners = {words[i + 1] for i, w in enumerate(words) if w == "--owner"}
            listed = [{"name": n, "mtime": 1000.0 - i, "sha256": sha} for i, (n, _r, sha) in enumerate(self.mon_files)
                      if n.split("--")[0] in owners]
            return RemoteResult(0, json.dumps({"replicas": listed}).encode(), b"")
        if host.name == MON.name and sub == "read-replica":
            return RemoteResult(0, next(r for n, r, _s in self.mon_files if n == words[3]), b"")
        if sub == "convert-replica" and input is not None:  # the conversion on a key host
            assert words[3:] == ["--sha256", hashlib.sha256(input).hexdigest()], "checked against its sha256"
            return RemoteResult(0, self.raw_to_interchange[input], b"")
        if host.name == MON.name and sub == "prometheus-samples":  # the fencing witness: Prometheus down
            return RemoteResult(1, b'{"error": "Prometheus did not answer: connection refused"}', b"")
        raise AssertionError(f"unexpected command on {host.name}: {command[:60]}")

    def ship_to_monitoring(self, name: str, data: bytes, *, corrupt: bool = False) -> None:
        raw = b"sqlite:" + data
        self.raw_to_interchange[raw] = data
        sha = hashlib.sha256(raw).hexdigest()
        self.mon_files.append((name, raw if not corrupt else raw[:10], sha))


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    context = make_ctx(tmp_path, monkeypatch)
    inv = context.inventory
    context.inventory = Inventory(stack=inv.stack, hosts={**inv.hosts, MON.name: MON}, ssh_user=inv.ssh_user,
                                  ssh_key=inv.ssh_key, known_hosts=inv.known_hosts, config_file=inv.config_file)
    # The primary (configured active) is stopped, as after a reboot or a rebuild; the backup stopped too.
    ssh = PairSsh({PRIMARY.name: stopped_status(), BACKUP.name: stopped_status(db_present=False)})
    ssh.history[BACKUP.name] = b""
    context.ssh = ssh  # type: ignore[assignment]
    return context


def pair(ctx: ops.Context) -> PairSsh:
    return ctx.ssh  # type: ignore[return-value]


def _started(ctx: ops.Context) -> bool:
    return any(c[1] == "activate" for c in pair(ctx).calls)


# -- the rule -------------------------------------------------------------------------------------------

def test_uncovered_compares_newest_epoch_and_slot_against_the_union() -> None:
    copy = ic.parse(interchange((1, 2), (2, 5)), "copy")
    assert hc.uncovered(copy, [ic.parse(interchange((1, 2), (4, 5)), "own")]) == []
    assert hc.uncovered(copy, [ic.parse(interchange((1, 2)), "a"), ic.parse(interchange((3, 5)), "b")]) == []
    lost = hc.uncovered(copy, [ic.parse(interchange((1, 4)), "own")])
    assert len(lost) == 1 and "newest target epoch 5 there, 4 on the target" in lost[0]
    assert "block slot 9 there, none" in hc.uncovered(ic.parse(blocks(9), "c"), [ic.parse(interchange((1, 2)), "o")])[0]
    other_chain = ic.parse(interchange((1, 2)).replace(GVR[2:].encode(), b"ef" * 32), "x")
    assert any("another chain" in p for p in hc.uncovered(copy, [other_chain]))


# -- activate -------------------------------------------------------------------------------------------

def test_rebuilt_primary_refused_while_the_standby_holds_its_replica(ctx: ops.Context) -> None:
    """Empty volume on the primary; the backup holds the primary's replicated history."""
    ssh = pair(ctx)
    ssh.statuses[PRIMARY.name] = stopped_status(db_present=False)
    ssh.set_replica(BACKUP, "h-primary--20261201T0000Z.db", interchange((1, 2), (2, 3)))
    with pytest.raises(QpoolError) as refused:
        ops.activate(ctx, "p1")
    msg = str(refused.value)
    assert "replica h-primary--20261201T0000Z.db on h-backup" in msg
    assert "qpool backup" in msg and "qpool restore --stack t --host h-primary" in msg
    assert "re-run with --first-start" not in msg
    assert not _started(ctx) and ssh.oplock == {}


def test_first_start_refused_when_any_copy_exists(ctx: ops.Context) -> None:
    ssh = pair(ctx)
    ssh.statuses[PRIMARY.name] = stopped_status(db_present=False)
    ssh.ship_to_monitoring("h-primary--20261201T0000Z.db", interchange((1, 2)))
    with pytest.raises(QpoolError, match=r"--first-start refused.*replica h-primary--20261201T0000Z.db on h-mon"):
        ops.activate(ctx, "p1", first_start=True)
    assert not _started(ctx)


def test_first_start_refused_when_the_target_itself_holds_history(ctx: ops.Context) -> None:
    with pytest.raises(QpoolError, match=r"--first-start refused.*h-primary's own DB"):
        ops.activate(ctx, "p1", first_start=True)
    assert not _started(ctx)


def test_first_start_allowed_only_with_no_copy_anywhere(ctx: ops.Context) -> None:
    ssh = pair(ctx)
    ssh.statuses[PRIMARY.name] = stopped_status(db_present=False)
    assert ops.activate(ctx, "p1", first_start=True)["changed"]


def test_monitoring_copy_newer_than_the_target_refuses_activate(ctx: ops.Context) -> None:
    """A primary restored from an old archive: its DB exists but the monitoring server holds newer."""
    ssh = pair(ctx)
    ssh.history[PRIMARY.name] = interchange((1, 2))
    ssh.ship_to_monitoring("h-primary--20261201T0500Z.db", interchange((1, 2), (2, 3), (3, 4)))
    with pytest.raises(QpoolError, match=r"replica h-primary--20261201T0500Z.db on h-mon holds newer"):
        ops.activate(ctx, "p1")
    assert not _started(ctx)


def test_corrupt_monitoring_copy_falls_back_to_the_older_intact_one(ctx: ops.Context) -> None:
    ssh = pair(ctx)
    ssh.history[PRIMARY.name] = interchange((1, 2), (2, 3))
    ssh.ship_to_monitoring("h-primary--B.db", interchange((1, 2), (2, 3), (3, 4)), corrupt=True)
    ssh.ship_to_monitoring("h-primary--A.db", interchange((1, 2), (2, 3)))
    said: list[str] = []
    ctx.report = said.append
    assert ops.activate(ctx, "p1")["changed"]
    assert any("h-primary--B.db" in m and "sha256" in m for m in said), "the corrupt copy is reported"


def test_activate_when_history_covers_every_copy(ctx: ops.Context) -> None:
    ssh = pair(ctx)
    ssh.set_replica(BACKUP, "h-primary--A.db", interchange((1, 2)))
    ssh.set_replica(PRIMARY, "h-backup--A.db", interchange((1, 2)))
    ssh.ship_to_monitoring("h-primary--A.db", interchange((1, 2), (2, 3)))
    assert ops.activate(ctx, "p1")["changed"]


# -- restore --------------------------------------------------------------------------------------------

def test_restore_refuses_an_archive_older_than_a_replica_even_onto_an_empty_host(ctx: ops.Context) -> None:
    ssh = pair(ctx)
    ssh.set_replica(BACKUP, "h-primary--C.db", interchange((1, 2), (2, 3), (3, 4)))
    old_archive = ic.parse(interchange((1, 2), (2, 3)), "archive")
    with pytest.raises(QpoolError, match=r"replica h-primary--C.db on h-backup.*archive is too old"):
        hc.check_restore(ctx, PRIMARY, old_archive, "2026-12-01T00:00:00Z", None)
    hc.check_restore(ctx, PRIMARY, ic.parse(interchange((1, 2), (2, 3), (3, 4)), "archive"), "now", None)


def test_restore_counts_what_the_target_already_has(ctx: ops.Context) -> None:
    ssh = pair(ctx)
    ssh.ship_to_monitoring("h-primary--C.db", interchange((1, 2), (2, 3), (3, 4)))
    own = ic.parse(interchange((3, 4)), "own")
    hc.check_restore(ctx, PRIMARY, ic.parse(interchange((1, 2)), "archive"), "then", own)


# -- failover -------------------------------------------------------------------------------------------

def _fenced_setup(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> PairSsh:
    ssh = pair(ctx)
    clock = ctx.clock
    ssh.statuses[PRIMARY.name] = None
    ssh.statuses[BACKUP.name] = stopped_status(
        chain_clock={"genesis_time": int(clock()) - 10 * 7680 - 100, "seconds_per_slot": 60.0,
                     "slots_per_epoch": 128})
    ssh.history[BACKUP.name] = interchange()
    ssh.set_replica(BACKUP, "h-primary--A.db", interchange((1, 2)))
    ctx.hcloud = object()
    _fenced_by_hetzner(monkeypatch, lambda _c, _h: False)
    monkeypatch.setattr(ops, "_fence", lambda c, _h, _j: {"fenced_at": c.clock(), "already_off": False,
                                                          "power_off_sent": True})
    monkeypatch.setattr(ops, "_verify_fenced", lambda _c, _h: "powered off (fake)")
    return ssh


def test_fenced_failover_merges_a_newer_monitoring_copy_of_the_source(
        ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shipping to the standby failed once, the monitoring server got the newer copy: it is imported too."""
    ssh = _fenced_setup(ctx, monkeypatch)
    ssh.ship_to_monitoring("h-primary--B.db", interchange((1, 2), (2, 3)))
    assert ops.failover(ctx, "p1")["mode"] == "fenced"
    assert (2, 3) in ic.parse(ssh.history[BACKUP.name], "b").attestations[KEY]
    doc = last_journal(journal_path("t", "p1", ctx.journal_dir))
    assert doc is not None and doc["steps"]["move-history"]["data"]["merged"] == ["replica h-primary--B.db on h-mon"]


def test_failover_start_refused_when_a_copy_of_the_target_is_newer(
        ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target's own DB lost history it once had (the monitoring server holds its old replica)."""
    ssh = _fenced_setup(ctx, monkeypatch)
    ssh.ship_to_monitoring("h-backup--Z.db", interchange((5, 6)))
    with pytest.raises(QpoolError, match=r"replica h-backup--Z.db on h-mon holds newer.*--abandon"):
        ops.failover(ctx, "p1")
    assert not _started(ctx)
    doc = last_journal(journal_path("t", "p1", ctx.journal_dir))
    assert doc is not None and not doc.get("aborted") and not doc["completed"], "refused at the start: resumable"


# -- the operator's archives ------------------------------------------------------------------------------

def _archive_file(tmp_path: Path, history: bytes, passphrase: str) -> Path:
    from qpool import backups
    from qpool.keys.seal import MAGIC

    manifest = {"format": backups.FORMAT, "version": backups.FORMAT_VERSION, "stack": "t", "pair": "p1",
                "created": "2026-12-01T00:00:00Z"}
    members = {backups.KEY_BUNDLE_MEMBER: (0o600, MAGIC + b"bundle"), backups.MERGED_MEMBER: (0o600, history)}
    path = tmp_path / "qpool-backup-t-p1.qpbackup"
    path.write_bytes(backups.build_archive(manifest, members, passphrase))
    return path


def test_activate_must_cover_the_operators_archive(ctx: ops.Context, tmp_path: Path) -> None:
    pass_file = tmp_path / "pass"
    pass_file.write_text("correct horse battery staple\n")
    newer = _archive_file(tmp_path, interchange((1, 2), (2, 3), (3, 4)), "correct horse battery staple")
    copies = hc.archive_copies([newer], pass_file)
    assert copies[0].label == "archive qpool-backup-t-p1.qpbackup (created 2026-12-01T00:00:00Z)"
    with pytest.raises(QpoolError, match=r"archive qpool-backup-t-p1.qpbackup .* holds newer"):
        ops.activate(ctx, "p1", archives=copies)
    assert not _started(ctx)
    with pytest.raises(QpoolError, match=r"--first-start refused.*archive qpool-backup"):
        pair(ctx).statuses[PRIMARY.name] = stopped_status(db_present=False)
        ops.activate(ctx, "p1", first_start=True, archives=copies)
    pair(ctx).statuses[PRIMARY.name] = stopped_status()
    older = hc.Copy("archive old", ic.parse(interchange((1, 2)), "old"))
    assert ops.activate(ctx, "p1", archives=[older])["changed"]
