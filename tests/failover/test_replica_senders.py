"""Issue 12 item 3: replicas are separated by sender and pair on the operator's side too.

`qpool backup` reads the monitoring server's newest copy of THIS pair only (the monitoring server holds every
pair's copies in one directory, each named after its authenticated sender). The listing script runs here in
a shell on a temporary directory, as it would over SSH.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from qpool import backups
from qpool.inventory import HostRecord
from qpool.remote import RemoteResult

MON = HostRecord("h-mon", "monitoring", None, "192.0.2.13", "10.0.0.13")


class LocalShell:
    """Runs the remote command locally (`sudo` dropped): the script itself is under test."""

    def run(self, host: HostRecord, command: str, **_kw: Any) -> RemoteResult:
        words = shlex.split(command)
        assert words[0] == "sudo"
        proc = subprocess.run(words[1:], capture_output=True, timeout=30, check=False)
        return RemoteResult(proc.returncode, proc.stdout, proc.stderr)


def _copy(directory: Path, name: str, mtime: float) -> None:
    (directory / name).write_bytes(name.encode())
    (directory / f"{name}.sha256").write_text(f"{'ab' * 32}  {name}\n")
    os.utime(directory / name, (mtime, mtime))


def test_monitoring_copy_is_taken_from_this_pairs_senders_only(tmp_path: Path) -> None:
    _copy(tmp_path, "p1-primary--20260101T000000000000Z.db", 1_000)
    _copy(tmp_path, "p1-backup--20260101T000100000000Z.db", 2_000)
    _copy(tmp_path, "p2-primary--20260101T000200000000Z.db", 3_000)  # newest in the directory: another pair
    ctx = SimpleNamespace(ssh=LocalShell())
    newest = backups._newest_replica_on(ctx, MON, str(tmp_path), ["p1-primary", "p1-backup"])  # type: ignore[arg-type]
    assert newest is not None and newest[0] == "p1-backup--20260101T000100000000Z.db" and newest[1] == 2_000
    assert newest[2] == "ab" * 32
    assert backups._newest_replica_on(ctx, MON, str(tmp_path), ["p3-primary"]) is None  # type: ignore[arg-type]
