"""Optional views, RPC endpoint fallback, head age and head regressions."""

from __future__ import annotations

from exporter.endpoints import endpoint_label

OPTIONAL = [("deposit_pool", "stakedQRL()"), ("deposit_pool", "bufferedQRLInReserve()"), ("stqrl", "minStakeBlocks()")]


def test_a_deployment_without_the_optional_views_is_up(make_exporter, node, pool_values, value):
    for contract, signature in OPTIONAL:
        node.remove_function(contract, signature)  # the legacy v2.2 contracts
    exporter = make_exporter()
    result = exporter.collect_once()
    assert result.ok, result.failed
    assert len(result.absent) == 3
    assert value(exporter, "quantapool_exporter_up") == 1.0
    for contract, signature in OPTIONAL:
        call = signature.removesuffix("()")
        assert value(exporter, "quantapool_exporter_call_success", contract=contract, call=call) == 0.0
    assert value(exporter, "quantapool_pool_staked_qrl") is None  # never a default
    assert value(exporter, "quantapool_stqrl_min_stake_blocks") is None


def test_an_optional_view_failing_otherwise_fails_up(make_exporter, node, pool_values, value):
    node.fault_call("deposit_pool", "stakedQRL()", "malformed")
    exporter = make_exporter()
    assert not exporter.collect_once().ok
    assert value(exporter, "quantapool_exporter_up") == 0.0


def test_a_required_view_that_reverts_fails_up(make_exporter, node, pool_values, value):
    node.remove_function("stqrl", "getExchangeRate()")
    exporter = make_exporter()
    result = exporter.collect_once()
    assert not result.ok
    assert any("getExchangeRate: qrl_call: execution reverted" in line or "zond_call: execution reverted" in line
               for line in result.failed), result.failed
    assert value(exporter, "quantapool_exporter_up") == 0.0


def test_falls_back_to_the_next_endpoint_in_order(make_exporter, node_server, node, pool_values, value, free_port,
                                                  start_node):
    dead = f"http://127.0.0.1:{free_port}"
    second = start_node()
    exporter = make_exporter(rpc_url=None, rpc_urls=[dead, node_server.url, second.url])
    result = exporter.collect_once()
    assert result.ok, result.failed
    assert value(exporter, "quantapool_exporter_rpc_endpoint_up", endpoint=endpoint_label(dead)) == 0.0
    assert value(exporter, "quantapool_exporter_rpc_endpoint_up", endpoint=endpoint_label(node_server.url)) == 1.0
    # the third was not needed, so not probed
    assert value(exporter, "quantapool_exporter_rpc_endpoint_up", endpoint=endpoint_label(second.url)) is None
    assert second.node.calls("blockNumber") == []
    active = {url: value(exporter, "quantapool_exporter_rpc_endpoint_active", endpoint=endpoint_label(url))
              for url in (dead, node_server.url, second.url)}
    assert active == {dead: 0.0, node_server.url: 1.0, second.url: 0.0}
    assert len(node.calls("call")) > 0


def test_no_endpoint_answers(make_exporter, free_port, value):
    exporter = make_exporter(rpc_url=None, rpc_urls=[f"http://127.0.0.1:{free_port}"])
    result = exporter.collect_once()
    assert not result.ok
    assert result.failed[0].startswith("chain.blockNumber: no endpoint answered")
    assert value(exporter, "quantapool_exporter_up") == 0.0


def test_stale_head_is_not_healthy_and_a_fresher_endpoint_wins(make_exporter, node_server, node, pool_values, value,
                                                               clock, start_node):
    fresh = start_node()
    exporter = make_exporter(rpc_url=None, rpc_urls=[node_server.url, fresh.url], head_stale_seconds=300)
    assert exporter.collect_once().ok
    assert fresh.node.calls("blockNumber") == []  # the first one was current
    clock.now += 200
    assert exporter.collect_once().ok  # same head, 200 s old: still current
    assert value(exporter, "quantapool_chain_head_age_seconds") == 200
    clock.now += 200  # 400 s without a new block on the first endpoint, and the second is no better
    fresh.node.head = node.head
    result = exporter.collect_once()
    assert not result.ok
    assert any("has not advanced for 400s" in line for line in result.failed), result.failed
    assert value(exporter, "quantapool_exporter_up") == 0.0
    assert value(exporter, "quantapool_chain_head_age_seconds") == 400
    assert len(fresh.node.calls("blockNumber")) == 1  # it was asked for a newer head
    # the second endpoint moves on: it is used, and the head is current again
    populate_like(fresh.node, node)
    fresh.node.head = node.head + 1
    result = exporter.collect_once()
    assert result.ok, result.failed
    assert value(exporter, "quantapool_chain_head_age_seconds") == 0
    assert value(exporter, "quantapool_chain_block_height") == node.head + 1
    assert value(exporter, "quantapool_exporter_rpc_endpoint_active", endpoint=endpoint_label(fresh.url)) == 1.0


def test_head_regression_is_counted_and_reads_nothing(make_exporter, node, pool_values, value):
    exporter = make_exporter()
    assert exporter.collect_once().ok
    assert value(exporter, "quantapool_chain_head_regressions_total") == 0.0
    calls_before = len(node.calls("call"))
    node.head -= 5  # e.g. a node restored from an old snapshot
    node.set_view("stqrl", "getExchangeRate()", ["uint256"], [2 * 10**18])
    result = exporter.collect_once()
    assert not result.ok
    assert value(exporter, "quantapool_chain_head_regressions_total") == 1.0
    assert value(exporter, "quantapool_exporter_up") == 0.0
    assert len(node.calls("call")) == calls_before  # nothing read at the old head
    assert value(exporter, "quantapool_chain_block_height") == node.head + 5  # not lowered
    assert value(exporter, "quantapool_pool_exchange_rate") == 1.0288
    node.head += 6  # past the highest head already read: current again
    assert exporter.collect_once().ok
    assert value(exporter, "quantapool_chain_head_regressions_total") == 1.0
    assert value(exporter, "quantapool_pool_exchange_rate") == 2.0


def test_endpoint_label_drops_userinfo():
    assert endpoint_label("https://user:secret@node.example:8545/rpc") == "https://node.example:8545/rpc"
    assert endpoint_label("http://10.0.0.5:8545") == "http://10.0.0.5:8545"


def test_config_rpc_urls_order(config_factory, tmp_path):
    cfg = config_factory("gqrl", None, tmp_path, rpc_urls=["http://10.0.0.2:8545", "http://10.0.0.1:8545"])
    assert cfg.endpoints == ["http://10.0.0.2:8545", "http://10.0.0.1:8545"]


def populate_like(target, source) -> None:
    """Give a second fake node the same contract state as the first."""
    target.views.update(source.views)
    target.balances.update(source.balances)
