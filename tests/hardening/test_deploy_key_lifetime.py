"""The deploy key copy that `qpool` reads from stack outputs never outlives the command.

A fake `pulumi` on PATH answers `stack output` with a deploy key; a fake `ssh` records the key path it was
given (and that the file existed with mode 0600 at that moment), then either fails or hangs so the command
can be interrupted. After the command ends, however it ends, no `qpool-*` directory is left in its TMPDIR.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nqpool-test-not-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n"
OUTPUTS = {
    "deployPrivateKey": KEY,
    "hosts": {name: {"role": role, "pair": pair, "publicIpv4": "127.0.0.1", "privateIp": "10.0.0.9",
                     "serverId": i + 1}
              for i, (name, role, pair) in enumerate([("qp-mainnet-p1-primary", "primary", "p1"),
                                                      ("qp-mainnet-p1-backup", "backup", "p1"),
                                                      ("qp-mainnet-monitoring", "monitoring", None)])},
    "hostKeys": {name: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedHostKeyForTestsOnly0000000000000000000"
                 for name in ("qp-mainnet-p1-primary", "qp-mainnet-p1-backup", "qp-mainnet-monitoring")},
}


def _env(tmp_path: Path, ssh_mode: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "outputs.json").write_text(json.dumps(OUTPUTS))
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(f"#!/bin/sh\ncat {tmp_path / 'outputs.json'}\n")
    ssh = bin_dir / "ssh"
    # record the -i argument and whether it was a 0600 file, then fail like an unreachable host or hang
    ssh.write_text(f"""#!{sys.executable}
import os, stat, sys, time
key = sys.argv[sys.argv.index('-i') + 1]
mode = oct(stat.S_IMODE(os.stat(key).st_mode)) if os.path.exists(key) else 'missing'
with open({str(tmp_path / 'ssh.log')!r}, 'a') as fh:
    fh.write(key + ' ' + mode + '\\n')
if {ssh_mode!r} == 'hang':
    time.sleep(120)
sys.exit(255)
""")
    for tool in (pulumi, ssh):
        tool.chmod(0o755)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QPOOL_", "HCLOUD_"))}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", TMPDIR=str(tmp), QPOOL_LAB_ROOT=str(tmp_path / "lab"),
               QPOOL_STATE_DIR=str(tmp_path / "state"))
    return env


def _qpool() -> list[str]:
    return [str(Path(sys.executable).parent / "qpool"), "status", "--stack", "mainnet"]


def _seen_keys(tmp_path: Path) -> list[str]:
    log = tmp_path / "ssh.log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def test_key_is_removed_after_a_failed_command(tmp_path: Path) -> None:
    env = _env(tmp_path, "fail")
    proc = subprocess.run(_qpool(), env=env, capture_output=True, timeout=120)
    seen = _seen_keys(tmp_path)
    assert seen, f"qpool never used the deploy key: {proc.stderr.decode()[-500:]}"
    assert all(line.endswith(" 0o600") for line in seen), seen  # it existed, private, while in use
    assert not list(Path(env["TMPDIR"]).iterdir()), "a deploy key directory outlived the command"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_key_is_removed_after_an_interrupted_command(tmp_path: Path, sig: signal.Signals) -> None:
    env = _env(tmp_path, "hang")
    proc = subprocess.Popen(_qpool(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _seen_keys(tmp_path) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert _seen_keys(tmp_path), "qpool never reached the SSH step"
        assert list(Path(env["TMPDIR"]).iterdir()), "control: the key directory exists while the command runs"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert not list(Path(env["TMPDIR"]).iterdir()), f"a deploy key directory outlived {sig.name}"
