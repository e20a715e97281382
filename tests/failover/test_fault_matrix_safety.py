"""Fault-matrix rows for issue 12 ("exactly one signer, part 2"), in their own lab, in order.

Each row asserts its outcome and then runs the independent double-sign detector and the history check of
tests/failover/matrix_lab.verify (no double or surround vote in any host's signing log; the host
that signs now holds every vote any host ever signed, except votes a fenced path's epoch gate covers):

- an SSH authentication failure on a healthy source: an error, nothing fenced, the source keeps signing;
- a fencing API that reports "off" while the source runs, cut off from the operator only: refused by the
  target's own private-network probe (a fencing witness), the source keeps signing;
- a replica forged for another host (a sender claiming another host's copy with its own key, a sender's key
  used from another host, a host that is not a sender): refused, and a file named after another pair's host
  in the replica directory is never a candidate;
- a /db/backup flood from the monitoring host: answered 404/405 by the metrics relay, no copy written;
- a primary rebuilt with an empty volume while the standby and the monitoring server hold its replicas:
  activate refused (also with --first-start), then the documented recovery (backup, restore, activate);
- a primary restored from an old archive: restore refused, activate refused, then recovered;
- a clean stop, then the source disappears, with the operator's clock behind: the gate from the later clock;
- a truncated newest replica on the target: moved aside, the previous intact replica used;
- a full disk on the target: a one-line "disk full" error, nothing started, the same run resumes;
- a key that votes on the chain from a signer outside the stack (its votes reach the beacon nodes through the
  lab's gossip directory): activate refused; once that signer stops, two epochs later the same activate starts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from lab import overlay
from lab.hosts import LabHost
from lab.testing import lab_unavailable_reason
from qpool import backups
from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.remote import AuthFailure, Refused

from .matrix_lab import (
    CLOCK,
    EPOCH_SECONDS,
    OTHER,
    PAIR,
    Lab,
    assert_exactly,
    fenced_failover,
    power_back_on,
    signing_lab,
    verify,
)

_SKIP = lab_unavailable_reason()
pytestmark = [pytest.mark.lab, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

STACK = "fmsafety"
OCTET = 37
CTL = "/usr/local/sbin/qp-validator-ctl"
VALIDATOR_DIR = "/var/lib/quantapool/validator"
REPLICA_DIR = "/var/lib/quantapool/slashing-replicas"
SHIP_KEY = "/etc/quantapool/secrets/backup-ship-key"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from signing_lab(tmp_path_factory.mktemp("fm-safety-lab"), STACK, OCTET)


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fm-safety-archives")


ARCHIVE_PASSPHRASE = secrets.token_urlsafe(24)


def _take_backup(lab: Lab, out: Path) -> Path:
    time.sleep(1.1)  # archive names carry the second
    bundle = base64.b64decode(lab.dep.secrets["validatorKeys"])
    return backups.backup(lab.ctx, PAIR, out, ARCHIVE_PASSPHRASE, bundle, key_bundle_source="lab secrets")


def _restore(lab: Lab, role: str, archive: Path) -> None:
    opened = backups.open_archive(archive.read_bytes(), ARCHIVE_PASSPHRASE)
    backups.restore(lab.ctx, lab.record(role).name, opened, lab.dep.secrets["validatorKeysPassphrase"])


def _stop_and_ship(lab: Lab, role: str) -> list[str]:
    """Stop `role`'s validator (locked), then ship its final DB to the standby and the monitoring server, as
    the backup timer would have at that moment: the replicas hold everything it signed."""
    host = lab.host(role)
    host.exec([CTL, "stop", "--reason", "issue-12 drill", "--timeout", "30"], timeout=120, check=True)
    copy = "/root/qp-final.db"
    host.exec(["python3", "-c", "import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); d=sqlite3.connect(sys.argv[2]); "
               "s.backup(d); d.close()", f"{VALIDATOR_DIR}/validator.db", copy], check=True)
    db = host.exec(["cat", copy], check=True).stdout
    host.exec(["rm", "-f", copy], check=True)
    name = f"{lab.record(role).name}--{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.db"
    sha = hashlib.sha256(db).hexdigest()
    mon = lab.ctx.inventory.monitoring()
    assert mon is not None
    stored = []
    for receiver in (lab.record(OTHER[role]), mon):
        # over SSH with the host's own shipping key, as its backup timer ships: the receiver names the copy
        # after the sender its authorized_keys line for that key names
        res = host.exec(["ssh", "-i", SHIP_KEY, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                         "-o", "UserKnownHostsFile=/etc/quantapool/backup_known_hosts", "-o", "ConnectTimeout=10",
                         f"qp-backup@{receiver.private_ip}", name, sha], input=db, timeout=60)
        assert res.returncode == 0, res
        stored.append(json.loads(res.stdout)["stored"])
    return stored  # the names each receiver gave the copy (its sender's name and the receiver's time)


def _wipe_volume(lab: Lab, role: str) -> None:
    """The volume is empty after a rebuild: no validator DB, no replicas (the signing log stays: it is the
    detector's record of what this host ever signed, which a real rebuild would lose)."""
    # every copy goes; the per-sender directories stay (a rebuilt host's `setup` makes them again)
    lab.host(role).exec(["sh", "-c", f"rm -f {VALIDATOR_DIR}/validator.db*; find {REPLICA_DIR} -mindepth 1 "
                         f"-type f -delete; rm -rf {REPLICA_DIR}/from/*/quarantine"], check=True)
    st = lab.status(role)
    assert st is not None and not st["db_present"] and st["newest_backup"] is None and st["locked"]


# -- 1. SSH authentication failure on a healthy source ------------------------------------------------

def test_ssh_auth_failure_on_healthy_source_is_an_error_not_a_fence(lab: Lab, tmp_path: Path) -> None:
    source = lab.active_role()
    target = OTHER[source]
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    ctx = lab.context()
    real_argv = ctx.ssh.argv
    src = lab.record(source)

    def argv(host: object) -> list[str]:
        words = real_argv(host)  # type: ignore[arg-type]
        if getattr(host, "name", None) == src.name:
            words[words.index("-i") + 1] = str(wrong)
        return words

    ctx.ssh.argv = argv  # type: ignore[method-assign]
    with pytest.raises(AuthFailure, match="authentication failed"):
        ops.failover(ctx, PAIR, to_role=target)
    assert lab.host(source).is_running(), "a healthy signer was powered off"
    st = lab.status(source)
    assert st is not None and ops.running(st) and not st["locked"]
    assert lab.journal(ctx).get("aborted"), "the refused run closed itself"
    lab.wait_signs(source)
    lab.assert_silent(target)
    verify(lab, "SSH auth failure on a healthy source", "error, nothing fenced; source signs", signer=source)


# -- 1b. the fencing API reports "off" while the source runs, cut off from the operator only ----------------

def test_api_says_off_while_source_runs_cut_off_from_operator_only_is_refused(lab: Lab) -> None:
    """Issue 12 item 6: the API wrongly reports the source off and its power-off never reaches it; only the
    operator's path to the source is cut. The fence "succeeds" (Hetzner is one witness); the target's own
    probe over the private network sees the source alive: refused, the source keeps signing, then the
    documented recovery (abandon the run once the source answers again) leaves it as it was."""
    source = lab.active_role()
    target = OTHER[source]
    lab.fresh_backup(source)
    api = lab.session.api
    assert api is not None
    api.lie_off(lab.session.server_ids[lab.record(source).name])
    lab.host(source).partition(lab.dep.network.bridge_ip)  # the operator only: the target still reaches it
    ctx = lab.context()
    lines: list[str] = []
    ctx.report = lines.append
    try:
        with pytest.raises(QpoolError, match=r"not proven off \(seen alive by target-probe"):
            ops.failover(ctx, PAIR, to_role=target, accept_slashing_risk=True)  # no override reaches it
        assert any("witness target-probe: ALIVE" in line for line in lines), lines
        assert lab.host(source).is_running(), "the lying API powered nothing off"
        lab.wait_signs(source)
        lab.assert_silent(target)
        assert lab.journal(ctx)["mode"] == "fenced" and not lab.journal(ctx).get("completed")
    finally:
        lab.host(source).heal()
        api.clear_faults()
    lab.wait_reachable(source)
    assert "abandoned" in ops.abandon_failover(ctx, PAIR)
    st = lab.status(source)
    assert st is not None and ops.running(st) and lab.active_role() == source
    tgt = lab.status(target)
    assert tgt is not None and ops.stopped_reasons(tgt) == [] and tgt["oplock"] is None
    verify(lab, "API says off, source cut off from operator only", "refused by the target's probe; source signs",
           signer=source)


# -- 1c. a replica forged for another host --------------------------------------------------------------

def test_replica_forged_for_another_host_is_refused_and_ignored(lab: Lab) -> None:
    """Issue 12 item 3: each key host ships with its own key, and the receiver's authorized_keys line for that
    key names the sender in its forced command and pins its address (`from=`). Over real SSH: a sender
    claiming another host's copy is refused; a sender's key used from another host (stolen) is refused by
    sshd; a host without a line (the monitoring server) cannot ship at all. The forced command's sender from
    the wrong address is refused by the receiver itself, and a copy named after another (pair's) host that
    lands in the replica directory anyway is never a candidate."""
    source = lab.active_role()
    target = OTHER[source]
    src, tgt = lab.record(source), lab.record(target)
    mon = lab.ctx.inventory.monitoring()
    assert mon is not None
    receiver, sender, mon_host = lab.host(target), lab.host(source), lab.dep.hosts[mon.name]
    lab.fresh_backup(source)
    data = b"forged slashing-protection copy"
    sha = hashlib.sha256(data).hexdigest()

    def ship_over_ssh(via: LabHost, key: str, address: str, claim: str) -> subprocess.CompletedProcess[bytes]:
        return via.exec(["ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                         "-o", "UserKnownHostsFile=/etc/quantapool/backup_known_hosts", "-o", "ConnectTimeout=10",
                         f"qp-backup@{address}", claim, sha], input=data, timeout=60)

    # the standby, with its own (authenticated) key, claims the signer's copy on the monitoring server
    res = ship_over_ssh(receiver, SHIP_KEY, mon.private_ip, f"{src.name}--20990101T000000Z.db")
    assert res.returncode == 1 and f"{tgt.name} shipped a copy named".encode() in res.stdout, res
    # the signer claims another pair's host's copy on the standby
    res = ship_over_ssh(sender, SHIP_KEY, tgt.private_ip, "qp-testnet-p2-primary--20990101T000000Z.db")
    assert res.returncode == 1 and b"may only ship its own history" in res.stdout, res
    # the signer's key, stolen onto the monitoring server: from= refuses it there (the key is not enough)
    stolen = "/root/stolen-ship-key"
    for path, mode, content in ((stolen, "077", sender.exec(["cat", SHIP_KEY], check=True).stdout),
                                ("/etc/quantapool/backup_known_hosts", "022",
                                 sender.exec(["cat", "/etc/quantapool/backup_known_hosts"], check=True).stdout)):
        mon_host.exec(["sh", "-c", f'umask {mode} && cat > "$0"', path], input=content, check=True)
    try:
        res = ship_over_ssh(mon_host, stolen, tgt.private_ip, f"{src.name}--20990101T000000Z.db")
        assert res.returncode == 255 and b"Permission denied" in res.stderr, res
    finally:
        mon_host.exec(["rm", "-f", stolen, "/etc/quantapool/backup_known_hosts"], check=True)

    def forced(sender_name: str, address: str) -> subprocess.CompletedProcess[bytes]:
        """The receiver's forced command as sshd would run it for `sender_name`'s key from `address`."""
        return receiver.exec(["runuser", "-u", "qp-backup", "--", "env",
                              f"SSH_ORIGINAL_COMMAND={src.name}--20990101T000000Z.db {sha}",
                              f"SSH_CONNECTION={address} 40000 0.0.0.0 22", CTL, "receive-backup", sender_name],
                             input=data, timeout=60)

    res = forced(src.name, mon.private_ip)
    assert res.returncode == 1 and f"{src.name} ships from {src.private_ip}".encode() in res.stdout, res.stdout
    res = forced(mon.name, mon.private_ip)
    assert res.returncode == 1 and b"not one of this host's senders" in res.stdout, res.stdout
    # the receiver accepts exactly one key: the signer's own, from its address, for its own name
    keys = receiver.exec(["cat", "/var/lib/qp-backup/.ssh/authorized_keys"], check=True).stdout.decode()
    public = " ".join(sender.exec(["ssh-keygen", "-y", "-f", SHIP_KEY], check=True).stdout.decode().split()[:2])
    assert keys.splitlines() == [f'restrict,from="{src.private_ip}",command="{CTL} receive-backup {src.name}" '
                                 f'{public}'], keys
    # copies named after another (pair's) host that land on the receiver anyway: in the old flat directory, in
    # a directory of a host that is no sender here, and in the signer's own directory under the other name
    p2 = "qp-testnet-p2-primary"
    planted = [f"{REPLICA_DIR}/{p2}--20990101T000000Z.db", f"{REPLICA_DIR}/from/{p2}/{p2}--20990101T000000Z.db",
               f"{REPLICA_DIR}/from/{src.name}/{p2}--20990101T000000Z.db"]
    for forged in planted:
        receiver.exec(["sh", "-c", f"mkdir -p $(dirname {forged}) && printf forged > {forged} && sha256sum "
                       f"{forged} | cut -d' ' -f1 > {forged}.sha256 && touch -d '+1 hour' {forged}"], check=True)
    try:
        st = lab.status(target)
        newest = st["newest_backup"] if st is not None else None
        assert newest and newest["source"] == src.name, newest
        assert newest["path"].startswith(f"{REPLICA_DIR}/from/{src.name}/{src.name}--"), newest
        listed = json.loads(receiver.exec([CTL, "list-replicas", "--owner", p2], check=True).stdout)
        assert listed["replicas"] == [], listed
        res = receiver.exec([CTL, "read-replica", f"{src.name}--../../{p2}/{p2}--20990101T000000Z.db"])
        assert res.returncode == 1 and b"is not a replicated copy" in res.stdout, res
    finally:
        receiver.exec(["rm", "-rf", *planted, *(f"{f}.sha256" for f in planted), f"{REPLICA_DIR}/from/{p2}"],
                      check=True)
    lab.wait_signs(source)
    verify(lab, "replica forged for another host", "refused (key, from=, name) / never a candidate; source signs",
           signer=source)


# -- 1d. webhook flood from the monitoring host ----------------------------------------------------------

def test_backup_webhook_flood_from_the_monitoring_host_is_refused(lab: Lab) -> None:
    """Issue 12 item 4: the validator listens on loopback; the private :8081 is the relay, which serves GET
    /metrics only. A flood of /db/backup calls from the monitoring host writes no copy; scrapes still work."""
    source = lab.active_role()
    src = lab.record(source)
    mon = lab.ctx.inventory.monitoring()
    assert mon is not None
    monitor = lab.dep.hosts[mon.name]
    backup_dir = f"{VALIDATOR_DIR}/backups"
    count = f"ls -1 {backup_dir} 2>/dev/null | wc -l"
    before = lab.host(source).exec(["sh", "-c", count], check=True).stdout
    codes = []
    for method, path in [("POST", "/db/backup"), ("GET", "/db/backup"), ("GET", "/db/backup?permanent")] * 10:
        res = monitor.exec(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "-m", "5",
                            f"http://{src.private_ip}:8081{path}"], timeout=30)
        codes.append(res.stdout.decode())
    assert set(codes) <= {"404", "405"}, codes
    scrape = monitor.exec(["curl", "-sf", "-m", "5", f"http://{src.private_ip}:8081/metrics"], timeout=30)
    assert scrape.returncode == 0 and b"validator_" in scrape.stdout, "the relay must still serve /metrics"
    after = lab.host(source).exec(["sh", "-c", count], check=True).stdout
    assert int(after) <= int(before), "a webhook copy was written (the backup timer deletes its own at once)"
    lab.wait_signs(source)
    verify(lab, "webhook flood from the monitoring host", "404/405 at the relay; no copy; source signs",
           signer=source)


