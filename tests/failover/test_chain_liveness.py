"""Issue 12: the chain-side check before any start (qpool/chain_liveness.py), on test_operations_guards' fakes.

Each branch: no reading (fail closed), no key live, a live vote the target's history records (the known
signer: the pair's own hosts), a live vote nobody in the stack recorded (another signer); and the same rule
on every start path: activate, failover (clean and fenced), validator-restart (before and after the stop).
In the fakes the primary's history holds votes up to target epoch 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qpool import chain_liveness
from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.validator_restart import restart_validator

from .safety_support import fake, make_ctx
from .test_operations_guards import (
    BACKUP,
    KEY,
    PRIMARY,
    FakeSsh,
    interchange,
    running_status,
    stopped_status,
)
from .test_operations_guards import fenced_ctx as fenced_ctx  # the fixture, reused

UNKNOWN = {"known": False, "error": "the beacon node's REST API does not answer"}


def live(*epochs: int, key: str = KEY, head: int = 4) -> dict[str, Any]:
    """A reading of the target's beacon node: `key` voted in `epochs` (head epoch `head`)."""
    return {"known": True, "head_epoch": head, "epochs": [head - 1, head], "keys": 1, "not_on_chain": 0,
            "live": {key: list(epochs)} if epochs else {}}


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    return make_ctx(tmp_path, monkeypatch)


def beacon_says(ssh: FakeSsh, reading: dict[str, Any], *hosts: str) -> None:
    """Every status of `hosts` (also after a stop/start replaced it) carries `reading`."""

    def hook(host: Any) -> None:
        if host.name in hosts and ssh.statuses[host.name] is not None:
            ssh.statuses[host.name]["liveness"] = reading  # type: ignore[index]

    ssh.on_status = hook


def _started(ctx: ops.Context, name: str) -> bool:
    return (name, "activate", "--run-id") in fake(ctx).calls


# -- the guard itself ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("reading", [None, UNKNOWN, {"known": False}, "garbage"])
def test_no_reading_refuses(ctx: ops.Context, reading: Any) -> None:
    st = stopped_status(liveness=reading)
    with pytest.raises(QpoolError, match=r"^refusing: no chain liveness reading for h-backup's keys .*nothing was "
                                         "started"):
        chain_liveness.check_before_start(ctx, BACKUP, st)


def test_no_key_live_passes_without_reading_history(ctx: ops.Context) -> None:
    text = chain_liveness.check_before_start(ctx, BACKUP, stopped_status(liveness=live()))
    assert "none of 1 key(s) voted in epoch(s) 3, 4" in text
    assert fake(ctx).calls == [], "no export needed when nothing is live"


def test_live_vote_recorded_in_the_targets_history_passes(ctx: ops.Context) -> None:
    """The known signer: the target's history (covering the pair's) records a vote at or after that epoch."""
    text = chain_liveness.check_before_start(ctx, PRIMARY, stopped_status(liveness=live(2, 3, head=3)))
    assert "every vote recorded in h-primary's history" in text


def test_live_vote_nobody_recorded_refuses(ctx: ops.Context) -> None:
    with pytest.raises(QpoolError) as exc:
        chain_liveness.check_before_start(ctx, PRIMARY, stopped_status(liveness=live(3, 4)))
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith(f"refusing: key(s) {KEY[:14]}... voted on the chain in epoch 4")
    assert "another signer" in text and "re-run after epoch 6" in text and "Nothing was started" in text


def test_empty_history_and_a_live_key_refuses(ctx: ops.Context) -> None:
    with pytest.raises(QpoolError, match="voted on the chain in epoch 3"):
        chain_liveness.check_before_start(ctx, BACKUP, stopped_status(liveness=live(3)))


def test_first_start_with_a_live_key_refuses(ctx: ops.Context) -> None:
    """Keys that never signed in this stack but vote on the chain: somebody else runs them (no export tried)."""
    ssh = fake(ctx)
    ssh.statuses = {PRIMARY.name: stopped_status(db_present=False), BACKUP.name: stopped_status(db_present=False)}
    ssh.history = {PRIMARY.name: interchange(), BACKUP.name: interchange()}
    beacon_says(ssh, live(4), PRIMARY.name)
    with pytest.raises(QpoolError, match="voted on the chain in epoch 4"):
        ops.activate(ctx, "p1", first_start=True)
    assert ssh.changed() == [] and (PRIMARY.name, "export-slashing") not in ssh.calls


def test_only_the_targets_keys_count(ctx: ops.Context) -> None:
    other = "0x" + "99" * 16
    text = chain_liveness.check_before_start(ctx, BACKUP, stopped_status(liveness=live(4, key=other)))
    assert "none of" in text


# -- on every start path -------------------------------------------------------------------------------------

