"""The execution stand-ins (gzond, gqrl) as processes: JSON-RPC, Engine API auth, metrics, datadir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.standins import jwtauth
from lab.standins.harness import (
    Runner,
    free_port,
    http_get,
    http_post,
    parse_metrics,
    promtool_check,
    rpc,
    start_execution,
    wait_until,
    write_jwt,
)

EXEC_METRICS = ("chain_head_block", "chain_head_header", "chain_head_finalized", "chain_head_safe", "p2p_peers",
                "txpool_pending", "txpool_queued")


def _fcu(auth_url: str, secret: bytes | None, iat: int | None = None) -> tuple[int, object]:
    headers = {} if secret is None else {"Authorization": "Bearer " + jwtauth.make_token(secret, iat)}
    return http_post(auth_url, {"jsonrpc": "2.0", "id": 7, "method": "engine_forkchoiceUpdatedV2",
                                "params": [{"headBlockHash": "0x" + "00" * 32}, None]}, headers)


@pytest.mark.parametrize(("client", "ns", "other"), [("gzond", "zond", "qrl"), ("gqrl", "qrl", "zond")])
def test_rpc_namespace_and_sync(runner: Runner, tmp_path: Path, client: str, ns: str, other: str) -> None:
    jwt = write_jwt(tmp_path / "jwt.hex")
    el = start_execution(runner, tmp_path, jwt, client=client)
    assert rpc(el["http"], f"{ns}_chainId")["result"] == hex(32382)
    assert rpc(el["http"], f"{ns}_syncing")["result"] is not False  # no consensus client yet
    assert rpc(el["http"], f"{other}_blockNumber")["error"]["code"] == -32601
    assert rpc(el["http"], "engine_exchangeCapabilities")["error"]["code"] == -32601
    assert rpc(el["http"], "web3_clientVersion")["result"].lower().startswith(client)
    assert rpc(el["http"], "net_peerCount")["result"].startswith("0x")

    status, body = _fcu(el["auth"], jwtauth.load_secret(jwt))
    assert status == 200 and body["result"]["payloadStatus"]["status"] in ("VALID", "SYNCING")
    wait_until(lambda: rpc(el["http"], f"{ns}_syncing")["result"] is False, 10, "execution synced")
    first = int(rpc(el["http"], f"{ns}_blockNumber")["result"], 16)
    wait_until(lambda: int(rpc(el["http"], f"{ns}_blockNumber")["result"], 16) > first, 10, "head to advance")

    metrics_text = http_get(el["metrics"])[1].decode()
    samples = parse_metrics(metrics_text)
    for name in (*EXEC_METRICS, f"{client}_info"):
        assert name in samples, name
    assert samples[f"{client}_info"][0][0]["version"]
    assert samples["chain_head_block"][0][1] >= first
    promtool_check(metrics_text)

    state = json.loads((tmp_path / "el" / client / "standin-state.json").read_text())
    assert state["head"] >= first
    assert el["proc"].stop() == 0


def test_auth_rpc_requires_valid_jwt(runner: Runner, tmp_path: Path) -> None:
    jwt = write_jwt(tmp_path / "jwt.hex")
    el = start_execution(runner, tmp_path, jwt)
    secret = jwtauth.load_secret(jwt)
    assert _fcu(el["auth"], None)[0] == 401
    assert _fcu(el["auth"], bytes(32))[0] == 401
    assert _fcu(el["auth"], secret, iat=1_000_000)[0] == 401  # stale iat
    assert _fcu(el["auth"], secret)[0] == 200
    assert "Engine API request rejected" in el["proc"].log()


def test_http_vhosts_filter(runner: Runner, tmp_path: Path) -> None:
    el = start_execution(runner, tmp_path, write_jwt(tmp_path / "jwt.hex"))
    body = {"jsonrpc": "2.0", "id": 1, "method": "zond_chainId", "params": []}
    assert http_post(el["http"], body, {"Host": "evil.example"})[0] == 403
    assert http_post(el["http"], body, {"Host": "localhost:8545"})[0] == 200


def test_datadir_lock_and_clean_sigterm(runner: Runner, tmp_path: Path) -> None:
    jwt = write_jwt(tmp_path / "jwt.hex")
    el = start_execution(runner, tmp_path, jwt)
    res = runner.run("gzond", "--datadir", str(tmp_path / "el"), "--authrpc.port", "0", "--port", "0",
                     "--nodiscover")
    assert res.returncode == 1
    assert "datadir already used by another process" in res.stderr
    assert el["proc"].stop() == 0
    assert "Stopped" in el["proc"].log()


def test_metrics_need_bare_flag_and_addr(runner: Runner, tmp_path: Path) -> None:
    """--metrics.addr without --metrics starts no metrics server (go-zond behaviour)."""
    port = free_port()
    proc = runner.start("gzond", "--datadir", str(tmp_path / "el"), "--authrpc.port", str(free_port()),
                        "--authrpc.jwtsecret", str(write_jwt(tmp_path / "jwt.hex")), "--port", str(free_port()),
                        "--nodiscover", "--metrics.addr", "127.0.0.1", "--metrics.port", str(port))
    wait_until(lambda: "Started stand-in execution client" in proc.log(), 10, "gzond start")
    assert http_get(f"http://127.0.0.1:{port}/debug/metrics/prometheus")[0] == 0
    assert proc.stop() == 0
