"""Issue 12 item 3: replicas are separated by sender and pair on the operator's side too.

`qpool backup` reads the monitoring server's newest copy of THIS pair only (the monitoring server holds every
key host's copies, each in the directory of its authenticated sender: `<replica dir>/from/<sender>/`). The host's real
`qp-validator-ctl list-replicas` runs here on a temporary directory, as it would over SSH.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cloud_init.host_tools import CTL_PATH
from qpool import backups
from qpool.inventory import HostRecord
from qpool.remote import RemoteResult, deploy_command_problem

MON = HostRecord("h-mon", "monitoring", None, "192.0.2.13", "10.0.0.13")
CTL_SOURCE = Path(__file__).resolve().parents[2] / "cloud_init/files/qp_validator_ctl.py"


class LocalShell:
    """Runs the remote qp-validator-ctl command locally (`sudo` dropped) against a replica directory."""

    def __init__(self, replica_dir: Path) -> None:
        self.config = replica_dir.parent / "validator-ctl.json"
        # the monitoring server's senders: every key host (their keys do not matter to the read side)
        senders = {name: {"address": "10.0.0.1", "public_key": "ssh-ed25519 AAAA"}
                   for name in ("p1-primary", "p1-backup", "p2-primary")}
        self.config.write_text(json.dumps({"replica_dir": str(replica_dir), "backup_senders": senders}))

    def run(self, host: HostRecord, command: str, **_kw: Any) -> RemoteResult:
        assert deploy_command_problem(command) is None, command
        words = shlex.split(command)
        assert words[:2] == ["sudo", CTL_PATH], command
        proc = subprocess.run(["python3", str(CTL_SOURCE), *words[2:]], capture_output=True, timeout=30,
                              check=False, env={**os.environ, "QP_CTL_CONFIG": str(self.config)})
        return RemoteResult(proc.returncode, proc.stdout, proc.stderr)


def _copy(replicas: Path, name: str, mtime: float) -> None:
    """A copy as the receiver stores it: in its sender's own directory."""
    directory = replicas / "from" / name.split("--")[0]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(name.encode())
    (directory / f"{name}.sha256").write_text(f"{'ab' * 32}  {name}\n")
    os.utime(directory / name, (mtime, mtime))


def test_monitoring_copy_is_taken_from_this_pairs_senders_only(tmp_path: Path) -> None:
    replicas = tmp_path / "replicas"
    replicas.mkdir()
    _copy(replicas, "p1-primary--20260101T000000000000Z.db", 1_000)
    _copy(replicas, "p1-backup--20260101T000100000000Z.db", 2_000)
    _copy(replicas, "p2-primary--20260101T000200000000Z.db", 3_000)  # newest in the directory: another pair
    ctx = SimpleNamespace(ssh=LocalShell(replicas))
    newest = backups._newest_replica_on(ctx, MON, ["p1-primary", "p1-backup"])  # type: ignore[arg-type]
    assert newest is not None and newest[0] == "p1-backup--20260101T000100000000Z.db" and newest[1] == 2_000
    assert newest[2] == "ab" * 32
    assert backups._newest_replica_on(ctx, MON, ["p3-primary"]) is None  # type: ignore[arg-type]
    _copy(replicas, "p3-primary--20260101T000300000000Z.db", 4_000)  # a directory of a host that is no sender
    assert backups._newest_replica_on(ctx, MON, ["p3-primary"]) is None  # type: ignore[arg-type]
    # the copy itself, by name only: never a path, never another directory
    name = "p1-backup--20260101T000100000000Z.db"
    read = ctx.ssh.run(MON, backups.ctl_command("read-replica", name))
    assert read.rc == 0 and read.stdout == name.encode()
    for bad in ("../validator-ctl.json", "/etc/shadow", "p1-backup--x.db.sha256", "nothere--1Z.db",
                "p1-backup--../../p2-primary/p2-primary--20260101T000200000000Z.db", "p1-backup--..db"):
        refused = ctx.ssh.run(MON, backups.ctl_command("read-replica", bad))
        assert refused.rc == 1 and b"is not a replicated copy" in refused.stdout, bad


def test_a_copy_in_another_senders_directory_is_never_attributed_to_its_name(tmp_path: Path) -> None:
    """Attribution is the directory (the key that wrote it), never the file's name: p2's directory holding a
    file named after p1 is neither listed nor readable as p1's."""
    replicas = tmp_path / "replicas"
    _copy(replicas, "p2-primary--20260101T000200000000Z.db", 3_000)
    planted = replicas / "from" / "p2-primary" / "p1-primary--20990101T000000000000Z.db"
    planted.write_bytes(b"forged")
    (replicas / "p1-primary--20990101T000000000000Z.db").write_bytes(b"forged, old flat layout")
    ctx = SimpleNamespace(ssh=LocalShell(replicas))
    assert backups._newest_replica_on(ctx, MON, ["p1-primary"]) is None  # type: ignore[arg-type]
    listed = backups.list_replicas(ctx, MON, ["p2-primary"])  # type: ignore[arg-type]
    assert [r["name"] for r in listed] == ["p2-primary--20260101T000200000000Z.db"]
    refused = ctx.ssh.run(MON, backups.ctl_command("read-replica", planted.name))
    assert refused.rc == 1 and b"is not a replicated copy" in refused.stdout
