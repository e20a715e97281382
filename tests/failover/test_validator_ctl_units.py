"""qp-validator-ctl's checks that need no systemd: the operation lock, receiving backups, importing history.

Why: these run on the key hosts and are the last word on "this host may change state"; each refusal
must happen before anything is written. The module is loaded from its file with a temporary config
(QP_CTL_CONFIG), as the host would load /etc/quantapool/validator-ctl.json.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CTL_FILE = Path(__file__).resolve().parents[2] / "cloud_init" / "files" / "qp_validator_ctl.py"
KEY_P1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP1p1p1p1p1p1p1p1p1p1p1p1p1p1p1p1p1p1p1p1p1p"
KEY_P2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP2p2p2p2p2p2p2p2p2p2p2p2p2p2p2p2p2p2p2p2p2p"


@pytest.fixture
def ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    config = {
        "oplock_dir": str(tmp_path / "run" / "qpool-op"),
        "replica_dir": str(tmp_path / "replicas"),
        "backup_keep": 3,
        "lock_file": str(tmp_path / "etc" / "VALIDATOR_LOCKED"),
        "validator_bin": "/nonexistent/validator",
        "validator_user": "nobody",
        "validator_datadir": str(tmp_path / "validator"),
        "metrics_host": "127.0.0.1",
        "metrics_port": 1,
        "textfile_dir": str(tmp_path / "textfiles"),
        "backup_senders": {"qp-p1-primary": {"address": "10.0.0.11", "public_key": KEY_P1},
                           "qp-p2-primary": {"address": "10.0.0.21", "public_key": KEY_P2}},
    }
    path = tmp_path / "validator-ctl.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("QP_CTL_CONFIG", str(path))
    spec = importlib.util.spec_from_file_location("qp_validator_ctl_under_test", CTL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.CFG = module.load_config()
    monkeypatch.setitem(sys.modules, "qp_validator_ctl_under_test", module)
    return module


# -- operation lock -------------------------------------------------------------------------------------

def test_oplock_one_run_at_a_time(ctl: ModuleType) -> None:
    held = ctl.oplock_acquire("run-a", "qpool@laptop")
    assert held["run_id"] == "run-a"
    assert ctl.oplock_acquire("run-a", "qpool@laptop")["run_id"] == "run-a", "a resumed run re-enters"
    with pytest.raises(ctl.Refused, match="run-a by qpool@laptop"):
        ctl.oplock_acquire("run-b", "qpool@desk")
    ctl.require_oplock("run-a")
    with pytest.raises(ctl.Refused):
        ctl.require_oplock("run-b")


def test_oplock_release_only_by_owner_unless_forced(ctl: ModuleType) -> None:
    ctl.oplock_acquire("run-a", "o")
    with pytest.raises(ctl.Refused, match="belongs to run run-a"):
        ctl.oplock_release("run-b")
    assert ctl.read_oplock()["run_id"] == "run-a"
    ctl.oplock_release("run-b", force=True)
    assert ctl.read_oplock() is None
    ctl.oplock_release("run-a")  # releasing nothing is not an error
    ctl.oplock_acquire("run-c", "o")
    ctl.oplock_release("run-c")
    assert ctl.read_oplock() is None


def test_activate_refused_without_the_oplock(ctl: ModuleType) -> None:
    """The host-side start refuses a run that does not hold this host's operation lock."""
    ctl.oplock_acquire("run-a", "o")
    with pytest.raises(ctl.Refused, match="does not hold the operation lock"):
        ctl.activate("run-b", first_start=False, timeout=1, not_before_epoch=None)