# -- 2. rebuilt primary with an empty volume ------------------------------------------------------------

def test_rebuilt_primary_with_empty_volume_refused_then_recovered(lab: Lab, archive_dir: Path) -> None:
    assert lab.active_role() == "primary" and lab.signers() == ["primary"]
    shipped = _stop_and_ship(lab, "primary")
    _wipe_volume(lab, "primary")
    with pytest.raises(QpoolError) as refused:
        ops.activate(lab.ctx, PAIR)
    msg = str(refused.value)
    assert any(n in msg for n in shipped) and "qpool backup" in msg and "qpool restore" in msg
    assert "re-run with --first-start" not in msg
    with pytest.raises(QpoolError, match="--first-start refused"):
        ops.activate(lab.ctx, PAIR, first_start=True)
    assert lab.signers() == []
    # (No detector row here: the wiped primary's DB is empty by construction; the row follows the recovery.)
    # The documented recovery: backup (collects every copy), restore onto the primary, activate.
    archive = _take_backup(lab, archive_dir)
    _restore(lab, "primary", archive)
    before = lab.log_len("primary")
    assert ops.activate(lab.ctx, PAIR)["changed"]
    assert_exactly(lab, "primary")
    lab.wait_signs("primary", after=before)
    verify(lab, "rebuilt primary (empty volume), replicas elsewhere", "refused (also --first-start); "
           "backup+restore+activate: primary signs", signer="primary")


