"""Event counters: bounded ranges, persisted cursor and totals, rewinds without double counting."""

from __future__ import annotations

import itertools
import json

import pytest
from eth_abi import encode

DEPOSITED = "Deposited(address,uint256,uint256)"
CANCELLED = "WithdrawalCancelled(address,uint256,uint256)"
FUNDED = "ValidatorFunded(uint256,bytes,uint256)"
PAUSED = "Paused(address)"
REGISTERED = "ValidatorRegistered(uint256,bytes,uint8)"
EXIT_REQUESTED = "ValidatorExitRequested(uint256,uint256)"
USER = bytes.fromhex("44" * 20)


def deposit(node, block: int, index: int, tx: str | None = None) -> None:
    node.add_log("deposit_pool", DEPOSITED, block, index, indexed=(USER,),
                 data=encode(["uint256", "uint256"], [10**20, 10**20]), tx=tx)


def totals(exporter, value) -> dict[tuple[str, str], float]:
    return {
        (s.labels["contract"], s.labels["event"]): s.value
        for m in exporter.registry.collect() if m.name == "quantapool_events"
        for s in m.samples if s.name == "quantapool_events_total"
    }


def test_counts_each_event_in_bounded_ranges(make_exporter, node, pool_values, value):
    node.head = 950
    deposit(node, 5, 0)
    deposit(node, 100, 0)
    deposit(node, 100, 3)
    node.add_log("deposit_pool", CANCELLED, 250, 1, indexed=(USER, 7), data=encode(["uint256"], [5]))
    node.add_log("deposit_pool", FUNDED, 400, 0, indexed=(1,), data=encode(["bytes", "uint256"], [b"k" * 2592, 1]))
    node.add_log("deposit_pool", PAUSED, 950, 0, data=encode(["address"], [USER]))
    node.add_log("validator_manager", REGISTERED, 401, 2, indexed=(1,), data=encode(["bytes", "uint8"], [b"k", 1]))
    node.add_log("validator_manager", EXIT_REQUESTED, 900, 0, indexed=(1,), data=encode(["uint256"], [900]))
    # Same topic from a contract we do not watch, and a watched contract's unknown event: not counted.
    deposit(node, 101, 0)
    node.logs[-1]["address"] = node.text(bytes.fromhex("55" * 20))
    node.add_log("stqrl", "Transfer(address,address,uint256)", 102, 0)

    exporter = make_exporter(log_max_block_range=100)
    assert exporter.collect_once().ok

    counted = totals(exporter, value)
    assert counted[("deposit_pool", "Deposited")] == 3
    assert counted[("deposit_pool", "WithdrawalCancelled")] == 1
    assert counted[("deposit_pool", "ValidatorFunded")] == 1
    assert counted[("deposit_pool", "Paused")] == 1
    assert counted[("validator_manager", "ValidatorRegistered")] == 1
    assert counted[("validator_manager", "ValidatorExitRequested")] == 1
    assert counted[("deposit_pool", "Unpaused")] == 0  # known event, none seen: a true zero
    assert sum(counted.values()) == 8
    assert value(exporter, "quantapool_exporter_event_cursor_block") == 950
    ranges = [(int(f["fromBlock"], 16), int(f["toBlock"], 16)) for (f,) in node.calls("getLogs")]
    assert all(hi - lo + 1 <= 100 for lo, hi in ranges)
    assert ranges[0][0] == 0 and ranges[-1][1] == 950
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))  # contiguous, no gap
    assert not any(value(exporter, "quantapool_exporter_log_shape_mismatch_total", contract=c, event=e)
                   for c, e in counted)


def test_catch_up_is_spread_over_cycles(make_exporter, node, pool_values, value):
    node.head = 999
    for block in range(0, 1000, 50):
        deposit(node, block, 0)
    exporter = make_exporter(log_max_block_range=100, log_max_ranges_per_cycle=3, reorg_depth=10)
    exporter.collect_once()
    assert value(exporter, "quantapool_exporter_event_cursor_block") == 299
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 6
    for _ in range(10):  # bounded; needs ceil(700 / (3*100 - 10-ish)) more cycles
        exporter.collect_once()
        if value(exporter, "quantapool_exporter_event_cursor_block") == 999:
            break
    assert value(exporter, "quantapool_exporter_event_cursor_block") == 999
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 20


