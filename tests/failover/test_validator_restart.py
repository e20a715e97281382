"""`qpool validator-restart` (issue 11): the active validator is restarted in place, under activate's checks.

On the fake SSH layer of test_operations_guards: every refusal happens before anything changes (or, once
the validator was stopped, leaves it stopped and locked), the peer is never stopped or started, and the
only start is on the host that was stopped and verified stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.journal import journal_path
from qpool.validator_restart import restart_validator

from .safety_support import fake, make_ctx
from .test_operations_guards import BACKUP, PRIMARY, _fenced_by_hetzner, interchange, running_status, stopped_status


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    return make_ctx(tmp_path, monkeypatch)


def _changes(context: ops.Context) -> list[tuple[str, ...]]:
    return [c[:2] for c in fake(context).changed()]


def test_restart_stops_then_starts_the_same_host_only(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    ssh.statuses[PRIMARY.name]["restart_pending"] = {"reason": "validator binary changed"}  # type: ignore[index]
    said: list[str] = []
    ctx.report = said.append
    result = restart_validator(ctx, "p1")
    assert result["target"] == PRIMARY.name and result["restarted"]
    assert _changes(ctx) == [(PRIMARY.name, "stop"), (PRIMARY.name, "activate")]
    assert ssh.oplock == {}, "the pair's operation locks are released"
    assert any("validator binary changed" in m for m in said)


def test_restart_follows_the_configured_active_role(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    ctx.config_file.write_text("config:\n  quantapool:validatorPairs:\n    - name: p1\n      active: backup\n")
    ssh.statuses[PRIMARY.name] = stopped_status()
    ssh.statuses[BACKUP.name] = running_status()
    ssh.history[BACKUP.name] = interchange((1, 2), (2, 3))
    assert restart_validator(ctx, "p1")["target"] == BACKUP.name
    assert _changes(ctx) == [(BACKUP.name, "stop"), (BACKUP.name, "activate")]


@pytest.mark.parametrize("peer", [
    running_status(),  # a second signer already
    stopped_status(locked=False),  # could be started
    stopped_status(processes=[4242]),
    stopped_status(metrics_port_open=True),
])
def test_refused_before_any_change_when_the_peer_is_not_stopped_and_locked(ctx: ops.Context,
                                                                           peer: dict[str, Any]) -> None:
    fake(ctx).statuses[BACKUP.name] = peer
    with pytest.raises(QpoolError, match="refusing: h-backup may still sign"):
        restart_validator(ctx, "p1")
    assert _changes(ctx) == []


def test_refused_when_the_peer_is_unreachable_even_if_fenced(ctx: ops.Context,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fake(ctx).statuses[BACKUP.name] = None
    ctx.hcloud = object()
    _fenced_by_hetzner(monkeypatch, lambda _c, _h: True)
    with pytest.raises(QpoolError, match="h-backup is fenced"):
        restart_validator(ctx, "p1")
    assert _changes(ctx) == []


def test_refused_when_the_active_validator_is_not_running(ctx: ops.Context) -> None:
    fake(ctx).statuses[PRIMARY.name] = stopped_status()
    with pytest.raises(QpoolError, match=r"not running.*qpool activate"):
        restart_validator(ctx, "p1")
    assert _changes(ctx) == []


def test_refused_while_a_failover_is_unfinished(ctx: ops.Context) -> None:
    path = journal_path("t", "p1", ctx.journal_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": "r1", "source": PRIMARY.name, "target": BACKUP.name, "completed": False,
                                "aborted": None, "stack": "t", "pair": "p1", "started": 1.0, "steps": {}}) + "\n")
    with pytest.raises(QpoolError, match="unfinished failover"):
        restart_validator(ctx, "p1")
    assert _changes(ctx) == []


def test_declined_prompt_changes_nothing(ctx: ops.Context) -> None:
    ctx.confirm = lambda _m: False
    with pytest.raises(QpoolError, match="aborted"):
        restart_validator(ctx, "p1")
    assert _changes(ctx) == [] and fake(ctx).oplock == {}


def test_peer_started_during_the_prompt_is_caught_before_the_start(ctx: ops.Context) -> None:
    ssh = fake(ctx)

    def confirm(_m: str) -> bool:
        ssh.statuses[BACKUP.name] = running_status()
        return True

    ctx.confirm = confirm
    with pytest.raises(QpoolError, match="h-backup may still sign"):
        restart_validator(ctx, "p1")
    assert (PRIMARY.name, "activate") not in _changes(ctx)
    assert not any(c[0] == BACKUP.name for c in _changes(ctx))


def test_peer_started_after_the_stop_blocks_the_start(ctx: ops.Context) -> None:
    ssh = fake(ctx)
    real_ctl = ssh.ctl

    def ctl(host: HostRecord, *args: str, **kw: Any) -> dict[str, Any]:
        out = real_ctl(host, *args, **kw)
        if args[0] == "stop":
            ssh.statuses[BACKUP.name] = running_status()  # somebody started the standby meanwhile
        return out

    ssh.ctl = ctl  # type: ignore[method-assign]
    with pytest.raises(QpoolError, match=r"h-backup may still sign.*STOPPED and LOCKED.*qpool activate"):
        restart_validator(ctx, "p1")
    assert _changes(ctx) == [(PRIMARY.name, "stop")]


def test_a_stop_that_did_not_stop_never_starts(ctx: ops.Context) -> None:
    fake(ctx).stop_works = False
    with pytest.raises(QpoolError, match="did not stop"):
        restart_validator(ctx, "p1")
    assert _changes(ctx) == [(PRIMARY.name, "stop")]


def test_history_not_covered_leaves_it_stopped_and_locked(ctx: ops.Context) -> None:
    """The standby holds a replica newer than the active host's own DB: activate's check refuses the start."""
    ssh = fake(ctx)
    ssh.history[PRIMARY.name] = interchange((1, 2))
    ssh.replica = interchange((1, 2), (2, 3), (3, 4))
    ssh.statuses[BACKUP.name]["newest_backup"] = {  # type: ignore[index]
        "path": "/r/h-primary--X.db", "age_seconds": 30.0, "source": PRIMARY.name}
    with pytest.raises(QpoolError, match=r"STOPPED and LOCKED.*qpool activate --pair p1"):
        restart_validator(ctx, "p1")
    assert _changes(ctx) == [(PRIMARY.name, "stop")]
    assert ssh.statuses[PRIMARY.name]["locked"]  # type: ignore[index]


def test_status_shows_restart_pending_with_the_command(ctx: ops.Context) -> None:
    from qpool.status import format_status, pair_status

    fake(ctx).statuses[PRIMARY.name]["restart_pending"] = {"reason": "validator binary changed"}  # type: ignore[index]
    doc = {"stack": "t", "pairs": [pair_status(ctx, "p1")]}
    [primary] = [h for h in doc["pairs"][0]["hosts"] if h["host"] == PRIMARY.name]
    assert primary["restart_pending"] == {"reason": "validator binary changed"}
    text = format_status(doc)
    assert "RESTART PENDING: validator binary changed" in text and "qpool validator-restart --pair p1" in text


@pytest.mark.parametrize("beacon", [
    {"reachable": False},
    {"reachable": True, "syncing": True, "head_slot": 10, "current_slot": 900},
])
def test_refused_before_the_stop_while_the_beacon_node_is_not_ready(ctx: ops.Context,
                                                                    beacon: dict[str, Any]) -> None:
    """The same beacon gate as every start, checked before the stop: a restart that could not start again
    must not stop a signing validator."""
    fake(ctx).statuses[PRIMARY.name]["beacon"] = beacon  # type: ignore[index]
    with pytest.raises(QpoolError, match="beacon node"):
        restart_validator(ctx, "p1")
    assert _changes(ctx) == []
