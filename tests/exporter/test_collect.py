"""One collection cycle against the fake node: values, and what failures do to them."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address

from exporter.views import VIEWS

ALL_CALLS = [(v.contract, v.function) for v in VIEWS] + [("deposit_pool", "getBalance")]


def test_full_cycle_exposes_every_value(make_exporter, node, pool_values, value, clock, profile):
    exporter = make_exporter()
    result = exporter.collect_once()

    assert result.ok, result.failed
    for name, expected in pool_values.items():
        assert value(exporter, name) == pytest.approx(expected, rel=1e-12), name
    assert value(exporter, "quantapool_pool_paused", contract="deposit_pool") == 1.0
    assert value(exporter, "quantapool_pool_paused", contract="stqrl") == 0.0
    assert value(exporter, "quantapool_chain_block_height") == node.head
    prefix = {"gqrl": "Q", "gzond": "Z"}[profile]
    owner = prefix + to_checksum_address("0x" + node.owner.hex())[2:]
    assert value(exporter, "quantapool_contract_owner_info", contract="deposit_pool", owner=owner) == 1.0
    dp_text = exporter_text(prefix, "8e01ea0bc7e337806154573a5b46bb37f50ea8fc")
    assert dp_text[1:] == "8e01Ea0bC7e337806154573A5B46Bb37F50Ea8fC"  # checksummed as in pool-contracts.md
    assert value(exporter, "quantapool_stqrl_deposit_pool_info", deposit_pool=dp_text) == 1.0
    assert value(exporter, "quantapool_exporter_up") == 1.0
    assert value(exporter, "quantapool_exporter_last_success_timestamp_seconds") == clock.now
    for contract, call in ALL_CALLS:
        assert value(exporter, "quantapool_exporter_call_success", contract=contract, call=call) == 1.0
    method = f"{node.namespace}_call"
    assert value(exporter, "quantapool_exporter_rpc_errors_total", method=method) == 0.0
    assert value(exporter, "quantapool_exporter_rpc_latency_seconds_count", method=method) == len(VIEWS)


def test_reads_are_pinned_to_the_cycle_block_and_use_profile_addresses(make_exporter, node, pool_values, profile):
    make_exporter().collect_once()
    prefix = {"gqrl": "Q", "gzond": "Z"}[profile]
    calls = node.calls("call")
    assert len(calls) == len(VIEWS)
    assert {block for _tx, block in calls} == {hex(node.head)}
    assert all(tx["to"].startswith(prefix) for tx, _block in calls)
    (balance_params,) = node.calls("getBalance")
    assert balance_params == [exporter_text(prefix, "8e01ea0bc7e337806154573a5b46bb37f50ea8fc"), hex(node.head)]


def exporter_text(prefix: str, hex40: str) -> str:
    return prefix + to_checksum_address("0x" + hex40)[2:]


@pytest.mark.parametrize("fault", ["error", "empty", "malformed", "notstring", "short", "timeout"])
def test_failed_view_keeps_last_good_value_and_flips_health(make_exporter, node, pool_values, value, clock, fault):
    exporter = make_exporter(rpc_timeout_seconds=0.3)
    assert exporter.collect_once().ok
    good_time = clock.now
    node.set_view("stqrl", "getExchangeRate()", ["uint256"], [2 * 10**18])  # would change if it were read
    node.fault_call("stqrl", "getExchangeRate()", fault)
    node.fault_call("deposit_pool", "paused()", fault)
    node.set_view("validator_manager", "activeValidatorCount()", ["uint256"], [5])
    clock.now += 30

    result = exporter.collect_once()

    assert not result.ok
    assert value(exporter, "quantapool_pool_exchange_rate") == pytest.approx(1.0288)
    assert value(exporter, "quantapool_pool_paused", contract="deposit_pool") == 1.0
    assert value(exporter, "quantapool_exporter_call_success", contract="stqrl", call="getExchangeRate") == 0.0
    assert value(exporter, "quantapool_exporter_call_success", contract="deposit_pool", call="paused") == 0.0
    assert value(exporter, "quantapool_exporter_call_success", contract="stqrl", call="paused") == 1.0
    assert value(exporter, "quantapool_validators_active") == 5.0  # other reads still update
    assert value(exporter, "quantapool_exporter_up") == 0.0
    assert value(exporter, "quantapool_exporter_last_success_timestamp_seconds") == good_time

    node.fault_call("stqrl", "getExchangeRate()", None)
    node.fault_call("deposit_pool", "paused()", None)
    clock.now += 30
    assert exporter.collect_once().ok
    assert value(exporter, "quantapool_pool_exchange_rate") == 2.0
    assert value(exporter, "quantapool_exporter_up") == 1.0
    assert value(exporter, "quantapool_exporter_last_success_timestamp_seconds") == clock.now


@pytest.mark.parametrize("fault", ["error", "timeout", "malformed"])
def test_rpc_errors_are_counted_per_attempt(make_exporter, node, pool_values, value, fault):
    exporter = make_exporter(rpc_retries=2, rpc_timeout_seconds=0.3)
    node.fault_call("validator_manager", "getStats()", fault)
    exporter.collect_once()
    method = f"{node.namespace}_call"
    # Transport failures (timeouts) are retried; a definite answer (error, malformed) is not.
    attempts = 3 if fault == "timeout" else 1
    assert value(exporter, "quantapool_exporter_rpc_errors_total", method=method) == attempts


def test_missing_contract_never_invents_values(make_exporter, node, pool_values, value):
    manager = bytes.fromhex("d84648a8f7314652b3e98d346645415ea03cce5f")
    node.views = {k: v for k, v in node.views.items() if k[0] != manager}
    exporter = make_exporter()
    result = exporter.collect_once()

    assert not result.ok
    for name in ("quantapool_validators_active", "quantapool_validators_registered",
                 "quantapool_validators_stats_total_staked_qrl"):
        assert value(exporter, name) is None, name
    assert value(exporter, "quantapool_exporter_call_success", contract="validator_manager",
                 call="activeValidatorCount") == 0.0
    assert value(exporter, "quantapool_stqrl_total_pooled_qrl") == pytest.approx(123_456.5)
    assert value(exporter, "quantapool_exporter_up") == 0.0
    assert value(exporter, "quantapool_exporter_last_success_timestamp_seconds") == 0.0


def test_tuple_view_is_all_or_nothing(make_exporter, node, pool_values, value):
    exporter = make_exporter()
    exporter.collect_once()
    node.fault_call("deposit_pool", "getPoolStatus()", "short")  # 16 bytes: not even one word
    node.set_view("deposit_pool", "getRewardStats()", ["uint256"] * 3, [1, 2, 3])  # one output short
    exporter.collect_once()
    assert value(exporter, "quantapool_pool_status_exchange_rate") == pytest.approx(1.0288)
    assert value(exporter, "quantapool_pool_reward_stats_total_rewards_qrl") == 42.0
    assert value(exporter, "quantapool_pool_reward_stats_last_sync_block") == 990.0
    assert value(exporter, "quantapool_exporter_call_success", contract="deposit_pool", call="getRewardStats") == 0


def test_balance_failure_keeps_balance(make_exporter, node, pool_values, value):
    exporter = make_exporter()
    exporter.collect_once()
    node.method_faults["getBalance"] = "error"
    node.balances.clear()
    assert not exporter.collect_once().ok
    assert value(exporter, "quantapool_pool_balance_qrl") == 3_460.25
    assert value(exporter, "quantapool_exporter_call_success", contract="deposit_pool", call="getBalance") == 0


def test_owner_change_replaces_the_info_series(make_exporter, node, pool_values, value, profile):
    exporter = make_exporter()
    exporter.collect_once()
    new_owner = bytes.fromhex("22" * 20)
    node.set_view("deposit_pool", "owner()", ["address"], [new_owner])
    exporter.collect_once()
    prefix = {"gqrl": "Q", "gzond": "Z"}[profile]
    samples = [s for m in exporter.registry.collect() if m.name == "quantapool_contract_owner_info" for s in m.samples]
    assert [s.labels["owner"] for s in samples] == [exporter_text(prefix, new_owner.hex())]


def test_stqrl_pointing_elsewhere_is_flagged(make_exporter, node, pool_values, value):
    node.set_view("stqrl", "depositPool()", ["address"], [bytes.fromhex("33" * 20)])
    exporter = make_exporter()
    exporter.collect_once()
    assert value(exporter, "quantapool_stqrl_deposit_pool_matches") == 0.0


@pytest.mark.parametrize("fault", ["timeout", "http500", "garbage"])
def test_block_number_failure_fails_the_cycle(make_exporter, node, pool_values, value, fault):
    exporter = make_exporter(rpc_timeout_seconds=0.3)
    exporter.collect_once()
    node.method_faults["blockNumber"] = fault
    node.head += 5
    result = exporter.collect_once()
    assert not result.ok
    assert value(exporter, "quantapool_chain_block_height") == 1000.0
    assert value(exporter, "quantapool_exporter_up") == 0.0
    assert value(exporter, "quantapool_exporter_event_scan_success") == 0.0


def test_unreachable_rpc_is_not_fatal_and_recovers(
    make_exporter, free_port, start_node, value, clock, profile, pool_values, node
):
    exporter = make_exporter(rpc_url=f"http://127.0.0.1:{free_port}")
    result = exporter.collect_once()

    assert not result.ok
    assert value(exporter, "quantapool_exporter_up") == 0.0
    assert value(exporter, "quantapool_exporter_last_success_timestamp_seconds") == 0.0
    assert value(exporter, "quantapool_stqrl_total_pooled_qrl") is None
    assert value(exporter, "quantapool_chain_block_height") is None
    for contract, call in ALL_CALLS:
        assert value(exporter, "quantapool_exporter_call_success", contract=contract, call=call) == 0.0
    method = f"{node.namespace}_blockNumber"
    # Bounded: once the endpoint is known down, the rest of the cycle is skipped, not retried per call.
    errors = sum(value(exporter, "quantapool_exporter_rpc_errors_total", method=f"{node.namespace}_{m}") or 0
                 for m in ("blockNumber", "call", "getBalance", "getLogs"))
    assert errors == value(exporter, "quantapool_exporter_rpc_errors_total", method=method) == 2

    start_node(port=free_port, node=node)
    clock.now += 30
    assert exporter.collect_once().ok
    assert value(exporter, "quantapool_exporter_up") == 1.0
    assert value(exporter, "quantapool_stqrl_total_pooled_qrl") == pytest.approx(123_456.5)


def test_node_of_the_other_profile_yields_no_values(make_exporter, node, pool_values, value, profile):
    """A gqrl config pointed at a gzond node (or the reverse) must fail loudly, not read anything."""
    node.namespace, node.prefix = {"gqrl": ("zond", "Z"), "gzond": ("qrl", "Q")}[profile]
    exporter = make_exporter()
    assert not exporter.collect_once().ok
    assert value(exporter, "quantapool_chain_block_height") is None
    assert value(exporter, "quantapool_pool_exchange_rate") is None
    assert value(exporter, "quantapool_exporter_up") == 0.0


def test_slow_node_cannot_stretch_a_cycle_past_the_interval(make_exporter, node, pool_values, value):
    """Every call times out; after interval_seconds the remaining reads are skipped, not attempted."""
    node.call_faults = {key: "timeout" for key in node.views}
    exporter = make_exporter(interval_seconds=0.5, rpc_timeout_seconds=0.2, rpc_retries=0)
    result = exporter.collect_once()
    assert not result.ok
    attempted = len(node.calls("call"))
    assert 1 <= attempted < len(VIEWS)
    assert sum(line.endswith(": skipped") for line in result.failed) >= len(VIEWS) - attempted
    for contract, call in ALL_CALLS:
        assert value(exporter, "quantapool_exporter_call_success", contract=contract, call=call) == 0.0