def test_activate_refused_when_an_outsider_votes(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    ssh.statuses = {PRIMARY.name: stopped_status(), BACKUP.name: stopped_status()}
    beacon_says(ssh, live(4), PRIMARY.name)
    with pytest.raises(QpoolError, match="voted on the chain in epoch 4"):
        ops.activate(ctx, "p1")
    assert ssh.changed() == [] and ssh.oplock == {}


def test_activate_refused_without_a_reading(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    ssh.statuses = {PRIMARY.name: stopped_status(liveness=UNKNOWN), BACKUP.name: stopped_status()}
    with pytest.raises(QpoolError, match="no chain liveness reading"):
        ops.activate(ctx, "p1")
    assert ssh.changed() == [] and ssh.oplock == {}


def test_activate_after_own_recent_votes_starts(ctx: ops.Context) -> None:
    """Stopped by hand in epoch 3: the chain shows its own vote, which its history records."""
    ssh = fake(ctx)
    ssh.statuses = {PRIMARY.name: stopped_status(), BACKUP.name: stopped_status()}
    beacon_says(ssh, live(3, head=3), PRIMARY.name)
    assert ops.activate(ctx, "p1")["changed"]


def test_activate_rechecks_liveness_after_the_prompt(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    ssh.statuses = {PRIMARY.name: stopped_status(), BACKUP.name: stopped_status()}

    def confirm(_msg: str) -> bool:
        beacon_says(ssh, live(4), PRIMARY.name)
        return True

    ctx.confirm = confirm
    with pytest.raises(QpoolError, match="voted on the chain in epoch 4"):
        ops.activate(ctx, "p1")
    assert not _started(ctx, PRIMARY.name)


def test_clean_failover_accepts_the_sources_last_votes(ctx: ops.Context) -> None:
    """The source signed in epoch 3 and was just stopped: its history, now on the target, records it."""
    ssh = fake(ctx)
    beacon_says(ssh, live(3, head=3), BACKUP.name)
    assert ops.failover(ctx, "p1")["changed"]
    assert _started(ctx, BACKUP.name)


def test_clean_failover_refused_when_someone_else_votes(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    beacon_says(ssh, live(4), BACKUP.name)
    with pytest.raises(QpoolError, match="voted on the chain in epoch 4"):
        ops.failover(ctx, "p1")
    assert not _started(ctx, BACKUP.name)


def test_fenced_failover_refused_when_the_key_votes_after_the_gate(fenced_ctx: ops.Context) -> None:
    """After the epoch gate the fenced source cannot have voted: a live key means another signer."""
    ssh = fake(fenced_ctx)
    beacon_says(ssh, live(12, 13, head=13), BACKUP.name)
    with pytest.raises(QpoolError, match="voted on the chain in epoch 13"):
        ops.failover(fenced_ctx, "p1")
    assert not _started(fenced_ctx, BACKUP.name)


def test_fenced_failover_starts_when_nothing_votes(fenced_ctx: ops.Context) -> None:
    assert ops.failover(fenced_ctx, "p1")["mode"] == "fenced"
    assert _started(fenced_ctx, BACKUP.name)


def test_restart_refused_before_the_stop_without_a_reading(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    ssh.statuses[PRIMARY.name] = running_status(liveness=UNKNOWN)
    with pytest.raises(QpoolError, match="no chain liveness reading"):
        restart_validator(ctx, "p1")
    assert ssh.changed() == [], "nothing stopped"


def test_restart_accepts_its_own_votes(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    beacon_says(ssh, live(2, 3, head=3), PRIMARY.name)
    assert restart_validator(ctx, "p1")["restarted"]


def test_restart_refused_after_the_stop_leaves_it_stopped(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    ssh.history[PRIMARY.name] = interchange((1, 2))
    beacon_says(ssh, live(3, head=3), PRIMARY.name)
    with pytest.raises(QpoolError, match=r"voted on the chain in epoch 3.*STOPPED and LOCKED"):
        restart_validator(ctx, "p1")
    assert [c[:2] for c in ssh.changed()] == [(PRIMARY.name, "stop")]


def test_status_shows_the_reading(ctx: ops.Context) -> None:
    from qpool.status import format_status, pair_status

    ssh = fake(ctx)
    ssh.statuses[PRIMARY.name]["liveness"] = live(3, 4)  # type: ignore[index]
    ssh.statuses[BACKUP.name]["liveness"] = UNKNOWN  # type: ignore[index]
    doc = pair_status(ctx, "p1")
    assert next(h for h in doc["hosts"] if h["host"] == PRIMARY.name)["liveness"]["live"] == {KEY: [3, 4]}
    text = format_status({"stack": "t", "pairs": [doc]})
    assert f"chain-live=1@3-4 ({KEY[:14]}...)" in text and "chain-live=UNKNOWN" in text