# -- 3. primary restored from an old archive -----------------------------------------------------------

def test_primary_restored_from_old_archive_is_refused(lab: Lab, archive_dir: Path) -> None:
    old = sorted(archive_dir.glob("*.qpbackup"))[-1]
    lab.wait_signs("primary")  # signs past what the archive holds
    shipped = _stop_and_ship(lab, "primary")
    _wipe_volume(lab, "primary")
    with pytest.raises(QpoolError, match="archive is too old") as refused:
        _restore(lab, "primary", old)
    assert any(n in str(refused.value) for n in shipped)
    st = lab.status("primary")
    assert st is not None and not st["db_present"] and st["oplock"] is None, "a refused restore changed the host"
    with pytest.raises(QpoolError, match="|".join(re.escape(n) for n in shipped)):
        ops.activate(lab.ctx, PAIR)
    assert lab.signers() == []
    fresh = _take_backup(lab, archive_dir)
    _restore(lab, "primary", fresh)
    before = lab.log_len("primary")
    assert ops.activate(lab.ctx, PAIR)["changed"]
    assert_exactly(lab, "primary")
    lab.wait_signs("primary", after=before)
    verify(lab, "primary restored from an old archive", "restore + activate refused; fresh archive: signs",
           signer="primary")


# -- 4. clean stop, then the source disappears; the operator's clock is behind -------------------------

