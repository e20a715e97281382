"""Issue 12 item 5: the epoch gate takes the LATEST of the operator's, the target's and the beacon node's
clocks at the fence, on every fencing path, and waits until the EARLIEST clock has reached the gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qpool import epoch_gate as eg
from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.journal import journal_path, last_journal

from .safety_support import fake, make_ctx
from .test_operations_guards import (
    BACKUP,
    PRIMARY,
    FakeClock,
    _fenced_by_hetzner,
    interchange,
    record_starts,
    stopped_status,
)

EPOCH = 60.0 * 128  # Zond: 7680 s


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    return make_ctx(tmp_path, monkeypatch)


def chain(now: float) -> dict[str, Any]:
    return {"genesis_time": int(now) - 10 * int(EPOCH) - 100, "seconds_per_slot": 60.0, "slots_per_epoch": 128}


def test_fence_time_is_the_latest_clock() -> None:
    stop = {"fenced_at": 1000.0, "target_time_at_fence": 1500.0, "beacon_time_at_fence": 1200.0}
    assert eg.fence_time(stop, {}) == (1500.0, "target host")
    stop = {"fenced_at": 2000.0, "target_time_at_fence": 1500.0, "beacon_time_at_fence": 2100.0}
    assert eg.fence_time(stop, {}) == (2100.0, "beacon node")


def test_unrecorded_clock_is_read_at_the_gate_which_is_later() -> None:
    """An old journal (or a target unreadable at the fence) has no target clock: the one read now counts."""
    clock = {"genesis_time": 0, "seconds_per_slot": 1.0, "slots_per_epoch": 4}
    now = {"time": 5000.0, "chain_clock": clock, "beacon": {"current_slot": 4990}}
    assert eg.fence_time({"fenced_at": 1000.0}, now) == (5000.0, "target host (read at the gate)")


def test_no_fence_time_is_refused() -> None:
    with pytest.raises(QpoolError, match="no fence time"):
        eg.fence_time({}, {"time": 5.0})


def test_beacon_time_is_its_slot_clock() -> None:
    st = {"chain_clock": {"genesis_time": 100, "seconds_per_slot": 60.0, "slots_per_epoch": 128},
          "beacon": {"head_slot": "7", "current_slot": 10}}
    assert eg.beacon_time(st) == 100 + 10 * 60.0
    assert eg.beacon_time({"chain_clock": st["chain_clock"], "beacon": {"current_slot": None}}) is None
    assert eg.beacon_time({"beacon": {"current_slot": 3}}) is None


def _late_fence_setup(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch, target_ahead: float,
                      beacon_ahead: float) -> list[float]:
    """The source answers the clean stop, then disappears before step 3 (verify). The target's and the
    beacon node's clocks run `target_ahead` / `beacon_ahead` seconds ahead of the operator's."""
    clock: FakeClock = ctx.clock  # type: ignore[assignment]
    ssh = fake(ctx)
    ssh.replica = interchange((1, 2), (2, 3))
    cc = chain(clock.now)
    ssh.statuses[BACKUP.name] = stopped_status(
        newest_backup={"path": "/r/x.db", "age_seconds": 60.0, "source": PRIMARY.name}, chain_clock=cc)

    def on_status(_host: Any) -> None:
        st = ssh.statuses[BACKUP.name]
        assert st is not None
        st["time"] = clock.now + target_ahead
        st["beacon"] = {"current_slot": int((clock.now + beacon_ahead - cc["genesis_time"]) // 60),
                        "reachable": True, "syncing": False}

    ssh.on_status = on_status
    ctx.hcloud = object()

    def report(msg: str) -> None:
        if msg.startswith("[3/7]"):
            ssh.statuses[PRIMARY.name] = None  # gone right after answering the stop

    ctx.report = report
    _fenced_by_hetzner(monkeypatch, lambda _c, _h: False)
    monkeypatch.setattr(ops, "_fence", lambda c, _h, _j: {"fenced_at": c.clock(), "already_off": False,
                                                          "power_off_sent": True})
    monkeypatch.setattr(ops, "_verify_fenced", lambda _c, _h: "powered off (fake)")
    return record_starts(ssh, clock)


def test_late_fence_gate_uses_the_target_clock_when_the_operator_is_behind(
        ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: this path recorded no target clock, so a slow operator clock moved the gate earlier."""
    ahead = 1.5 * EPOCH
    started = _late_fence_setup(ctx, monkeypatch, target_ahead=ahead, beacon_ahead=0.0)
    cc = fake(ctx).statuses[BACKUP.name]["chain_clock"]  # type: ignore[index]
    result = ops.failover(ctx, "p1")
    assert result["mode"] == "fenced"
    doc = last_journal(journal_path("t", "p1", ctx.journal_dir))
    assert doc is not None
    stop = doc["steps"]["stop"]["data"]
    assert stop["target_time_at_fence"] == pytest.approx(stop["fenced_at"] + ahead)
    gate = doc["steps"]["epoch-gate"]["data"]
    expected, _ = ops.epoch_gate(cc, stop["fenced_at"] + ahead)
    by_operator, _ = ops.epoch_gate(cc, stop["fenced_at"])
    assert gate["gate_epoch"] == expected and expected > by_operator
    assert gate["fence_clock"] == "target host"
    assert started and started[0] >= ops.epoch_gate(cc, stop["fenced_at"] + ahead)[1]


def test_gate_fence_from_the_beacon_clock_when_it_is_latest(ctx: ops.Context,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _late_fence_setup(ctx, monkeypatch, target_ahead=0.0, beacon_ahead=1.2 * EPOCH)
    ops.failover(ctx, "p1")
    doc = last_journal(journal_path("t", "p1", ctx.journal_dir))
    assert doc is not None and doc["steps"]["epoch-gate"]["data"]["fence_clock"] == "beacon node"
    stop = doc["steps"]["stop"]["data"]
    assert stop["beacon_time_at_fence"] > stop["fenced_at"] + EPOCH


def test_wait_ends_only_when_the_earliest_clock_reaches_the_gate(ctx: ops.Context) -> None:
    """The operator's clock is past the gate but the target's is 100 s behind: keep waiting."""
    clock: FakeClock = ctx.clock  # type: ignore[assignment]
    ssh = fake(ctx)
    ssh.statuses[BACKUP.name] = stopped_status()

    def on_status(_host: Any) -> None:
        ssh.statuses[BACKUP.name]["time"] = clock.now - 100  # type: ignore[index]

    ssh.on_status = on_status
    gate_time = clock.now + 10
    eg.wait_for_gate(ctx, BACKUP, 7, gate_time, 3)
    assert clock.now - 100 >= gate_time, "the target's clock reached the gate before the wait ended"
    assert max(clock.slept) <= eg.MAX_SLEEP
