"""The beacon-chain stand-in as a process: engine JWT, REST gateway, monitoring, profiles, DB lock."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from lab.standins import chain
from lab.standins.harness import (
    Runner,
    Stack,
    http_get,
    parse_metrics,
    promtool_check,
    start_beacon,
    start_execution,
    start_stack,
    wait_until,
    write_jwt,
)

BEACON_METRICS = ("beacon_head_slot", "beacon_clock_time_slot", "beacon_finalized_epoch",
                  "beacon_current_justified_epoch", "p2p_peer_count", "connected_libp2p_peers")
# Lint findings promtool reports for the clients' real metric names (kept as the real clients name them).
KNOWN_LINT = ('should not have "_count" suffix', 'should have "_total" suffix')


def test_synced_beacon_rest_and_metrics(stack: Stack) -> None:
    status, body = http_get(stack.rest_url + "/zond/v1/node/syncing")
    data = json.loads(body)["data"]
    assert status == 200 and data["is_syncing"] is False and data["head_slot"].isdigit()
    genesis = json.loads(http_get(stack.rest_url + "/zond/v1/beacon/genesis")[1])["data"]
    assert genesis["genesis_validators_root"] == chain.genesis_validators_root(chain.DEFAULT_GENESIS_TIME)
    head = json.loads(http_get(stack.rest_url + "/zond/v1/beacon/headers/head")[1])["data"]
    assert int(head["header"]["message"]["slot"]) >= int(data["head_slot"])
    assert http_get(stack.rest_url + "/eth/v1/node/health")[0] == 404
    assert http_get(stack.rest_url + "/qrl/v1/node/health")[0] == 404

    text = http_get(stack.bn_metrics_url)[1].decode()
    samples = parse_metrics(text)
    for name in BEACON_METRICS:
        assert name in samples, name
    assert ({"state": "Connected"}, 5.0) in samples["p2p_peer_count"]
    findings = promtool_check(text)
    assert all(any(k in f for k in KNOWN_LINT) for f in findings), findings
    assert http_get(stack.bn_metrics_url.replace("/metrics", "/healthz"))[0] == 200

    host, port = stack.grpc.split(":")
    with socket.create_connection((host, int(port)), timeout=2):
        pass


def test_mismatched_jwt_keeps_beacon_unsynced(runner: Runner, tmp_path: Path) -> None:
    el = start_execution(runner, tmp_path, write_jwt(tmp_path / "el-jwt.hex"))
    bn = start_beacon(runner, tmp_path, write_jwt(tmp_path / "bn-jwt.hex"), el["auth"])
    wait_until(lambda: "Could not connect to execution client endpoint" in bn["proc"].log(), 10, "engine error")
    assert "401" in bn["proc"].log()
    assert "Engine API request rejected" in el["proc"].log()
    assert http_get(bn["rest"] + "/zond/v1/node/health")[0] == 503
    data = json.loads(http_get(bn["rest"] + "/zond/v1/node/syncing")[1])["data"]
    assert data["is_syncing"] is True and data["el_offline"] is True
    before = parse_metrics(http_get(bn["metrics"])[1].decode())["beacon_head_slot"]
    time.sleep(1.2)  # more than two slots: a synced node would have moved
    assert parse_metrics(http_get(bn["metrics"])[1].decode())["beacon_head_slot"] == before


def test_beacon_loses_sync_when_execution_stops(stack: Stack) -> None:
    assert stack.el.stop() == 0
    wait_until(lambda: http_get(stack.rest_url + "/zond/v1/node/health")[0] == 503, 10, "beacon health 503")


def test_gqrl_profile_uses_qrl_prefix(runner: Runner, tmp_path: Path) -> None:
    stack = start_stack(runner, tmp_path, prefix="/qrl", client="gqrl", beacon_env={"QP_STANDIN_PROFILE": "gqrl"})
    assert http_get(stack.rest_url + "/qrl/v1/node/health")[0] == 200
    assert http_get(stack.rest_url + "/zond/v1/node/health")[0] == 404


def test_beacon_db_lock(stack: Stack, runner: Runner, tmp_path: Path) -> None:
    res = runner.run("beacon-chain", "--accept-terms-of-use", "--datadir", str(tmp_path / "bn"),
                     "--rpc-port", "0", "--grpc-gateway-port", "0", "--monitoring-port", "0")
    assert res.returncode == 1
    assert "cannot obtain database lock" in res.stderr
    assert stack.bn.stop() == 0


def test_beacon_reports_206_while_execution_syncs(runner: Runner, tmp_path: Path) -> None:
    jwt = write_jwt(tmp_path / "jwt.hex")
    el = start_execution(runner, tmp_path, jwt, env={"QP_STANDIN_SYNC_SECONDS": "3"})
    bn = start_beacon(runner, tmp_path, jwt, el["auth"])
    wait_until(lambda: http_get(bn["rest"] + "/zond/v1/node/health")[0] == 206, 10, "beacon health 206")
    data = json.loads(http_get(bn["rest"] + "/zond/v1/node/syncing")[1])["data"]
    assert data["is_syncing"] is True and data["el_offline"] is False
    wait_until(lambda: http_get(bn["rest"] + "/zond/v1/node/health")[0] == 200, 15, "beacon health 200")
