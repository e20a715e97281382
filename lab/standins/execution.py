"""Stand-in for the execution clients gzond (go-zond v0.2.2) and gqrl (go-qrl v0.3.0).

Emulates what the project's units, health checks and monitoring touch: the flag set, the datadir LOCK,
``init <genesis>``, JSON-RPC (``<ns>_blockNumber``, ``<ns>_syncing``, ``<ns>_chainId``, ``net_*``,
``web3_clientVersion``, and ``<ns>_call``/``<ns>_getBalance``/``<ns>_getLogs`` for the pool contracts of
pool.py) with vhost filtering, the JWT-authenticated Engine API port, P2P listeners and the
metrics endpoint with the real metric names. It does not execute transactions or hold a real chain: the
head is the chain clock's slot (one block per slot) once the node is "synced".
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import chain, cli, jwtauth, netio, pool, runtime
from .flagsets import flags_for

VERSIONS = {"gzond": "0.2.2", "gqrl": "0.3.0"}
NAMESPACE = {"gzond": "zond", "gqrl": "qrl"}
HOME_DIR = {"gzond": ".zond", "gqrl": ".qrl"}
TESTNET_CHAIN_ID = 32382
DEV_CHAIN_ID = 1337
ADDRESS_PREFIX = {"gzond": "Z", "gqrl": "Q"}


class RpcFailure(Exception):
    """A JSON-RPC error answer (code, message), as the real client would give it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


ENGINE_METHODS = [
    "engine_exchangeCapabilities",
    "engine_forkchoiceUpdatedV1",
    "engine_forkchoiceUpdatedV2",
    "engine_forkchoiceUpdatedV3",
]


