"""Fixtures for the contract exporter tests: a fake execution client on 127.0.0.1.

The fake node speaks JSON-RPC like gzond/gqrl for the four methods the exporter uses, answers
only in its own namespace and address prefix (so a profile mix-up fails loudly), decodes eth_call
by selector and answers ABI-encoded values, and serves logs filtered like ``getLogs``. Faults are
injected per method or per (contract, selector).

Each pool contract answers only the functions the real one has (lab/standins/pool_abi.py, extracted from
the Solidity sources): any other selector reverts the way go-zond reports a revert without revert data
(none of the contracts has a fallback): JSON-RPC error -32000 "execution reverted".
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from eth_hash.auto import keccak

from exporter.collector import Exporter
from exporter.config import ExporterConfig
from lab.standins import pool_abi

WEI = 10**18
# Independent of exporter code: the test derives selectors/topics itself.
PROFILES = {"gzond": ("zond", "Z"), "gqrl": ("qrl", "Q")}
ADDR = {
    "deposit_pool": bytes.fromhex("8e01ea0bc7e337806154573a5b46bb37f50ea8fc"),
    "stqrl": bytes.fromhex("7d4ca4872502a1ab02bca855c093449aae2bee58"),
    "validator_manager": bytes.fromhex("d84648a8f7314652b3e98d346645415ea03cce5f"),
}
OWNER = bytes.fromhex("11" * 20)
# go-zond's answer to a call that reverts without revert data (internal/zondapi/api.go Call -> vm error)
REVERT_NO_DATA = {"code": -32000, "message": "execution reverted"}
FAULT_SLEEP = 0.6  # seconds a "timeout" fault sleeps; timeout tests use rpc_timeout_seconds=0.3


def sel(signature: str) -> bytes:
    return keccak(signature.encode())[:4]


def topic(signature: str) -> str:
    return "0x" + keccak(signature.encode()).hex()


def word(value: int | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.to_bytes(32, "big")
    return "0x" + raw.rjust(32, b"\0").hex()


@dataclass
class FakeNode:
    namespace: str
    prefix: str
    head: int = 1000
    views: dict[tuple[bytes, bytes], bytes] = field(default_factory=dict)
    balances: dict[bytes, int] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    unfiltered_logs: list[Any] = field(default_factory=list)  # returned by every getLogs, as is
    method_faults: dict[str, str] = field(default_factory=dict)  # suffix -> fault
    call_faults: dict[tuple[bytes, bytes], str] = field(default_factory=dict)
    log_faults: dict[int, str] = field(default_factory=dict)  # fromBlock -> fault
    requests: list[tuple[str, list[Any]]] = field(default_factory=list)
    owner: bytes = OWNER
    # address -> selector -> signature: the functions each contract has (drop one to fake an older version)
    functions: dict[bytes, dict[bytes, str]] = field(default_factory=lambda: {
        ADDR[key]: {sel: sig for sel, (sig, _out) in pool_abi.selectors(key).items()} for key in ADDR
    })
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- setup helpers --------------------------------------------------------------------------
    def text(self, raw: bytes) -> str:
        return self.prefix + raw.hex()

    def set_view(self, contract: str, signature: str, types: list[str], values: list[Any]) -> None:
        if sel(signature) not in self.functions[ADDR[contract]]:
            raise AssertionError(f"the real {contract} contract has no {signature}")
        self.views[(ADDR[contract], sel(signature))] = encode(types, values)

    def remove_function(self, contract: str, signature: str) -> None:
        """Fake a deployment that predates ``signature``: calls to it revert from now on."""
        del self.functions[ADDR[contract]][sel(signature)]

    def fault_call(self, contract: str, signature: str, fault: str | None) -> None:
        key = (ADDR[contract], sel(signature))
        if fault is None:
            self.call_faults.pop(key, None)
        else:
            self.call_faults[key] = fault

    def add_log(
        self, contract: str, signature: str, block: int, index: int, indexed: tuple[int | bytes, ...] = (),
        data: bytes = b"", tx: str | None = None, address: bytes | None = None,
    ) -> None:
        self.logs.append({
            "address": self.text(address or ADDR[contract]),
            "topics": [topic(signature), *(word(v) for v in indexed)],
            "data": "0x" + data.hex(),
            "blockNumber": hex(block),
            "transactionHash": tx or "0x" + keccak(f"{block}/{index}".encode()).hex(),
            "logIndex": hex(index),
            "blockHash": "0x" + keccak(str(block).encode()).hex(),
            "removed": False,
        })

    def calls(self, suffix: str) -> list[list[Any]]:
        with self.lock:
            return [p for m, p in self.requests if m == f"{self.namespace}_{suffix}"]

    # -- JSON-RPC -------------------------------------------------------------------------------
    def handle(self, method: str, params: list[Any]) -> tuple[str, Any]:
        """Return ("result", value) | ("error", obj) | ("raw", bytes) | ("http", status)."""
        with self.lock:
            self.requests.append((method, params))
        ns, _, suffix = method.partition("_")
        if ns != self.namespace:
            return "error", {"code": -32601, "message": f"the method {method} does not exist"}
        fault = self.method_faults.get(suffix)
        if fault:
            return self._fault(fault)
        if suffix == "blockNumber":
            return "result", hex(self.head)
        if suffix == "getBalance":
            address, block = params
            self._check_block(block)
            return "result", hex(self.balances.get(self._addr(address), 0))
        if suffix == "call":
            tx, block = params
            self._check_block(block)
            key = (self._addr(tx["to"]), bytes.fromhex(tx["data"][2:10]))
            if key in self.call_faults:
                return self._fault(self.call_faults[key])
            table = self.functions.get(key[0])
            if table is None:  # an account without code: the call succeeds and returns nothing
                return "result", "0x"
            if key[1] not in table:  # no such function and no fallback: the contract reverts
                return "error", dict(REVERT_NO_DATA)
            if key not in self.views:
                return "error", {"code": -32603, "message": f"fake node: no value set for {table[key[1]]}"}
            return "result", "0x" + self.views[key].hex()
        if suffix == "getLogs":
            (flt,) = params
            lo, hi = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
            if lo in self.log_faults:
                return self._fault(self.log_faults[lo])
            addrs = {a.lower() for a in flt["address"]}
            topic0s = set(flt["topics"][0])
            return "result", [
                entry for entry in self.logs
                if lo <= int(entry["blockNumber"], 16) <= hi
                and entry["address"].lower() in addrs and entry["topics"][0] in topic0s
            ] + self.unfiltered_logs
        return "error", {"code": -32601, "message": f"the method {method} does not exist"}

    def _addr(self, text: str) -> bytes:
        if not (isinstance(text, str) and text.startswith(self.prefix) and len(text) == 41):
            raise ValueError(f"invalid address {text!r} for prefix {self.prefix}")
        return bytes.fromhex(text[1:])

    def _check_block(self, block: str) -> None:
        if block != "latest" and int(block, 16) > self.head:
            raise ValueError(f"block {block} beyond head")

    @staticmethod
    def _fault(fault: str) -> tuple[str, Any]:
        if fault == "timeout":
            time.sleep(FAULT_SLEEP)
            return "result", "0x0"
        if fault == "error":  # a revert with revert data, e.g. require(..., "fake"): Error(string)
            data = "0x08c379a0" + encode(["string"], ["fake"]).hex()
            return "error", {"code": 3, "message": "execution reverted: fake", "data": data}
        if fault == "revert":
            return "error", dict(REVERT_NO_DATA)
        if fault == "empty":
            return "result", "0x"
        if fault == "malformed":
            return "result", "0xnothex"
        if fault == "notstring":
            return "result", {"unexpected": True}
        if fault == "short":
            return "result", "0x" + "00" * 16
        if fault == "garbage":
            return "raw", b"<html>bad gateway</html>"
        if fault == "http500":
            return "http", 500
        raise AssertionError(f"unknown fault {fault}")


class _Handler(BaseHTTPRequestHandler):
    node: FakeNode

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            kind, value = self.server.node.handle(body["method"], body["params"])  # type: ignore[attr-defined]
        except (ValueError, KeyError, TypeError) as exc:
            kind, value = "error", {"code": -32602, "message": f"invalid params: {exc}"}
        if kind == "http":
            self.send_response(value)
            self.end_headers()
            return
        payload = value if kind == "raw" else json.dumps({"jsonrpc": "2.0", "id": body["id"], kind: value}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may have timed out and hung up
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class NodeServer:
    """A FakeNode behind a threading HTTP server on 127.0.0.1 (ephemeral or given port)."""

    def __init__(self, node: FakeNode, port: int = 0) -> None:
        self.node = node
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.node = node  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def populate_pool(node: FakeNode) -> dict[str, float]:
    """Answer every view with distinct values; return the expected sample values by metric name."""
    u = ["uint256"]
    dp, st, vm = "deposit_pool", "stqrl", "validator_manager"
    node.set_view(dp, "bufferedQRL()", u, [3_456 * WEI])
    node.set_view(dp, "stakedQRL()", u, [120_000 * WEI])
    node.set_view(dp, "validatorCount()", u, [3])
    node.set_view(dp, "minDeposit()", u, [100 * WEI])
    node.set_view(dp, "minDepositFloor()", u, [WEI // 10])
    node.set_view(dp, "paused()", ["bool"], [True])
    node.set_view(dp, "totalWithdrawalShares()", u, [7 * WEI])
    node.set_view(dp, "withdrawalReserve()", u, [8 * WEI])
    node.set_view(dp, "bufferedQRLInReserve()", u, [9 * WEI])
    node.set_view(dp, "lastSyncBlock()", u, [990])
    node.set_view(dp, "totalRewardsReceived()", u, [42 * WEI])
    node.set_view(dp, "totalSlashingLosses()", u, [WEI])
    node.set_view(dp, "owner()", ["address"], [OWNER])
    node.set_view(
        dp, "getPoolStatus()", ["uint256"] * 7,
        [123_456 * WEI, 120_000 * WEI, 3_456 * WEI, 3, 7 * WEI, 8 * WEI, 1_028_800_000_000_000_000],
    )
    node.set_view(dp, "getRewardStats()", ["uint256"] * 4, [42 * WEI, WEI, 41 * WEI, 990])
    node.set_view(dp, "canFundValidator()", ["bool", "uint256"], [False, 3_456 * WEI])
    node.set_view(dp, "VALIDATOR_STAKE()", u, [40_000 * WEI])
    node.set_view(dp, "WITHDRAWAL_DELAY()", u, [128])
    node.set_view(st, "totalSupply()", u, [123_456 * WEI])
    node.set_view(st, "totalShares()", u, [120_000 * WEI])
    node.set_view(st, "totalPooledQRL()", u, [123_456 * WEI + WEI // 2])
    node.set_view(st, "getExchangeRate()", u, [1_028_800_000_000_000_000])
    node.set_view(st, "minStakeBlocks()", u, [10])
    node.set_view(st, "paused()", ["bool"], [False])
    node.set_view(st, "depositPool()", ["address"], [ADDR[dp]])
    node.set_view(vm, "totalValidators()", u, [4])
    node.set_view(vm, "activeValidatorCount()", u, [3])
    node.set_view(vm, "pendingValidatorCount()", u, [1])
    node.set_view(vm, "getStats()", ["uint256"] * 4, [4, 1, 3, 160_000 * WEI])
    node.balances[ADDR[dp]] = 3_460 * WEI + 25 * 10**16
    return {
        "quantapool_pool_buffered_qrl": 3_456.0,
        "quantapool_pool_staked_qrl": 120_000.0,
        "quantapool_pool_validators": 3.0,
        "quantapool_pool_min_deposit_qrl": 100.0,
        "quantapool_pool_min_deposit_floor_qrl": 0.1,
        "quantapool_pool_withdrawal_shares": 7.0,
        "quantapool_pool_withdrawal_reserve_qrl": 8.0,
        "quantapool_pool_buffered_in_reserve_qrl": 9.0,
        "quantapool_pool_last_sync_block": 990.0,
        "quantapool_pool_total_rewards_qrl": 42.0,
        "quantapool_pool_total_slashing_losses_qrl": 1.0,
        "quantapool_pool_status_total_pooled_qrl": 123_456.0,
        "quantapool_pool_status_total_shares": 120_000.0,
        "quantapool_pool_status_buffered_qrl": 3_456.0,
        "quantapool_pool_status_validators": 3.0,
        "quantapool_pool_status_pending_withdrawal_shares": 7.0,
        "quantapool_pool_status_reserve_balance_qrl": 8.0,
        "quantapool_pool_status_exchange_rate": 1.0288,
        "quantapool_pool_reward_stats_total_rewards_qrl": 42.0,
        "quantapool_pool_reward_stats_total_slashing_qrl": 1.0,
        "quantapool_pool_reward_stats_net_rewards_qrl": 41.0,
        "quantapool_pool_reward_stats_last_sync_block": 990.0,
        "quantapool_pool_can_fund_validator": 0.0,
        "quantapool_pool_can_fund_buffered_qrl": 3_456.0,
        "quantapool_pool_validator_stake_qrl": 40_000.0,
        "quantapool_pool_withdrawal_delay_blocks": 128.0,
        "quantapool_stqrl_total_supply": 123_456.0,
        "quantapool_stqrl_total_shares": 120_000.0,
        "quantapool_stqrl_total_pooled_qrl": 123_456.5,
        "quantapool_pool_exchange_rate": 1.0288,
        "quantapool_stqrl_min_stake_blocks": 10.0,
        "quantapool_validators_registered": 4.0,
        "quantapool_validators_active": 3.0,
        "quantapool_validators_pending": 1.0,
        "quantapool_validators_stats_registered": 4.0,
        "quantapool_validators_stats_pending": 1.0,
        "quantapool_validators_stats_active": 3.0,
        "quantapool_validators_stats_total_staked_qrl": 160_000.0,
        "quantapool_pool_balance_qrl": 3_460.25,
        "quantapool_stqrl_deposit_pool_matches": 1.0,
    }


def make_config(profile: str, rpc_url: str, state_dir: Path, **overrides: Any) -> ExporterConfig:
    prefix = PROFILES[profile][1]
    data: dict[str, Any] = {
        "profile": profile,
        "rpc_url": rpc_url,
        "contracts": {k: prefix + v.hex() for k, v in ADDR.items()},
        "listen_address": "127.0.0.1",
        "listen_port": 0,
        "rpc_timeout_seconds": 2.0,  # generous for a loaded CI box; timeout tests pass SHORT_TIMEOUT
        "rpc_retries": 1,
        "rpc_retry_backoff_seconds": 0.0,
        "state_dir": str(state_dir),
        "log_max_block_range": 100,
        "log_max_ranges_per_cycle": 50,
        "reorg_depth": 10,
        "start_block": 0,
    }
    data.update(overrides)
    return ExporterConfig.model_validate(data)


@pytest.fixture(params=["gqrl", "gzond"])
def profile(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def node_server(profile: str) -> Iterator[NodeServer]:
    ns, prefix = PROFILES[profile]
    server = NodeServer(FakeNode(namespace=ns, prefix=prefix))
    yield server
    server.stop()


@pytest.fixture
def node(node_server: NodeServer) -> FakeNode:
    return node_server.node


class FakeClock:
    """Stands in for time.time so last-success timestamps are exact."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_exporter(
    profile: str, node_server: NodeServer, state_dir: Path, clock: FakeClock
) -> Callable[..., Exporter]:
    """Build an Exporter against the fake node; keyword arguments override config keys."""

    def build(**overrides: Any) -> Exporter:
        url = overrides.pop("rpc_url", node_server.url)
        return Exporter(make_config(profile, url, state_dir, **overrides), clock=clock)

    return build


@pytest.fixture
def pool_values(node: FakeNode) -> dict[str, float]:
    return populate_pool(node)


@pytest.fixture
def config_factory() -> Callable[..., ExporterConfig]:
    return make_config


@pytest.fixture
def free_port() -> int:
    """A loopback port that nothing listens on (bound once, then released; per-worker range under xdist)."""
    from lab.standins.harness import free_port as harness_free_port

    return harness_free_port()


@pytest.fixture
def start_node(profile: str) -> Iterator[Callable[..., NodeServer]]:
    """Start extra fake nodes (e.g. on a fixed port, to bring an 'unreachable' RPC up later)."""
    started: list[NodeServer] = []

    def start(port: int = 0, node: FakeNode | None = None) -> NodeServer:
        ns, prefix = PROFILES[profile]
        server = NodeServer(node or FakeNode(namespace=ns, prefix=prefix), port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def sample(exporter: Exporter, name: str, **labels: str) -> float | None:
    return exporter.registry.get_sample_value(name, labels)


@pytest.fixture
def value() -> Callable[..., float | None]:
    """value(exporter, metric, **labels): the exposed sample, None if absent."""
    return sample
