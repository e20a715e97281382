"""CLI smoke test (issue 5): `qpool lab up --detach`, `lab status`, `qpool status`, `lab apply`, `lab down`, as an
operator types them, with their exit codes and output.

This is the one lab test that uses the CLI's real state root (/var/lib/quantapool-lab): the commands have
no state-root option on purpose. It uses its own stack name `e2ecli`, deployed from a copy of the testnet
stack file on subnet 10.42.29.0/24 passed with `--config-file`, so it never touches another lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.testing import REPO, config_variant

from .conftest import LAB_MARKS

pytestmark = LAB_MARKS

STACK = "e2ecli"
OCTET = 29
LAB_ROOT = Path("/var/lib/quantapool-lab")


def qpool(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the CLI the way an operator does (a fresh process, repo as working directory)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HCLOUD_FENCING_TOKEN", "QPOOL_INVENTORY", "QPOOL_LAB_ROOT")}
    return subprocess.run([sys.executable, "-m", "qpool_cli.main", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The stack file for `e2ecli`; whatever happens, the lab is brought down afterwards."""
    path = config_variant(tmp_path_factory.mktemp("e2ecli") / f"Pulumi.{STACK}.yaml", OCTET)
    if (LAB_ROOT / STACK).exists():  # leftovers of an interrupted run
        qpool("lab", "down", "--stack", STACK, timeout=300)
    try:
        yield path
    finally:
        qpool("lab", "down", "--stack", STACK, timeout=300)


def test_lab_up_status_down(config_file: Path) -> None:
    up = qpool("lab", "up", "--stack", STACK, "--config-file", str(config_file), "--detach")
    assert up.returncode == 0, _explain(up)
    assert f"lab {STACK} is up: 3 hosts" in up.stdout and f"10.42.{OCTET}.0/24" in up.stdout, _explain(up)
    state = json.loads((LAB_ROOT / STACK / "lab.json").read_text())
    assert state["ready"] is True and state["stack"] == STACK
    owner = state["pid"]
    os.kill(owner, 0)  # the detached owner process is alive (raises if not)
    hosts = state["hosts"]
    assert {h["role"] for h in hosts.values()} == {"primary", "backup", "monitoring"}
    assert all(h["ip"].startswith(f"10.42.{OCTET}.") for h in hosts.values()), hosts

    lab_status = qpool("lab", "status", "--stack", STACK, timeout=120)
    assert lab_status.returncode == 0, _explain(lab_status)
    assert f"owner pid {owner}, bridge up" in lab_status.stdout, _explain(lab_status)
    for name in hosts:
        line = next((ln for ln in lab_status.stdout.splitlines() if name in ln), "")
        assert line.endswith("ssh ok"), _explain(lab_status)

    status = qpool("status", "--stack", STACK, timeout=300)
    assert status.returncode == 0, _explain(status)
    assert "signing: nobody" in status.stdout and "MORE THAN ONE SIGNER" not in status.stdout, _explain(status)
    key_lines = [ln for ln in status.stdout.splitlines() if "-p1-" in ln and not ln.startswith("pair ")]
    # it ends with the next safe action: nobody signs yet, so start the configured active host
    assert status.stdout.splitlines()[-1].startswith("pair p1: next: ") and \
        f"qpool activate --stack {STACK} --pair p1" in status.stdout.splitlines()[-1], _explain(status)
    assert len(key_lines) == 2, _explain(status)
    for line in key_lines:
        assert "stopped" in line and "lock=on" in line and "UNREACHABLE" not in line, _explain(status)
    as_json = qpool("status", "--stack", STACK, "--json", timeout=300)
    assert as_json.returncode == 0, _explain(as_json)
    doc = json.loads(as_json.stdout)
    assert [p["signers"] for p in doc["pairs"]] == [[]], doc
    assert [(h["locked"], h["signing"]) for h in doc["pairs"][0]["hosts"]] == [(True, False), (True, False)], doc

    # `lab apply` goes through the detached owner (it holds the hosts): a plan, a no-op, a refusal.
    dry = qpool("lab", "apply", "--stack", STACK, "--config-file", str(config_file), "--dry-run", timeout=600)
    assert dry.returncode == 0, _explain(dry)
    assert "0 to create, 0 to update, 0 to replace, 0 to delete" in dry.stdout, _explain(dry)
    noop = qpool("lab", "apply", "--stack", STACK, "--config-file", str(config_file), timeout=600)
    assert noop.returncode == 0 and "apply done" not in noop.stdout, _explain(noop)
    moved = config_variant(config_file.parent / "moved.yaml", OCTET, mutate=lambda c: c[
        "quantapool:validatorPairs"][0]["backup"].update(location="hel1"))
    refused = qpool("lab", "apply", "--stack", STACK, "--config-file", str(moved), timeout=600)
    assert refused.returncode == 2, _explain(refused)
    error = refused.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "refused" in error[0], _explain(refused)
    assert not (LAB_ROOT / STACK / "apply-request.json").exists()

    down = qpool("lab", "down", "--stack", STACK, timeout=300)
    assert down.returncode == 0, _explain(down)
    assert f"lab {STACK} is down" in down.stdout, _explain(down)
    assert not (LAB_ROOT / STACK).exists(), "lab down left the state directory"
    with pytest.raises(ProcessLookupError):
        os.kill(owner, 0)

    after = qpool("lab", "status", "--stack", STACK, timeout=60)
    assert after.returncode != 0 and "is not up" in (after.stdout + after.stderr), _explain(after)
