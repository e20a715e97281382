"""What `qpool lab up` tells the user once the lab is ready, and how `lab up --detach` shows progress;
`qpool status` ends with the next safe action."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from lab.cli import REPO, LogFollower, qpool_command, ready_banner
from qpool.progress import Progress
from qpool.status import format_status

HOSTS = [("qp-testnet-p1-primary", "primary", "10.42.0.11"), ("qp-testnet-p1-backup", "backup", "10.42.0.12"),
         ("qp-testnet-monitoring", "monitoring", "10.42.0.200")]


def banner(detached: bool) -> list[str]:
    return ready_banner("testnet", HOSTS, "qpb-lab", "10.42.0.0/24", ("qp-testnet-monitoring", "10.42.0.200"),
                        detached=detached, qpool="bin/qpool")


@pytest.mark.parametrize("detached", [False, True])
def test_banner_lists_hosts_and_operating_commands(detached: bool) -> None:
    lines = banner(detached)
    text = "\n".join(lines)
    assert lines[1] == "lab testnet is up: 3 hosts on bridge qpb-lab (10.42.0.0/24)"
    assert all(any(name in line and ip in line for line in lines) for name, _role, ip in HOSTS)
    assert "bin/qpool status --stack testnet" in text
    assert "bin/qpool lab ssh qp-testnet-monitoring -L 9090 -L 9093" in text
    # the lab's fake Hetzner API token is found through the lab inventory: no credentials to export
    assert "HCLOUD_FENCING_TOKEN" not in text and "export" not in text


def test_foreground_banner_offers_ctrl_c() -> None:
    stop = next(line for line in banner(detached=False) if line.startswith("Stop it:"))
    assert "Ctrl-C" in stop and "bin/qpool lab down --stack testnet" in stop


def test_detached_banner_has_no_ctrl_c() -> None:
    stop = next(line for line in banner(detached=True) if line.startswith("Stop it:"))
    assert "Ctrl-C" not in stop and "bin/qpool lab down --stack testnet" in stop


def test_qpool_command_names_something_that_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(REPO)
    assert qpool_command() == "bin/qpool"
    monkeypatch.chdir(tmp_path)
    assert qpool_command() == str(REPO / "bin" / "qpool")
    monkeypatch.setenv("PATH", f"{REPO / 'bin'}:/usr/bin:/bin")
    assert qpool_command() == "qpool"


def test_bin_qpool_wrapper_runs_the_venv_qpool(tmp_path: Path) -> None:
    """The wrapper the README and the banners name works from any directory."""
    proc = subprocess.run([str(REPO / "bin" / "qpool"), "--version"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    if not (REPO / ".venv/bin/qpool").exists():
        assert proc.returncode == 2 and "make setup" in proc.stderr
    else:
        assert proc.returncode == 0 and "version" in proc.stdout, proc.stderr


def test_detached_progress_is_replayed_from_the_owner_log(tmp_path: Path) -> None:
    """The background owner writes JSON events and plain banner lines; `lab up --detach` renders them."""
    log = tmp_path / "lab.log"
    log.write_text("old run\n")
    offset = log.stat().st_size
    out = io.StringIO()
    follower = LogFollower(log, offset, Progress("plain", out))
    owner = Progress("json", io.StringIO())
    with open(log, "a") as fh:
        owner.stream = fh
        owner.update("image", "packages installed", current=5, total=10)
        fh.write('{"event": "do')  # an event cut in half by the poll
        fh.flush()
        follower.poll()
        fh.write('ne", "step": "image", "message": "base image ready (4.0s): /x"}\n')
        fh.write("----\nlab testnet is up: 3 hosts\n")
    follower.poll()
    assert out.getvalue().splitlines() == ["image: packages installed  [############............] 5/10  0s",
                                           "base image ready (4.0s): /x", "----", "lab testnet is up: 3 hosts"]


def _host(name: str, role: str, active: bool) -> dict:
    return {"host": name, "role": role, "configured_active": active, "reachable": True, "error": None,
            "fenced": None, "signing": False, "may_sign": False, "locked": True, "db_present": False,
            "unit": "inactive", "processes": [], "metrics_port_open": False,
            "beacon": {"reachable": True, "syncing": False, "head_slot": 9},
            "execution": {"reachable": True, "syncing": False, "block": 3}, "slashing_backup": None, "oplock": None}


def test_status_text_ends_with_the_next_action_per_pair() -> None:
    doc = {"stack": "testnet", "pairs": [{
        "pair": "p1", "configured_active": "primary", "signers": [], "double_signer_risk": False,
        "open_failover": None,
        "hosts": [_host("qp-testnet-p1-primary", "primary", True), _host("qp-testnet-p1-backup", "backup", False)]}]}
    lines = format_status(doc).splitlines()
    assert lines[0].startswith("pair p1: configured active = primary; signing: nobody")
    assert lines[-1].startswith("pair p1: next: ") and "qpool activate --stack testnet --pair p1 --first-start" \
        in lines[-1]