class _FakeSystemd:
    """Stands in for systemctl under `activate`: records each call; the validator comes up unless told not to."""

    def __init__(self, ctl: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, comes_up: bool = True,
                 backup_start_fails: bool = False) -> None:
        import subprocess

        self.calls: list[list[str]] = []

        def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
            self.calls.append(list(argv))
            failed = backup_start_fails and ctl.BACKUP_UNIT in argv
            return subprocess.CompletedProcess(argv, 1 if failed else 0, b"",
                                               b"Unit qp-slashing-backup.service not found.\n" if failed else b"")

        monkeypatch.setattr(ctl, "run", run)
        monkeypatch.setattr(ctl, "RUNTIME_BLOCK", tmp_path / "run" / "blocked.conf")
        monkeypatch.setattr(ctl, "ACTIVATED_BY", tmp_path / "run" / "activated-by.json")
        monkeypatch.setattr(ctl, "status", lambda: {"processes": [], "unit": {"active": "inactive"},
                                                    "db_present": True})
        monkeypatch.setattr(ctl, "systemctl_show", lambda unit=ctl.UNIT: {"ActiveState": "active"})
        monkeypatch.setattr(ctl, "validator_pids", lambda: [4242])
        monkeypatch.setattr(ctl, "port_open", lambda host, port: comes_up)
        monkeypatch.setattr(ctl, "wait_until", lambda predicate, timeout, interval=0.5: predicate())
        monkeypatch.setattr(ctl, "_publish_state", lambda: None)
        monkeypatch.setattr(ctl, "stop", lambda reason, timeout: {"stopped": True})

    def starts(self) -> list[list[str]]:
        return [c for c in self.calls if c[:2] == ["systemctl", "start"]]


