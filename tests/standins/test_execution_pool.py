"""The execution stand-in's pool contracts, read by the real contract exporter (as in the lab)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.collector import Exporter
from exporter.config import parse_config
from exporter.views import EVENTS, VIEWS
from lab.standins import jwtauth, pool, pool_abi
from lab.standins.harness import Runner, http_post, rpc, start_execution, wait_until, write_jwt

ADDR = {"deposit_pool": "8e01ea0bc7e337806154573a5b46bb37f50ea8fc",
        "stqrl": "7d4ca4872502a1ab02bca855c093449aae2bee58",
        "validator_manager": "d84648a8f7314652b3e98d346645415ea03cce5f"}
ENV = {pool.ENV: ",".join(f"{k}={v}" for k, v in ADDR.items())}


def _synced_node(runner: Runner, tmp_path: Path, client: str) -> dict:
    jwt = write_jwt(tmp_path / "jwt.hex")
    el = start_execution(runner, tmp_path, jwt, client=client, env=ENV)
    http_post(el["auth"], {"jsonrpc": "2.0", "id": 1, "method": "engine_forkchoiceUpdatedV2",
                           "params": [{"headBlockHash": "0x" + "00" * 32}, None]},
              {"Authorization": "Bearer " + jwtauth.make_token(jwtauth.load_secret(jwt))})
    ns = {"gzond": "zond", "gqrl": "qrl"}[client]
    # past block 25: deposits, a reward sync (and, from block 73, a funded validator) exist
    wait_until(lambda: int(rpc(el["http"], f"{ns}_blockNumber")["result"], 16) > 26, 30, "head past block 26")
    return el


@pytest.mark.parametrize(("client", "profile", "prefix"), [("gqrl", "gqrl", "Q"), ("gzond", "gzond", "Z")])
def test_the_real_exporter_reads_the_standin_pool(runner: Runner, tmp_path: Path, client: str, profile: str,
                                                  prefix: str) -> None:
    el = _synced_node(runner, tmp_path, client)
    config = parse_config({
        "profile": profile, "rpc_urls": [el["http"]],
        "contracts": {k: prefix + v for k, v in ADDR.items()},
        "listen_address": "127.0.0.1", "listen_port": 0, "state_dir": str(tmp_path / "exporter"),
        "rpc_retries": 0, "rpc_timeout_seconds": 5,
    })
    exporter = Exporter(config)
    result = exporter.collect_once()
    assert result.ok, result.failed
    assert result.absent == []
    reg = exporter.registry
    for view in VIEWS:
        assert reg.get_sample_value("quantapool_exporter_call_success",
                                    {"contract": view.contract, "call": view.function}) == 1.0, view.function
    head = reg.get_sample_value("quantapool_chain_block_height")
    state = pool.PoolState(int(head))
    assert reg.get_sample_value("quantapool_stqrl_total_pooled_qrl") == state.pooled / pool.WEI
    assert reg.get_sample_value("quantapool_pool_paused", {"contract": "deposit_pool"}) == 0.0
    assert reg.get_sample_value("quantapool_stqrl_deposit_pool_matches") == 1.0
    assert reg.get_sample_value("quantapool_pool_balance_qrl") == state.balance / pool.WEI
    # the scan is bounded per cycle: the counters cover blocks 0..cursor
    scanned = pool.PoolState(int(reg.get_sample_value("quantapool_exporter_event_cursor_block")))
    expected = {("deposit_pool", "Deposited"): scanned.deposits, ("deposit_pool", "RewardsSynced"):
                scanned.rewards_synced, ("deposit_pool", "ValidatorFunded"): scanned.validators,
                ("validator_manager", "ValidatorRegistered"): scanned.validators,
                ("validator_manager", "ValidatorActivated"): scanned.validators}
    for (contract, event), count in expected.items():
        assert count > 0
        assert reg.get_sample_value("quantapool_events_total", {"contract": contract, "event": event}) == count
    assert reg.get_sample_value("quantapool_exporter_log_shape_mismatch_total",
                                {"contract": "deposit_pool", "event": "Deposited"}) is None
    assert {e.name for e in EVENTS} >= {"Deposited", "RewardsSynced", "ValidatorFunded"}


def test_a_function_the_contract_lacks_reverts(runner: Runner, tmp_path: Path) -> None:
    el = _synced_node(runner, tmp_path, "gqrl")
    selector = next(s for s, sig, _o in pool_abi.FUNCTIONS["stqrl"] if sig == "totalPooledQRL()")
    to_pool = {"to": "Q" + ADDR["deposit_pool"], "data": "0x" + selector}
    assert rpc(el["http"], "qrl_call", [to_pool, "latest"])["error"] == {"code": -32000,
                                                                          "message": "execution reverted"}
    to_stqrl = {"to": "Q" + ADDR["stqrl"], "data": "0x" + selector}
    assert rpc(el["http"], "qrl_call", [to_stqrl, "latest"])["result"].startswith("0x")
    not_a_contract = {"to": "Q" + "ab" * 20, "data": "0x" + selector}
    assert rpc(el["http"], "qrl_call", [not_a_contract, "latest"])["result"] == "0x"
    assert rpc(el["http"], "qrl_call", [to_stqrl, hex(10**9)])["error"]["message"] == "header not found"
    assert rpc(el["http"], "qrl_call", [{"to": "Z" + ADDR["stqrl"], "data": "0x"}, "latest"])["error"]["code"] == -32602


def test_pool_env_is_checked() -> None:
    with pytest.raises(ValueError, match="missing stqrl"):
        pool.PoolContracts.parse("deposit_pool=" + "11" * 20)
    with pytest.raises(ValueError, match="40 hex"):
        pool.PoolContracts.parse("deposit_pool=11,stqrl=22,validator_manager=33")
    assert pool.PoolContracts.from_env({}) is None