@dataclass
class Node:
    """Mutable state of one execution node."""

    client: str
    clock: chain.Clock
    chain_id: int
    peers: int
    dev: bool
    state_file: Path | None
    jwt_secret: bytes
    http_api: set[str]
    http_vhosts: list[str]
    auth_vhosts: list[str]
    sync_seconds: float
    head: int = 0
    first_fcu: float | None = None
    pool: pool.PoolContracts | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    warn: runtime.RateLimitedLog = field(default_factory=runtime.RateLimitedLog)

    @property
    def ns(self) -> str:
        return NAMESPACE[self.client]

    @property
    def version(self) -> str:
        return runtime.with_release(f"{VERSIONS[self.client]}-stable-qpstandin")

    def synced(self) -> bool:
        """Post-merge rule: no sync without a consensus client driving forkchoice (except --dev)."""
        if self.dev:
            return True
        return self.first_fcu is not None and time.monotonic() - self.first_fcu >= self.sync_seconds

    def tick(self) -> None:
        """Advance the head to the clock slot while synced; persist it so a restart resumes from it.

        Persisted before it is published: a head that RPC has reported is always on disk (a reader that saw the
        new head and then read the state file found the old one, or none, under load).
        """
        if not self.synced():
            return
        slot = self.clock.current_slot()
        with self.lock:
            if slot == self.head:
                return
            if self.state_file is not None:
                body = {"head": slot, "chain_id": self.chain_id, "updated": int(time.time())}
                runtime.atomic_write(self.state_file, json.dumps(body).encode())
            self.head = slot

    # ---- JSON-RPC -------------------------------------------------------------------------------
    def call(self, method: str, params: Any, allowed: set[str]) -> Any:
        """Execute one RPC method; raise LookupError for unknown or not-enabled methods."""
        ns = method.split("_", 1)[0]
        if ns not in allowed:
            raise LookupError(method)
        head = self.head
        if method == f"{self.ns}_blockNumber":
            return hex(head)
        if method == f"{self.ns}_chainId":
            return hex(self.chain_id)
        if method == f"{self.ns}_syncing":
            if self.synced():
                return False
            return {"startingBlock": hex(head), "currentBlock": hex(head),
                    "highestBlock": hex(max(head, self.clock.current_slot()))}
        if method in (f"{self.ns}_call", f"{self.ns}_getBalance", f"{self.ns}_getLogs"):
            return self._state_call(method.split("_", 1)[1], params, head)
        if method == "net_peerCount":
            return hex(self.peers)
        if method == "net_version":
            return str(self.chain_id)
        if method == "net_listening":
            return True
        if method == "web3_clientVersion":
            return f"{self.client.capitalize()}/v{self.version}/linux-amd64/python3"
        if method == "engine_exchangeCapabilities":
            return list(ENGINE_METHODS)
        if method.startswith("engine_forkchoiceUpdatedV") and method in ENGINE_METHODS:
            if self.first_fcu is None:
                self.first_fcu = time.monotonic()
                runtime.log(self.client, "info", "Consensus client connected, starting sync")
            status = "VALID" if self.synced() else "SYNCING"
            latest = "0x" + head.to_bytes(32, "big").hex() if status == "VALID" else None
            return {"payloadStatus": {"status": status, "latestValidHash": latest, "validationError": None},
                    "payloadId": None}
        raise LookupError(method)

    # ---- pool contracts (pool.py) ----------------------------------------------------------------
    def _address(self, value: Any) -> bytes:
        prefix = ADDRESS_PREFIX[self.client]
        if not (isinstance(value, str) and value.startswith(prefix) and len(value) == 41):
            raise RpcFailure(-32602, f"invalid argument: address must be {prefix} + 40 hex digits")
        try:
            return bytes.fromhex(value[1:])
        except ValueError:
            raise RpcFailure(-32602, "invalid argument: address must be hex") from None

    @staticmethod
    def _block(value: Any, head: int) -> int:
        if value in (None, "latest", "safe", "finalized", "pending"):
            return head
        if value == "earliest":
            return 0
        if not (isinstance(value, str) and value.startswith("0x")):
            raise RpcFailure(-32602, f"invalid argument: block {value!r}")
        block = int(value, 16)
        if block > head:
            raise RpcFailure(-32000, "header not found")
        return block

    def _state_call(self, name: str, params: Any, head: int) -> Any:
        if not isinstance(params, list) or not params:
            raise RpcFailure(-32602, "missing value for required argument 0")
        if name == "getBalance":
            address = self._address(params[0])
            block = self._block(params[1] if len(params) > 1 else "latest", head)
            return hex(self.pool.balance(address, block) if self.pool else 0)
        if name == "call":
            tx = params[0] if isinstance(params[0], dict) else {}
            to = self._address(tx.get("to"))
            data_hex = tx.get("data") or tx.get("input") or "0x"
            block = self._block(params[1] if len(params) > 1 else "latest", head)
            try:
                ret = self.pool.call(to, bytes.fromhex(str(data_hex)[2:]), block) if self.pool else None
            except pool.Revert:
                raise RpcFailure(-32000, "execution reverted") from None
            except pool.NotModelled as exc:
                raise RpcFailure(-32603, f"stand-in: {exc} is not modelled") from None
            return "0x" + (ret or b"").hex()
        flt = params[0] if isinstance(params[0], dict) else {}
        lo = self._block(flt.get("fromBlock", "latest"), head)
        hi = self._block(flt.get("toBlock", "latest"), head)
        addresses = flt.get("address")
        wanted = {self._address(a) for a in ([addresses] if isinstance(addresses, str) else addresses or [])}
        topics = flt.get("topics") or []
        first = topics[0] if topics else None
        topic0 = {first} if isinstance(first, str) else set(first or [])
        out = []
        for entry in (self.pool.logs(lo, hi) if self.pool else []):
            t0 = "0x" + entry["topics"][0].hex()
            if (wanted and entry["address"] not in wanted) or (topic0 and t0 not in topic0):
                continue
            block, index = entry["block"], entry["index"]
            out.append({
                "address": ADDRESS_PREFIX[self.client] + entry["address"].hex(),
                "topics": ["0x" + t.hex() for t in entry["topics"]],
                "data": "0x" + entry["data"].hex(),
                "blockNumber": hex(block),
                "blockHash": "0x" + pool.hashlib.sha256(f"block-{block}".encode()).hexdigest(),
                "transactionHash": "0x" + pool.hashlib.sha256(f"tx-{block}-{index}".encode()).hexdigest(),
                "transactionIndex": hex(index),
                "logIndex": hex(index),
                "removed": False,
            })
        return out

    def rpc(self, body: bytes, allowed: set[str]) -> netio.Response:
        """JSON-RPC 2.0 over HTTP, single or batch."""
        try:
            payload = json.loads(body)
        except ValueError:
            return netio.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        batch = isinstance(payload, list)
        answers = [self._one(item, allowed) for item in (payload if batch else [payload])]
        return netio.json_response(answers if batch else answers[0])

    def _one(self, item: Any, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
        method = item["method"]
        try:
            result = self.call(method, item.get("params", []), allowed)
        except LookupError:
            return {"jsonrpc": "2.0", "id": item.get("id"),
                    "error": {"code": -32601, "message": f"the method {method} does not exist/is not available"}}
        except RpcFailure as exc:
            return {"jsonrpc": "2.0", "id": item.get("id"), "error": {"code": exc.code, "message": exc.message}}
        return {"jsonrpc": "2.0", "id": item.get("id"), "result": result}

    # ---- metrics ----------------------------------------------------------------------------------
    def metrics(self) -> netio.Response:
        head = self.head
        spe = self.clock.slots_per_epoch
        g = "gauge"
        return netio.render_metrics([
            netio.Metric("chain_head_block", g, "chain_head_block", [({}, head)]),
            netio.Metric("chain_head_header", g, "chain_head_header", [({}, head)]),
            netio.Metric("chain_head_finalized", g, "chain_head_finalized", [({}, max(0, head - 2 * spe))]),
            netio.Metric("chain_head_safe", g, "chain_head_safe", [({}, max(0, head - spe))]),
            netio.Metric("p2p_peers", g, "p2p_peers", [({}, self.peers)]),
            netio.Metric("txpool_pending", g, "txpool_pending", [({}, 0)]),
            netio.Metric("txpool_queued", g, "txpool_queued", [({}, 0)]),
            netio.Metric(f"{self.client}_info", g, f"{self.client}_info", [({"version": self.version}, 1)]),
        ])


def _host_allowed(headers: Any, vhosts: list[str]) -> bool:
    """go-zond's vhost filter: IP literals always pass, names must be listed (or ``*``)."""
    host = (headers.get("Host") or "").strip()
    if not host:
        return True  # go-zond lets requests without a Host header through
    try:
        name = netio.split_hostport(host, 0)[0]
    except ValueError:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    lowered = [v.strip().lower() for v in vhosts]
    return "*" in lowered or name.lower() in lowered


def _rpc_handler(node: Node, allowed: set[str], vhosts: list[str], auth: bool,
                 prefix: str) -> Callable[[netio.Request], netio.Response]:
    def handle(req: netio.Request) -> netio.Response:
        if not _host_allowed(req.headers, vhosts):
            return netio.Response(403, b"invalid host specified\n", "text/plain")
        if req.path.rstrip("/") != prefix.rstrip("/"):
            return netio.Response(404, b"404 page not found\n", "text/plain")
        if auth:
            token = jwtauth.bearer(req.headers)
            reason = "missing token" if token is None else jwtauth.check_token(token, node.jwt_secret)
            if reason is not None:
                node.warn(node.client, "warn", "Engine API request rejected", reason=reason)
                return netio.Response(401, f"{reason}\n".encode(), "text/plain")
        if req.method != "POST":
            return netio.Response(405, b"method not allowed\n", "text/plain")
        return node.rpc(req.body, allowed)

    return handle


def _split_list(value: str | None, default: str) -> list[str]:
    return [part.strip() for part in (value if value is not None else default).split(",") if part.strip()]


def _usage(client: str) -> str:
    names = " ".join(f"--{name}" for name in sorted(flags_for(client)))
    return f"{client} (QuantaPool lab stand-in) [flags] | init <genesis.json> | version\nflags: {names}"


def _datadir(args: cli.Parsed, client: str) -> Path:
    return Path(args.get("datadir") or str(Path.home() / HOME_DIR[client])).expanduser()


def _cmd_init(args: cli.Parsed, client: str) -> int:
    if len(args.positional) != 2:
        return cli.usage_exit("need genesis.json file as the only argument")
    genesis_path = Path(args.positional[1])
    try:
        genesis = json.loads(genesis_path.read_text())
    except OSError as exc:
        return cli.usage_exit(f"Fatal: Failed to read genesis file {genesis_path}: {exc.strerror}")
    except ValueError as exc:
        return cli.usage_exit(f"Fatal: invalid genesis file {genesis_path}: {exc}")
    if not isinstance(genesis, dict) or not isinstance(genesis.get("config", {}), dict):
        return cli.usage_exit(f"Fatal: invalid genesis file {genesis_path}: expected a JSON object with 'config'")
    chain_id = genesis.get("config", {}).get("chainId", TESTNET_CHAIN_ID)
    if not isinstance(chain_id, int) or chain_id <= 0:
        return cli.usage_exit(f"Fatal: invalid genesis file {genesis_path}: config.chainId must be a positive int")
    datadir = runtime.ensure_dir(_datadir(args, client))
    try:
        lock_fd = runtime.flock_exclusive(datadir / "LOCK", timeout=0)
    except runtime.LockBusy:
        return cli.usage_exit("Fatal: Failed to create the protocol stack: datadir already used by another process")
    try:
        inst = runtime.ensure_dir(datadir / client)
        runtime.atomic_write(inst / "genesis.json", json.dumps(genesis, indent=1).encode())
        state = runtime.read_json(inst / "standin-state.json") or {}
        state.update({"chain_id": chain_id, "head": int(state.get("head", 0))})
        runtime.atomic_write(inst / "standin-state.json", json.dumps(state).encode())
    finally:
        runtime.release_lock(lock_fd)
    runtime.log(client, "info", "Successfully wrote genesis state", database="chaindata", chain_id=chain_id)
    return 0


def _run(args: cli.Parsed, client: str) -> int:
    for api_flag in ("http.api", "ws.api"):
        if "engine" in _split_list(args.get(api_flag), ""):
            return cli.usage_exit(
                f"refusing to expose the engine API on --{api_flag}: the Engine API belongs on the "
                "JWT-authenticated --authrpc port only (stand-in safety check)")
    try:
        clock = chain.Clock.from_env()
        sync_seconds = chain.sync_seconds_from_env()
        pool_contracts = pool.PoolContracts.from_env({pool.ENV: chain.env(pool.ENV)})
        maxpeers = args.get_int("maxpeers", 50)
        peers = 0 if args.flag("dev") else chain.peers_from_env(maxpeers)
    except (chain.ConfigError, cli.UsageError, ValueError) as exc:
        return cli.usage_exit(str(exc))

    runtime.install_signal_handlers(client)
    dev_in_memory = args.flag("dev") and not args.has("datadir")
    datadir = _datadir(args, client)
    lock_fd = None
    state_file = None
    state: dict[str, Any] = {}
    if not dev_in_memory:
        runtime.ensure_dir(datadir)
        try:
            lock_fd = runtime.flock_exclusive(datadir / "LOCK", timeout=0)
        except runtime.LockBusy:
            return cli.usage_exit(
                "Fatal: Failed to create the protocol stack: datadir already used by another process")
        inst = runtime.ensure_dir(datadir / client)
        state_file = inst / "standin-state.json"
        state = runtime.read_json(state_file) or {}

    jwt_path = Path(args.get("authrpc.jwtsecret") or str(datadir / client / "jwtsecret"))
    try:
        secret = jwtauth.load_or_create_secret(jwt_path)
    except (jwtauth.JwtSecretError, OSError) as exc:
        runtime.release_lock(lock_fd)
        return cli.usage_exit(f"Fatal: {exc}")

    if args.flag("dev"):
        chain_id = DEV_CHAIN_ID
    elif args.flag("testnet"):
        chain_id = TESTNET_CHAIN_ID
    else:
        chain_id = int(state.get("chain_id", TESTNET_CHAIN_ID))
    ns = NAMESPACE[client]
    node = Node(
        client=client, clock=clock, chain_id=chain_id, peers=peers, dev=args.flag("dev"),
        state_file=state_file, jwt_secret=secret,
        http_api=set(_split_list(args.get("http.api"), f"net,web3,{ns}")),
        http_vhosts=_split_list(args.get("http.vhosts"), "localhost"),
        auth_vhosts=_split_list(args.get("authrpc.vhosts"), "localhost"),
        sync_seconds=sync_seconds, head=int(state.get("head", 0)), pool=pool_contracts,
    )
    servers = []
    try:
        servers.append(netio.start_http(
            args.get("authrpc.addr", "localhost") or "localhost", args.get_int("authrpc.port", 8551),
            _rpc_handler(node, {ns, "engine"}, node.auth_vhosts, True, "/"), f"{client}/authrpc"))
        if args.flag("http"):
            servers.append(netio.start_http(
                args.get("http.addr", "localhost") or "localhost", args.get_int("http.port", 8545),
                _rpc_handler(node, node.http_api, node.http_vhosts, False, args.get("http.rpcprefix", "/") or "/"),
                f"{client}/http"))
        if args.flag("metrics") and args.get("metrics.addr"):
            metrics_addr = args.get("metrics.addr") or "127.0.0.1"

            def metrics_handler(req: netio.Request) -> netio.Response:
                if req.path == "/debug/metrics/prometheus":
                    return node.metrics()
                return netio.Response(404, b"404 page not found\n", "text/plain")

            servers.append(netio.start_http(metrics_addr, args.get_int("metrics.port", 6060), metrics_handler,
                                            f"{client}/metrics"))
        p2p_host = chain.p2p_bind_from_env()
        port = args.get_int("port", 30303)
        servers.append(netio.start_tcp_listener(p2p_host, port, f"{client}/p2p"))
        if not args.flag("nodiscover"):
            servers.append(netio.start_udp_listener(p2p_host, args.get_int("discovery.port", port),
                                                    f"{client}/discovery"))
    except (netio.BindError, cli.UsageError) as exc:
        netio.stop_servers(servers)
        runtime.release_lock(lock_fd)
        return cli.usage_exit(f"Fatal: {exc}")
    if args.flag("ws"):
        runtime.log(client, "warn", "WebSocket RPC is not emulated by the stand-in; ignoring --ws")

    runtime.log(client, "info", "Started stand-in execution client", version=node.version, chain_id=chain_id,
                datadir="<memory>" if dev_in_memory else str(datadir))
    step = min(0.5, clock.slot_seconds / 4)
    while not runtime.wait_stop(step):
        node.tick()
    netio.stop_servers(servers)
    runtime.release_lock(lock_fd)
    runtime.log(client, "info", "Stopped")
    return 0


def main(argv: list[str], client: str) -> int:
    """Entry point of the gzond/gqrl stand-in; returns the process exit code."""
    if client not in VERSIONS:
        raise ValueError(f"unknown execution client {client!r}")
    try:
        args = cli.parse(argv, flags_for(client))
    except cli.UsageError as exc:
        return cli.usage_exit(str(exc))
    if args.help:
        print(_usage(client))
        return 0
    if args.version or args.positional[:1] == ["version"]:
        print(f"{client.capitalize()}\nVersion: {runtime.with_release(VERSIONS[client] + '-stable-qpstandin')}")
        return 0
    if not args.positional:
        return _run(args, client)
    if args.positional[0] == "init":
        return _cmd_init(args, client)
    return cli.usage_exit(f'invalid command: "{args.positional[0]}"')