def test_activate_queues_a_backup_once_the_validator_runs(ctl: ModuleType, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A new signer ships a copy of its history at once, not at the timer's next tick up to 5 minutes later
    (SlashingProtectionBackupTooOld is pending until then), and only after its validator is verified up."""
    systemd = _FakeSystemd(ctl, monkeypatch, tmp_path)
    ctl.oplock_acquire("run-a", "o")
    result = ctl.activate("run-a", first_start=False, timeout=1, not_before_epoch=None)
    assert result["running"] is True and result["first_backup"] == "queued"
    assert systemd.starts() == [["systemctl", "start", ctl.UNIT],
                                ["systemctl", "start", "--no-block", "qp-slashing-backup.service"]]
    host_tools = (CTL_FILE.parents[1] / "host_tools.py").read_text()
    assert f'HostFile("/etc/systemd/system/{ctl.BACKUP_UNIT}"' in host_tools, "the unit the timer starts"


def test_activate_that_fails_verification_queues_no_backup(ctl: ModuleType, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    systemd = _FakeSystemd(ctl, monkeypatch, tmp_path, comes_up=False)
    ctl.oplock_acquire("run-a", "o")
    with pytest.raises(ctl.Refused, match="did not come up"):
        ctl.activate("run-a", first_start=False, timeout=1, not_before_epoch=None)
    assert systemd.starts() == [["systemctl", "start", ctl.UNIT]]


def test_activate_succeeds_when_the_backup_cannot_be_queued(ctl: ModuleType, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The validator already runs: a backup that cannot be queued is reported, never turned into a failed start
    (the timer takes the next one; the alert reports a lasting failure)."""
    _FakeSystemd(ctl, monkeypatch, tmp_path, backup_start_fails=True)
    ctl.oplock_acquire("run-a", "o")
    result = ctl.activate("run-a", first_start=False, timeout=1, not_before_epoch=None)
    assert result["running"] is True
    assert result["first_backup"] == ("not queued (Unit qp-slashing-backup.service not found.); "
                                      "the timer takes the next one")


# -- receive_backup -------------------------------------------------------------------------------------

GOOD = "qp-p1-primary--20260101T000000Z.db"
FROM_P1 = "10.0.0.11 50022 10.0.0.12 22"  # SSH_CONNECTION as sshd sets it for the forced command
FROM_P2 = "10.0.0.21 50022 10.0.0.12 22"


def _receive(ctl: ModuleType, name: str, data: bytes, conn: str = FROM_P1,
             forced: str | None = "qp-p1-primary") -> dict[str, Any]:
    """As the forced command of `forced`'s authorized_keys line runs it, `conn` being SSH_CONNECTION (after
    `setup` laid out one directory per allowed sender)."""
    _layout(ctl)
    return ctl.receive_backup(forced, name, hashlib.sha256(data).hexdigest(), data, conn)


def _layout(ctl: ModuleType) -> dict[str, Any]:
    import os

    return ctl.prepare_replica_dirs(os.getuid(), os.getuid(), os.getgid())


def _stored(ctl: ModuleType) -> list[str]:
    """Every copy received anywhere under the replica directory (any depth: nothing may land outside)."""
    replicas = Path(ctl.cfg("replica_dir"))
    return sorted(p.name for p in replicas.rglob("*.db")) if replicas.exists() else []


@pytest.mark.parametrize("name", ["../evil--x.db", "sub/dir--x.db", "nodoubledash.db", ".hidden--x.db",
                                  "qp-p2-primary--20260101T000000Z.db"])
def test_receive_backup_refuses_a_name_that_is_not_the_senders(ctl: ModuleType, name: str) -> None:
    """Issue 12 item 3: the sender's own words never name a file; a claim that is not its own is refused."""
    with pytest.raises(ctl.Refused, match="may only ship its own history"):
        _receive(ctl, name, b"db")
    assert _stored(ctl) == []


@pytest.mark.parametrize("forced", ["qp-p9-primary", "", None])
def test_receive_backup_refuses_a_forced_sender_that_is_not_configured(ctl: ModuleType, forced: str | None) -> None:
    """The forced command names the sender (one authorized_keys line per sender key): an unknown name, or no
    name (an authorized_keys from before per-host keys), stores nothing."""
    with pytest.raises(ctl.Refused, match=r"not one of this host's senders|no sender in the forced command"):
        _receive(ctl, "qp-p9-primary--20260101T000000Z.db", b"db", forced=forced)
    assert _stored(ctl) == []


@pytest.mark.parametrize("conn", ["10.0.0.99 1 10.0.0.12 22", "", FROM_P2])
def test_receive_backup_refuses_a_senders_key_from_another_address(ctl: ModuleType, conn: str) -> None:
    """p1's key used from anywhere but p1's private address (p2's included) is refused: the key AND the
    address must be the sender's (sshd's from= says the same; this is the receiver's own second check)."""
    with pytest.raises(ctl.Refused, match=r"qp-p1-primary ships from 10\.0\.0\.11"):
        _receive(ctl, GOOD, b"db", conn)
    assert _stored(ctl) == []


def test_receive_backup_the_forced_sender_wins_over_the_address_of_another_sender(ctl: ModuleType) -> None:
    """p2's key from p2's address claiming p1's copy: refused by name; the copy is p2's or nothing."""
    with pytest.raises(ctl.Refused, match="qp-p2-primary shipped a copy named"):
        _receive(ctl, GOOD, b"db", FROM_P2, forced="qp-p2-primary")
    got = _receive(ctl, "qp-p2-primary--20260101T000000Z.db", b"db", FROM_P2, forced="qp-p2-primary")
    assert got["sender"] == "qp-p2-primary" and _stored(ctl) == [got["stored"]]


def test_authorized_keys_one_line_per_sender_with_its_key_address_and_name(ctl: ModuleType) -> None:
    """`setup` writes these for the qp-backup user: the key that authenticates selects the line, so the sender
    the forced command names is the key's owner; from= pins its address; `restrict` forbids everything else."""
    text = ctl.authorized_keys("/usr/local/sbin/qp-validator-ctl", ctl.cfg("backup_senders"))
    assert text.splitlines() == [
        f'restrict,from="10.0.0.11",command="/usr/local/sbin/qp-validator-ctl receive-backup qp-p1-primary" {KEY_P1}',
        f'restrict,from="10.0.0.21",command="/usr/local/sbin/qp-validator-ctl receive-backup qp-p2-primary" {KEY_P2}',
    ]
    assert ctl.authorized_keys("/x", {}) == "", "no sender, no line: never a wildcard"


@pytest.mark.parametrize("sender", [
    {'qp-p1-primary" ssh-ed25519 AAAA': {"address": "10.0.0.11", "public_key": KEY_P1}},
    {"qp-p1-primary": {"address": "10.0.0.11,*", "public_key": KEY_P1}},
    {"qp-p1-primary": {"address": "10.0.0.11", "public_key": 'command="sh" ' + KEY_P1}},
    {"qp-p1-primary": {"address": "10.0.0.11", "public_key": "ssh-rsa AAAAB3"}},
])
def test_authorized_keys_refuses_a_malformed_sender(ctl: ModuleType, sender: dict) -> None:
    with pytest.raises(ctl.Refused, match="malformed"):
        ctl.authorized_keys("/x", sender)


def test_receive_backup_names_the_file_from_the_authenticated_sender(ctl: ModuleType) -> None:
    got = _receive(ctl, "qp-p1-primary--../../../etc/cron.d/x", b"db")
    assert got["sender"] == "qp-p1-primary" and got["stored"].startswith("qp-p1-primary--")
    assert "/" not in got["stored"] and _stored(ctl) == [got["stored"]]


def test_receive_backup_rejects_checksum_mismatch(ctl: ModuleType) -> None:
    with pytest.raises(ctl.Refused, match="checksum mismatch"):
        ctl.receive_backup("qp-p1-primary", GOOD, hashlib.sha256(b"original").hexdigest(), b"corrupted", FROM_P1)
    assert _stored(ctl) == []


def test_receive_backup_stores_in_the_senders_own_directory_with_its_own_retention(ctl: ModuleType) -> None:
    """Each sender has its own directory and retention: p2's flood does not push out p1's copies."""
    import os

    replicas = Path(ctl.cfg("replica_dir"))
    p1, p2 = replicas / "from" / "qp-p1-primary", replicas / "from" / "qp-p2-primary"
    names = []
    for i in range(5):
        data = f"db-{i}".encode()
        name = _receive(ctl, f"qp-p1-primary--2026010{i}T000000Z.db", data)["stored"]
        assert (p1 / name).is_file() and not (replicas / name).exists()
        os.utime(p1 / name, (1_000_000 + i, 1_000_000 + i))
        names.append(name)
    for i in range(6):
        _receive(ctl, f"qp-p2-primary--2026020{i}T000000Z.db", f"p2-{i}".encode(), FROM_P2, "qp-p2-primary")
    assert sorted(p.name for p in p1.glob("*.db")) == sorted(names[-3:])
    assert len(list(p2.glob("*.db"))) == 3 and all(p.name.startswith("qp-p2-") for p in p2.glob("*.db"))
    assert not list(replicas.glob("*.db")), "nothing in the old shared directory"
    newest = p1 / names[-1]
    assert (p1 / f"{names[-1]}.sha256").read_text().split()[0] == hashlib.sha256(newest.read_bytes()).hexdigest()
    assert ctl.newest_backup()["source"] in ("qp-p1-primary", "qp-p2-primary")


def test_receive_backup_refused_until_setup_made_the_senders_directory(ctl: ModuleType) -> None:
    """The receiver never creates a sender's directory itself (setup does, for the allowed senders only)."""
    with pytest.raises(ctl.Refused, match="no replica directory for qp-p1-primary"):
        ctl.receive_backup("qp-p1-primary", GOOD, hashlib.sha256(b"db").hexdigest(), b"db", FROM_P1)
    assert _stored(ctl) == []


def test_setup_layout_one_directory_per_allowed_sender_root_owned_parents(ctl: ModuleType) -> None:
    import stat

    got = _layout(ctl)
    replicas = Path(ctl.cfg("replica_dir"))
    assert got["replica_senders"] == ["qp-p1-primary", "qp-p2-primary"]
    assert sorted(p.name for p in (replicas / "from").iterdir()) == got["replica_senders"]
    assert stat.S_IMODE((replicas / "from" / "qp-p1-primary").stat().st_mode) == 0o700
    assert stat.S_IMODE((replicas / "from").stat().st_mode) == 0o750
    assert _layout(ctl)["replicas_migrated"] == []  # idempotent


def test_setup_migrates_copies_of_the_old_flat_layout_into_their_senders_directory(ctl: ModuleType) -> None:
    """A day-2 `pulumi up` keeps every history copy: flat `<sender>--*` files move (mtime and sidecar kept);
    files of hosts that are not senders stay where they are and are never candidates."""
    import os

    replicas = Path(ctl.cfg("replica_dir"))
    replicas.mkdir(parents=True)
    for name, age in (("qp-p1-primary--20260101T000000Z.db", 900), ("qp-p2-primary--20260101T000000Z.db", 600),
                      ("qp-p9-primary--20990101T000000Z.db", 1)):
        (replicas / name).write_bytes(name.encode())
        (replicas / f"{name}.sha256").write_text(f"{hashlib.sha256(name.encode()).hexdigest()}  {name}\n")
        os.utime(replicas / name, (1_000_000 - age, 1_000_000 - age))
    got = _layout(ctl)
    assert sorted(got["replicas_migrated"]) == ["qp-p1-primary--20260101T000000Z.db",
                                                 "qp-p2-primary--20260101T000000Z.db"]
    moved = replicas / "from" / "qp-p1-primary" / "qp-p1-primary--20260101T000000Z.db"
    assert moved.is_file() and moved.stat().st_mtime == 1_000_000 - 900
    assert moved.with_suffix(".db.sha256").is_file()
    assert (replicas / "qp-p9-primary--20990101T000000Z.db").is_file(), "not a sender: left, never deleted"
    assert sorted(p.name for p in replicas.glob("*.db")) == ["qp-p9-primary--20990101T000000Z.db"]
    doc = ctl.select_replica()
    assert doc["name"] == "qp-p2-primary--20260101T000000Z.db" and doc["source"] == "qp-p2-primary"
    assert doc["skipped"] == []
    assert ctl.newest_backup()["path"] == str(replicas / "from" / "qp-p2-primary" / doc["name"])


def test_newest_backup_ignores_files_of_hosts_that_are_not_senders(ctl: ModuleType) -> None:
    """Only `<sender>--*.db` in `from/<sender>/` is a candidate: not the old flat directory, not a directory
    of a host that is no sender here, not another host's name inside a sender's directory."""
    import os

    name = _receive(ctl, GOOD, b"mine")["stored"]
    replicas = Path(ctl.cfg("replica_dir"))
    mine = replicas / "from" / "qp-p1-primary" / name
    (replicas / "from" / "qp-p9-primary").mkdir()
    for forged in (replicas / "qp-p9-primary--20990101T000000Z.db",
                   replicas / "from" / "qp-p9-primary" / "qp-p9-primary--20990101T000000Z.db",
                   replicas / "from" / "qp-p1-primary" / "qp-p2-primary--20990101T000000Z.db",
                   replicas / "from" / "qp-p2-primary" / "qp-p1-primary--20990101T000000Z.db"):
        forged.write_bytes(b"forged")
        forged.with_suffix(".db.sha256").write_text(hashlib.sha256(b"forged").hexdigest())
    os.utime(mine, (1_000_000, 1_000_000))
    assert ctl.newest_backup()["path"] == str(mine) and ctl.newest_backup()["source"] == "qp-p1-primary"
    assert ctl.select_replica()["name"] == name
    assert [r["name"] for r in ctl.list_replicas(["qp-p2-primary"])["replicas"]] == []
    assert [r["name"] for r in ctl.list_replicas(["qp-p1-primary"])["replicas"]] == [name]
    with pytest.raises(ctl.Refused, match="not a replicated backup"):
        ctl.export_replica(str(replicas / "from" / "qp-p1-primary" / "qp-p2-primary--20990101T000000Z.db"))


@pytest.mark.parametrize("name", ["qp-p1-primary--../../x.db", "qp-p1-primary--a/b.db", "../qp-p1-primary--x.db",
                                  "qp-p1-primary--...db", "/etc/shadow", "qp-p1-primary/x--y.db"])
def test_read_replica_refuses_a_name_with_a_path_separator_or_dotdot(ctl: ModuleType, name: str) -> None:
    _receive(ctl, GOOD, b"mine")
    with pytest.raises(ctl.Refused, match="is not a replicated copy"):
        ctl.read_replica(name)


@pytest.mark.parametrize("owner", ["..", "a/b", "../from", ""])
def test_list_replicas_refuses_an_owner_that_is_not_a_host_name(ctl: ModuleType, owner: str) -> None:
    with pytest.raises(ctl.Refused, match="not a host name"):
        ctl.list_replicas([owner])


# -- import_slashing ------------------------------------------------------------------------------------

def interchange(version: str = "5") -> bytes:
    return json.dumps({"metadata": {"interchange_format_version": version, "genesis_validators_root": "0x00"},
                       "data": []}).encode()


@pytest.fixture
def must_not_touch_db(ctl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Any check of the validator state, or running the client, would mean the import went too far."""
    def boom(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("import went past its input checks")

    monkeypatch.setattr(ctl, "_require_stopped_and_locked", boom)
    monkeypatch.setattr(ctl, "_as_validator", boom)
    return ctl


def test_import_rejects_wrong_sha(must_not_touch_db: ModuleType) -> None:
    ctl = must_not_touch_db
    data = interchange()
    with pytest.raises(ctl.Refused, match="checksum mismatch"):
        ctl.import_slashing(data, hashlib.sha256(data + b" ").hexdigest())


@pytest.mark.parametrize("data", [b"not json", interchange("4"), b'{"metadata": {}}',
                                  b'{"metadata": {"interchange_format_version": "5"}, "data": {}}'])
def test_import_rejects_non_interchange(must_not_touch_db: ModuleType, data: bytes) -> None:
    ctl = must_not_touch_db
    with pytest.raises(ctl.Refused, match="not an EIP-3076 interchange"):
        ctl.import_slashing(data, hashlib.sha256(data).hexdigest())


def test_import_refused_while_validator_runs(ctl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid file, but the validator is not stopped and locked: refused before the client is run."""
    monkeypatch.setattr(ctl, "status", lambda: {"unit": {"active": "active"}, "processes": [9],
                                                "metrics_port_open": True, "locked": False})
    monkeypatch.setattr(ctl, "_as_validator", lambda *_a, **_k: pytest.fail("client run while validator active"))
    data = interchange()
    with pytest.raises(ctl.Refused, match="must be stopped and locked"):
        ctl.import_slashing(data, hashlib.sha256(data).hexdigest())


def test_host_stopped_reasons_are_independent(ctl: ModuleType) -> None:
    stopped = {"unit": {"active": "inactive"}, "processes": [], "metrics_port_open": False, "locked": True}
    assert ctl.stopped_reasons(stopped) == []
    for over in ({"unit": {"active": "deactivating"}}, {"processes": [3]}, {"metrics_port_open": True},
                 {"locked": False}):
        assert len(ctl.stopped_reasons({**stopped, **over})) == 1


def test_export_replica_only_from_replica_dir_and_checksummed(ctl: ModuleType, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere--x.db"
    outside.write_bytes(b"x")
    with pytest.raises(ctl.Refused, match="not a replicated backup"):
        ctl.export_replica(str(outside))
    data = b"replica"
    stored = Path(ctl.cfg("replica_dir")) / "from" / "qp-p1-primary" / _receive(ctl, GOOD, data)["stored"]
    stored.write_bytes(b"bit rot")
    with pytest.raises(ctl.Refused, match="fails its checksum"):
        ctl.export_replica(str(stored))


def test_cli_refusal_is_json_with_exit_1(ctl: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["oplock", "acquire", "--run-id", "a", "--owner", "o"]) == 0
    capsys.readouterr()
    assert ctl.main(["oplock", "acquire", "--run-id", "b", "--owner", "o"]) == 1
    assert "another qpool operation" in json.loads(capsys.readouterr().out)["error"]


# -- restart pending (issue 11) ----------------------------------------------------------------------------

def test_status_reports_the_clients_bundles_restart_pending_marker(ctl: ModuleType, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """qpool status shows what qp-clients-state wrote: the running validator does not use the installed binary."""
    monkeypatch.setattr(ctl, "systemctl_show", lambda unit=None: {"ActiveState": "active", "MainPID": "7"})
    monkeypatch.setattr(ctl, "http_json", lambda url, timeout=3.0: (503, None))
    monkeypatch.setattr(ctl, "rpc", lambda method, timeout=3.0: None)
    monkeypatch.setattr(ctl, "validator_pids", lambda: [7])
    monkeypatch.setattr(ctl, "port_open", lambda host, port, timeout=1.0: True)
    monkeypatch.setattr(ctl, "chain_clock", lambda: None)
    monkeypatch.setitem(ctl.CFG, "role_file", str(tmp_path / "role"))
    monkeypatch.setitem(ctl.CFG, "metrics_host", "127.0.0.1")
    monkeypatch.setitem(ctl.CFG, "beacon_rest", "http://127.0.0.1:1/qrl/v1")
    monkeypatch.setitem(ctl.CFG, "rpc_namespace", "qrl")
    monkeypatch.setitem(ctl.CFG, "db_backup_dir", str(tmp_path / "backups"))
    assert ctl.status()["restart_pending"] is None, "no marker configured: nothing pending"
    marker = tmp_path / "validator.restart-pending.json"
    monkeypatch.setitem(ctl.CFG, "restart_pending_file", str(marker))
    assert ctl.status()["restart_pending"] is None
    marker.write_text(json.dumps({"reason": "installed validator binary/unit differs", "since": "x"}))
    assert ctl.status()["restart_pending"]["reason"].startswith("installed validator binary")