def test_counts_survive_a_restart_without_double_counting(make_exporter, node, pool_values, value, state_dir):
    node.head = 500
    deposit(node, 10, 0)
    deposit(node, 495, 0)
    first = make_exporter()
    first.collect_once()
    assert value(first, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 2

    node.head = 600
    deposit(node, 550, 0)
    second = make_exporter()  # same state_dir: a restarted process
    assert value(second, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 2
    assert value(second, "quantapool_exporter_event_cursor_block") == 500
    node.requests.clear()
    assert second.collect_once().ok
    assert value(second, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 3
    first_range = node.calls("getLogs")[0][0]
    assert int(first_range["fromBlock"], 16) == 500 + 1 - 10  # rewound reorg_depth blocks on start
    assert not [p for p in state_dir.iterdir() if p.name != "events.json"]  # no temp files left behind


def test_rewind_picks_up_reorged_logs_once(make_exporter, node, pool_values, value):
    node.head = 300
    deposit(node, 295, 0, tx="0x" + "aa" * 32)
    exporter = make_exporter(reorg_depth=10)
    exporter.collect_once()
    first_cycle_calls = len(node.calls("getLogs"))
    # A reorg replaced block 296: a new log appears below the cursor; 295's log is unchanged.
    deposit(node, 296, 0, tx="0x" + "bb" * 32)
    node.head = 301
    for _ in range(3):  # every cycle rewinds; repeated reads must not count again
        assert exporter.collect_once().ok
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 2
    # Logs older than the rewind window are never re-read.
    later = node.calls("getLogs")[first_cycle_calls:]
    assert len(later) == 3
    assert all(int(f["fromBlock"], 16) >= 291 for (f,) in later)


def test_failed_range_does_not_advance_the_cursor(make_exporter, node, pool_values, value):
    node.head = 399
    for block in (50, 150, 250, 350):
        deposit(node, block, 0)
    node.log_faults[200] = "error"
    exporter = make_exporter(log_max_block_range=100, reorg_depth=0)
    result = exporter.collect_once()
    assert not result.ok and result.events_ok is False
    assert value(exporter, "quantapool_exporter_event_cursor_block") == 199
    assert value(exporter, "quantapool_exporter_event_scan_success") == 0
    assert value(exporter, "quantapool_exporter_up") == 0
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 2

    node.log_faults.clear()
    assert exporter.collect_once().ok
    assert value(exporter, "quantapool_exporter_event_cursor_block") == 399
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 4


@pytest.mark.parametrize("bad", [
    {"blockNumber": "0x5000"},  # outside the requested range
    {"topics": "nope"},
    {"transactionHash": None},
    {"address": "not-an-address"},
    {"logIndex": 5},
])
def test_malformed_log_fails_its_range(make_exporter, node, pool_values, value, bad):
    node.head = 99
    deposit(node, 10, 0)
    node.unfiltered_logs.append({**node.logs.pop(), **bad})
    exporter = make_exporter(reorg_depth=0)
    assert not exporter.collect_once().ok
    assert value(exporter, "quantapool_exporter_event_cursor_block") is None
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 0
    node.unfiltered_logs[0].update(deposit_log_fields(node))
    assert exporter.collect_once().ok  # once the node answers sanely, the same range is counted
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 1


def deposit_log_fields(node) -> dict:
    deposit(node, 10, 0)
    return node.logs.pop()


def test_topic_count_mismatch_is_flagged(make_exporter, node, pool_values, value):
    node.head = 99
    node.add_log("deposit_pool", DEPOSITED, 10, 0)  # no indexed user topic: not the ABI we know
    exporter = make_exporter()
    exporter.collect_once()
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 1
    assert value(exporter, "quantapool_exporter_log_shape_mismatch_total",
                 contract="deposit_pool", event="Deposited") == 1


def test_corrupt_state_is_set_aside_and_rebuilt(make_exporter, node, pool_values, value, state_dir):
    node.head = 200
    deposit(node, 20, 0)
    deposit(node, 120, 0)
    make_exporter().collect_once()
    (state_dir / "events.json").write_text("{ torn")
    exporter = make_exporter()
    assert (state_dir / "events.json.corrupt").read_text() == "{ torn"
    assert value(exporter, "quantapool_exporter_event_cursor_block") is None
    exporter.collect_once()
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 2


def test_changed_contracts_start_a_new_count(make_exporter, node, pool_values, value, state_dir, profile):
    node.head = 200
    deposit(node, 20, 0)
    make_exporter().collect_once()
    prefix = {"gqrl": "Q", "gzond": "Z"}[profile]
    moved = {
        "deposit_pool": prefix + "66" * 20,
        "stqrl": prefix + "7d4ca4872502a1ab02bca855c093449aae2bee58",
        "validator_manager": prefix + "d84648a8f7314652b3e98d346645415ea03cce5f",
    }
    exporter = make_exporter(contracts=moved)
    assert (state_dir / "events.json.superseded").exists()
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 0


def test_state_file_holds_cursor_totals_and_window(make_exporter, node, pool_values, state_dir):
    node.head = 100
    deposit(node, 95, 1, tx="0x" + "cd" * 32)
    deposit(node, 50, 0)
    make_exporter(reorg_depth=10).collect_once()
    data = json.loads((state_dir / "events.json").read_text())
    assert data["cursor"] == 100
    assert data["totals"] == [["deposit_pool", "Deposited", 2]]
    assert data["seen"] == [[95, "0x" + "cd" * 32, 1]]  # only the rewind window is kept


def test_state_save_failure_fails_the_cycle_and_recovers(make_exporter, node, pool_values, value, monkeypatch,
                                                         state_dir):
    import exporter.events as events_module

    node.head = 150
    deposit(node, 20, 0)
    exporter = make_exporter()
    real_write = events_module.write_json_atomic

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(events_module, "write_json_atomic", disk_full)
    result = exporter.collect_once()
    assert not result.ok and "saving state" in result.failed[-1]
    assert value(exporter, "quantapool_exporter_up") == 0
    assert not (state_dir / "events.json").exists()

    monkeypatch.setattr(events_module, "write_json_atomic", real_write)
    deposit(node, 149, 0)
    assert exporter.collect_once().ok
    assert value(exporter, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 2
    restarted = make_exporter()
    assert value(restarted, "quantapool_events_total", contract="deposit_pool", event="Deposited") == 2


def test_atomic_write_keeps_the_old_file_when_replace_fails(tmp_path, monkeypatch):
    import exporter.statefile as statefile

    target = tmp_path / "events.json"
    statefile.write_json_atomic(target, {"cursor": 1})

    def broken_replace(src, dst):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(statefile.os, "replace", broken_replace)
    with pytest.raises(OSError, match="I/O error"):
        statefile.write_json_atomic(target, {"cursor": 2})
    assert json.loads(target.read_text()) == {"cursor": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["events.json"]  # temp file removed