def test_clean_stop_then_source_vanishes_gate_from_the_later_clock(lab: Lab) -> None:
    source = lab.active_role()
    target = OTHER[source]
    lab.fresh_backup(source)
    behind = 2 * EPOCH_SECONDS
    cut: list[str] = []

    def report(msg: str) -> None:
        if msg.startswith("[3/7]") and not cut:
            cut.append(msg)
            lab.host(source).cut_network()  # it answered the clean stop, and is gone now

    ctx = lab.context(report=report, clock=lambda: time.time() - behind)
    before = lab.log_len(target)
    result = ops.failover(ctx, PAIR, to_role=target)
    assert result["changed"] and result["mode"] == "fenced" and cut
    journal = lab.journal(ctx)
    stop = journal["steps"]["stop"]["data"]
    assert stop["graceful"] is not None, "the clean stop ran first"
    assert stop["target_time_at_fence"] - stop["fenced_at"] > behind - 5, "the target's clock was recorded"
    clock = {"genesis_time": CLOCK.genesis_time, "seconds_per_slot": CLOCK.slot_seconds,
             "slots_per_epoch": CLOCK.slots_per_epoch}
    latest = max(t for t in (stop["fenced_at"], stop["target_time_at_fence"], stop.get("beacon_time_at_fence"))
                 if t is not None)
    expected, _ = ops.epoch_gate(clock, latest)
    by_operator, _ = ops.epoch_gate(clock, stop["fenced_at"])
    gate = journal["steps"]["epoch-gate"]["data"]
    assert gate["gate_epoch"] == expected and expected > by_operator
    assert gate["fence_clock"] in ("target host", "beacon node")
    assert not lab.host(source).is_running()
    new = lab.wait_signs(target, after=before)
    assert min(r.target_epoch for r in new) >= expected, "signed before the gate of the later clock"
    verify(lab, "clean stop, source vanishes, operator clock behind", f"fenced; gate {expected} from the "
           f"{gate['fence_clock']} (operator's would be {by_operator})", signer=target, gate_epoch=expected)
    power_back_on(lab, source)
    lab.assert_silent(source)


# -- 5. truncated newest replica -----------------------------------------------------------------------

def test_truncated_newest_replica_previous_intact_one_used(lab: Lab) -> None:
    source = lab.active_role()
    target = OTHER[source]
    first = lab.fresh_backup(source)
    time.sleep(1.1)
    newest = lab.fresh_backup(source)
    assert newest["path"] != first["path"]
    lab.host(target).exec(["truncate", "-s", "100", newest["path"]], check=True)
    lab.host(source).cut_network()
    gate_epoch, _new = fenced_failover(lab, source)
    moved = lab.journal()["steps"]["move-history"]["data"]
    assert moved["replica"] == PurePosixPath(first["path"]).name
    assert moved["replicas_moved_aside"] == [PurePosixPath(newest["path"]).name]
    aside = PurePosixPath(newest["path"]).parent / "quarantine"  # in the sender's own directory
    assert aside.parent == PurePosixPath(f"{REPLICA_DIR}/from/{lab.record(source).name}"), newest["path"]
    quarantined = lab.host(target).exec(["ls", str(aside)], check=True).stdout.decode().split()
    assert PurePosixPath(newest["path"]).name in quarantined
    verify(lab, "truncated newest replica on the target", "moved aside; previous intact replica used "
           f"(+{len(moved['merged'])} monitoring copy merged); fenced, gate", signer=target, gate_epoch=gate_epoch)
    power_back_on(lab, source)
    lab.assert_silent(source)


# -- 6. full disk on the target -------------------------------------------------------------------------

def test_full_disk_on_target_clear_error_nothing_started_resumable(lab: Lab) -> None:
    """The target's validator datadir is full: a tmpfs exactly as large as its content (a copy of it) plus a
    little, then filled, mounted over the datadir. Unmounting it afterwards brings back the untouched disk."""
    source = lab.active_role()
    target = OTHER[source]
    host = lab.host(target)
    owner = host.exec(["stat", "-c", "%u %g %a", VALIDATOR_DIR], check=True).stdout.decode().split()
    used_kb = int(host.exec(["du", "-sk", VALIDATOR_DIR], check=True).stdout.split()[0])
    staging = "/root/qp-datadir-copy"
    host.exec(["cp", "-a", VALIDATOR_DIR, staging], check=True)
    host.exec(["mount", "-t", "tmpfs", "-o", f"size={used_kb + 256}k,uid={owner[0]},gid={owner[1]},mode={owner[2]}",
               "qp-full", VALIDATOR_DIR], check=True)
    try:
        host.exec(["sh", "-c", f"cp -a {staging}/. {VALIDATOR_DIR}/ && rm -rf {staging} && "
                   f"(dd if=/dev/zero of={VALIDATOR_DIR}/filler bs=4k 2>/dev/null; true)"], timeout=60, check=True)
        with pytest.raises(Refused) as refused:
            ops.failover(lab.ctx, PAIR, to_role=target)
        msg = str(refused.value)
        assert "disk full" in msg and "\n" not in msg and "Traceback" not in msg, msg
        assert lab.signers() == [], "nothing may start"
        tgt = lab.status(target)
        assert tgt is not None and tgt["locked"] and ops.stopped_reasons(tgt) == []
        journal = lab.journal()
        assert journal["steps"]["stop"]["done"] and not journal.get("aborted") and not journal["completed"]
        run_id = journal["run_id"]
    finally:
        host.exec(["umount", "-l", VALIDATOR_DIR], timeout=60)
        host.exec(["rm", "-rf", staging], timeout=60)
    verify(lab, "full disk on the target", f"one-line error ({msg.split(': ', 1)[-1][:40]}...); nobody "
           "started", signer=source)
    before = lab.log_len(target)
    result = ops.failover(lab.ctx, PAIR, to_role=target)
    assert result["changed"] and result["run_id"] == run_id, "the same run resumed"
    assert_exactly(lab, target)
    lab.wait_signs(target, after=before)
    verify(lab, "  ... then space freed, re-run", f"resumed; {target} signs", signer=target)


# -- 10. a key live on the chain whose signer is not a host of the stack ----------------------------------

def _live_keys(lab: Lab, role: str) -> dict[str, list[int]]:
    st = lab.status(role)
    assert st is not None and st["liveness"]["known"], (st or {}).get("liveness")
    return st["liveness"]["live"]


def test_key_live_on_the_chain_from_an_outsider_refuses_activate(lab: Lab) -> None:
    """The signer is stopped and locked (by hand); meanwhile a copy of one of its keys signs somewhere outside
    the stack. The beacon nodes see those votes (the lab's gossip directory), no host's history records them:
    activate refuses. The outsider stops; two epochs after its last vote the same activate starts the signer."""
    role = lab.active_role()
    host = lab.host(role)
    host.exec([CTL, "stop", "--reason", "issue-12 outsider drill", "--timeout", "30"], timeout=120, check=True)
    st = lab.status(role)
    assert st is not None and ops.stopped_reasons(st) == []
    key = st["wallet"]["pubkeys"][0]
    spe = CLOCK.slots_per_epoch
    stopped_epoch = int(st["beacon"]["current_slot"]) // spe
    outsider_epochs = range(stopped_epoch + 1, stopped_epoch + 4)
    (overlay.gossip_dir(lab.dep.state_dir) / "outsider.jsonl").write_text("".join(json.dumps({
        "ts": "2026-01-01T00:00:00.000Z", "host": "outsider", "pubkey": key, "duty": "attestation", "slot": e * spe,
        "source_epoch": e - 1, "target_epoch": e, "signing_root": "0x" + secrets.token_hex(32)}) + "\n"
        for e in outsider_epochs))
    deadline = time.monotonic() + 4 * EPOCH_SECONDS
    while key not in _live_keys(lab, role):
        assert time.monotonic() < deadline, "the outsider's vote never showed in the beacon node's liveness"
        time.sleep(0.5)
    with pytest.raises(QpoolError, match=rf"refusing: key\(s\) {re.escape(key[:14])}\.\.\. voted on the chain in "
                                         r"epoch \d+ .*another signer"):
        ops.activate(lab.ctx, PAIR)
    assert lab.signers() == []
    st = lab.status(role)
    assert st is not None and ops.stopped_reasons(st) == [] and st["oplock"] is None
    verify(lab, "key live on the chain, its signer outside the stack", "activate refused", signer=role)
    deadline = time.monotonic() + (len(outsider_epochs) + 4) * EPOCH_SECONDS
    while _live_keys(lab, role):  # the outsider stopped after its last epoch: two quiet epochs clear it
        assert time.monotonic() < deadline, "the liveness reading never cleared"
        time.sleep(0.5)
    before = lab.log_len(role)
    assert ops.activate(lab.ctx, PAIR)["changed"]
    assert_exactly(lab, role)
    lab.wait_signs(role, after=before)
    verify(lab, "  ... outsider stopped, two epochs later", f"activate: {role} signs", signer=role)
