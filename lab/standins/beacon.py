"""Stand-in for qrysm ``beacon-chain``.

Emulates the start-up checks (terms of use, JWT secret, DB lock), the Engine API connection to the
execution client with a JWT made from its own ``--jwt-secret`` (so mismatched secrets show up as they do in
production: errors in the log, never synced, health 503), the REST gateway endpoints the project polls, a
gRPC port that accepts connections, P2P listeners and the monitoring endpoint with the real metric names.
There is no consensus: the head follows the shared chain clock while the execution client reports VALID.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import chain, cli, gossip, jwtauth, netio, runtime
from .flagsets import flags_for

NAME = "beacon-chain"
VERSION = "Qrysm/v0.1.0-qpstandin/linux-amd64"
DB_LOCK_MSG = "cannot obtain database lock, database may be in use by another process"
TERMS_MSG = ("could not confirm acceptance of terms of use: running non-interactively, pass "
             "--accept-terms-of-use to accept them")


def _root(*parts: object) -> str:
    return "0x" + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


@dataclass
class Beacon:
    """Mutable state of one beacon node."""

    clock: chain.Clock
    prefix: str
    gvr: str
    peers: int
    endpoint: str
    secret: bytes | None
    state_file: Path
    head_slot: int = 0
    clock_slot_gauge: int = 0
    el_status: str = "offline"  # offline | syncing | valid
    capabilities_done: bool = False
    warn: runtime.RateLimitedLog = field(default_factory=runtime.RateLimitedLog)

    @property
    def synced(self) -> bool:
        return self.el_status == "valid"

    def _engine(self, method: str, params: list[Any]) -> Any:
        headers = {}
        if self.secret is not None:
            headers["Authorization"] = "Bearer " + jwtauth.make_token(self.secret)
        status, body = netio.http_call(self.endpoint, {"jsonrpc": "2.0", "id": 1, "method": method,
                                                       "params": params}, headers, timeout=1.0)
        if status == 401:
            raise PermissionError("401 Unauthorized: the execution client rejected our JWT (check --jwt-secret "
                                  "matches --authrpc.jwtsecret)")
        if status != 200 or not isinstance(body, dict) or "result" not in body:
            raise OSError(f"unexpected engine answer: HTTP {status} {body!r}"[:300])
        return body["result"]

    def poll_engine(self) -> None:
        """One forkchoice update; its outcome decides whether this node counts as synced."""
        before = self.el_status
        try:
            if not self.capabilities_done:
                self._engine("engine_exchangeCapabilities", [["engine_forkchoiceUpdatedV2"]])
                self.capabilities_done = True
            head_hash = "0x" + self.head_slot.to_bytes(32, "big").hex()
            result = self._engine("engine_forkchoiceUpdatedV2", [
                {"headBlockHash": head_hash, "safeBlockHash": head_hash, "finalizedBlockHash": head_hash}, None])
            status = (result or {}).get("payloadStatus", {}).get("status")
            self.el_status = "valid" if status == "VALID" else "syncing"
        except (OSError, PermissionError, ValueError) as exc:
            self.el_status = "offline"
            self.capabilities_done = False
            self.warn(NAME, "error", "Could not connect to execution client endpoint", endpoint=self.endpoint,
                      error=str(exc))
        if self.el_status != before:
            runtime.log(NAME, "info", "Execution client status changed", status=self.el_status)
        if self.synced:
            slot = self.clock.current_slot()
            if slot != self.head_slot:
                self.head_slot = slot
                runtime.atomic_write(self.state_file, json.dumps({"head_slot": slot}).encode())
            self.clock_slot_gauge = slot

    # ---- REST gateway -------------------------------------------------------------------------------
    def rest(self, req: netio.Request) -> netio.Response:
        p = self.prefix
        slot = self.head_slot
        epoch = self.clock.epoch_of(slot)
        if req.path == f"{p}/v1/node/health":
            if self.synced:
                return netio.Response(200, b"")
            if self.el_status == "offline":
                return netio.Response(503, b"")
            override = req.query.get("syncing_status", [""])[0]
            return netio.Response(int(override) if override.isdigit() else 206, b"")
        if req.path == f"{p}/v1/node/syncing":
            distance = max(0, self.clock.current_slot() - slot)
            return netio.json_response({"data": {
                "head_slot": str(slot), "sync_distance": str(0 if self.synced else distance),
                "is_syncing": not self.synced, "is_optimistic": False, "el_offline": self.el_status == "offline"}})
        if req.path == f"{p}/v1/node/version":
            return netio.json_response({"data": {"version": runtime.with_release(VERSION)}})
        if req.path == f"{p}/v1/node/peer_count":
            return netio.json_response({"data": {"disconnected": "0", "connecting": "0",
                                                 "connected": str(self.peers), "disconnecting": "0"}})
        if req.path == f"{p}/v1/beacon/genesis":
            return netio.json_response({"data": {"genesis_time": str(self.clock.genesis_time),
                                                 "genesis_validators_root": self.gvr,
                                                 "genesis_fork_version": "0x20000089"}})
        if req.path == f"{p}/v1/config/spec":
            # The real endpoint returns the whole chain config; the clock is what qpool's epoch gate reads.
            seconds = self.clock.slot_seconds
            return netio.json_response({"data": {
                "SECONDS_PER_SLOT": str(int(seconds)) if float(seconds).is_integer() else str(seconds),
                "SLOTS_PER_EPOCH": str(self.clock.slots_per_epoch)}})
        if req.path == f"{p}/v1/beacon/headers/head":
            return netio.json_response({"execution_optimistic": False, "finalized": False, "data": {
                "root": _root("block", slot), "canonical": True, "header": {"message": {
                    "slot": str(slot), "proposer_index": "0", "parent_root": _root("block", slot - 1),
                    "state_root": _root("state", slot), "body_root": _root("body", slot)},
                    "signature": "0x"}}})
        if req.path == f"{p}/v1/beacon/states/head/finality_checkpoints":
            def cp(e: int) -> dict[str, str]:
                return {"epoch": str(max(0, e)), "root": _root("checkpoint", max(0, e))}
            return netio.json_response({"execution_optimistic": False, "finalized": False, "data": {
                "previous_justified": cp(epoch - 2), "current_justified": cp(epoch - 1),
                "finalized": cp(epoch - 2)}})
        if req.path.startswith(f"{p}/v1/beacon/states/") and req.path.endswith("/validators"):
            state_id = req.path[len(f"{p}/v1/beacon/states/"):-len("/validators")]
            if state_id and "/" not in state_id:
                if req.method != "GET":
                    return netio.Response(405, b"", "text/plain")
                return self.validators(state_id, req)
        if req.path.startswith(f"{p}/v1/validator/liveness/"):
            epoch = req.path[len(f"{p}/v1/validator/liveness/"):]
            if epoch and "/" not in epoch:
                if req.method != "POST":
                    return netio.Response(405, b"", "text/plain")
                return self.liveness(epoch, req.body)
        return netio.json_response({"code": 404, "message": f"unknown endpoint {req.path}"}, 404)

    # ---- validators and liveness (qrysm beacon-chain/rpc/eth/beacon/handlers_validator.go GetValidators,
    # ---- beacon-chain/rpc/eth/validator/handlers.go GetLiveness: same paths, shapes and 400 texts) --------
    def validators(self, state_id: str, req: netio.Request) -> netio.Response:
        """GET .../beacon/states/{state_id}/validators?id=<0x pubkey or index>&id=...: unknown ids are ignored."""
        if state_id not in ("head", "genesis", "finalized", "justified") and not (
                state_id.isdigit() and int(state_id) <= self.head_slot):
            return _error(400, f"Invalid state ID: could not parse state ID {state_id}")
        seen = {v["pubkey"] for v in gossip.seen_votes(self.head_slot)}
        by_index = {gossip.validator_index(k): k for k in sorted(seen)}
        found: list[tuple[int, str]] = []
        for raw in req.query.get("id", []):
            pubkey = _hex_bytes(raw)
            if pubkey is not None:
                if len(pubkey) != gossip.PUBKEY_BYTES:
                    return _error(400, f"Pubkey length is {len(pubkey)} instead of {gossip.PUBKEY_BYTES}")
                key = "0x" + pubkey.hex()
                found.append((gossip.validator_index(key), key))
                continue
            if not raw.isdigit() or not raw.isascii():
                return _error(400, f"Invalid validator index {raw}")
            if int(raw) in by_index:  # the stand-in knows an index's key only once that key has voted
                found.append((int(raw), by_index[int(raw)]))
        if not req.query.get("id"):
            found = sorted(by_index.items())
        statuses = [s.lower() for s in req.query.get("status", [])]
        for status in statuses:
            if status not in _STATUSES:
                return _error(400, f"Invalid status {status}")
        if statuses and not {"active_ongoing", "active"} & set(statuses):
            found = []
        far = str(2**64 - 1)
        return netio.json_response({"execution_optimistic": False, "finalized": state_id in ("genesis", "finalized"),
                                    "data": [{"index": str(ix), "balance": str(VALIDATOR_BALANCE),
                                              "status": "active_ongoing", "validator": {
                                                  "pubkey": key, "withdrawal_credentials": _root("wc", key)[:66],
                                                  "effective_balance": str(VALIDATOR_BALANCE), "slashed": False,
                                                  "activation_eligibility_epoch": "0", "activation_epoch": "0",
                                                  "exit_epoch": far, "withdrawable_epoch": far}}
                                             for ix, key in found]})

    def liveness(self, raw_epoch: str, body: bytes) -> netio.Response:
        """POST .../validator/liveness/{epoch} with ["<index>", ...]: is_live = the key voted for that target
        epoch (as participation flags in the head state); the current, the previous and older epochs."""
        if not raw_epoch.isdigit() or not raw_epoch.isascii():
            return _error(400, f"Epoch is invalid: strconv.ParseUint: parsing {json.dumps(raw_epoch)}: invalid syntax")
        epoch = int(raw_epoch)
        if not body.strip():
            return _error(400, "No data submitted")
        try:
            indices = json.loads(body)
        except ValueError as exc:
            return _error(400, f"Could not decode request body: {exc}")
        if indices is not None and (not isinstance(indices, list) or not all(isinstance(i, str) for i in indices)):
            return _error(400, "Could not decode request body: json: cannot unmarshal into Go value of type "
                               "[]string")
        if not indices:
            return _error(400, "No data submitted")
        wanted: list[int] = []
        for i, raw in enumerate(indices):
            if raw == "":
                return _error(400, f"ValidatorIndices[{i}] is required")
            if not raw.isdigit() or not raw.isascii():
                return _error(400, f"ValidatorIndices[{i}] is invalid: strconv.ParseUint: parsing "
                                   f"{json.dumps(raw)}: invalid syntax")
            wanted.append(int(raw))
        if epoch > self.clock.epoch_of(self.head_slot):
            return _error(400, "Requested epoch cannot be in the future")
        live = {gossip.validator_index(v["pubkey"]) for v in gossip.seen_votes(self.head_slot)
                if v["target_epoch"] == epoch}
        data = []
        for ix in wanted:
            if ix >= gossip.REGISTRY_SIZE:
                return _error(400, f"Validator index {ix} is invalid")
            data.append({"index": str(ix), "is_live": ix in live})
        return netio.json_response({"data": data})

    # ---- monitoring ---------------------------------------------------------------------------------
    def monitoring(self, req: netio.Request) -> netio.Response:
        if req.path == "/healthz":
            if self.el_status == "offline":
                return netio.Response(500, b"*execution.Service: execution client not connected\n", "text/plain")
            return netio.Response(200, b"*node.BeaconNode: OK\n", "text/plain")
        if req.path != "/metrics":
            return netio.Response(404, b"404 page not found\n", "text/plain")
        epoch = self.clock.epoch_of(self.head_slot)
        g = "gauge"
        return netio.render_metrics([
            netio.Metric("beacon_head_slot", g, "Slot of the head block of the beacon chain",
                         [({}, self.head_slot)]),
            netio.Metric("beacon_clock_time_slot", g, "The current slot based on the genesis time and current clock",
                         [({}, self.clock_slot_gauge)]),
            netio.Metric("beacon_finalized_epoch", g, "Last finalized epoch", [({}, max(0, epoch - 2))]),
            netio.Metric("beacon_current_justified_epoch", g, "Current justified epoch",
                         [({}, max(0, epoch - 1))]),
            netio.Metric("p2p_peer_count", g, "The number of peers in a given state.",
                         [({"state": s}, self.peers if s == "Connected" else 0)
                          for s in ("Connected", "Connecting", "Disconnected", "Disconnecting")]),
            netio.Metric("connected_libp2p_peers", g, "Tracks the total number of libp2p peers",
                         [({}, self.peers)]),
        ])


#: Every validator of the stand-in registry is active with this balance (Gwei-style integer).
VALIDATOR_BALANCE = 40_000_000_000_000
#: qrysm's validator.ValidatorStatusFromString names (sub-statuses and the four top-level ones).
_STATUSES = frozenset({"pending_initialized", "pending_queued", "active_ongoing", "active_exiting", "active_slashed",
                       "exited_unslashed", "exited_slashed", "withdrawal_possible", "withdrawal_done", "pending",
                       "active", "exited", "withdrawal"})


def _error(code: int, message: str) -> netio.Response:
    """qrysm's http2.HandleError: {"message": .., "code": ..} with the status code."""
    return netio.json_response({"message": message, "code": code}, code)


def _hex_bytes(raw: str) -> bytes | None:
    """go-zond hexutil.Decode: 0x-prefixed, even length, hex digits; None when it is not such a string."""
    if not raw.startswith(("0x", "0X")):
        return None
    digits = raw[2:]
    if len(digits) % 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        return None
    return bytes.fromhex(digits)


def _fail(msg: str) -> int:
    return cli.usage_exit(msg)


def main(argv: list[str], client: str = NAME) -> int:
    """Entry point of the beacon-chain stand-in; returns the process exit code."""
    try:
        args = cli.parse(argv, flags_for(NAME))
    except cli.UsageError as exc:
        return _fail(str(exc))
    if args.help:
        print(f"{NAME} (QuantaPool lab stand-in) flags: " + " ".join(f"--{n}" for n in sorted(flags_for(NAME))))
        return 0
    if args.version:
        print(runtime.with_release(VERSION))
        return 0
    if args.positional:
        return _fail(f"unexpected argument {args.positional[0]!r}: beacon-chain takes flags only")
    if not args.flag("accept-terms-of-use"):
        return _fail(TERMS_MSG)
    runtime.install_signal_handlers(NAME)
    try:
        clock = chain.Clock.from_env()
        profile = chain.profile_from_env()
        peers = chain.peers_from_env(args.get_int("p2p-max-peers", 45))
        if args.has("chain-id"):
            args.get_int("chain-id", 0)
    except (chain.ConfigError, cli.UsageError) as exc:
        return _fail(str(exc))
    endpoint = args.get("execution-endpoint", "http://localhost:8551") or "http://localhost:8551"
    if not endpoint.startswith("http://"):
        return _fail(f"--execution-endpoint {endpoint!r}: the stand-in only emulates http:// engine endpoints")
    secret = None
    if args.get("jwt-secret"):
        try:
            secret = jwtauth.load_secret(Path(args.get("jwt-secret") or ""))
        except (jwtauth.JwtSecretError, OSError) as exc:
            return _fail(f"could not load JWT secret: {exc}")
    else:
        runtime.log(NAME, "warn", "No --jwt-secret given: Engine API calls will be unauthenticated and rejected")

    datadir = runtime.ensure_dir(Path(args.get("datadir") or str(Path.home() / ".eth2")).expanduser())
    dbdir = runtime.ensure_dir(datadir / "beaconchaindata")
    try:
        lock_fd = runtime.flock_exclusive(dbdir / "beaconchain.db", timeout=1.0)
    except runtime.LockBusy:
        return _fail(DB_LOCK_MSG)
    state_file = dbdir / "standin-state.json"
    if args.flag("clear-db") or args.flag("force-clear-db"):
        runtime.log(NAME, "warn", "Removing beacon database as requested", path=str(dbdir))
        state_file.unlink(missing_ok=True)
    state = runtime.read_json(state_file) or {}
    node = Beacon(clock=clock, prefix=chain.rest_prefix(profile),
                  gvr=chain.genesis_validators_root(clock.genesis_time), peers=peers, endpoint=endpoint,
                  secret=secret, state_file=state_file, head_slot=int(state.get("head_slot", 0)))
    node.clock_slot_gauge = node.head_slot
    servers = []
    try:
        servers.append(netio.start_tcp_listener(args.get("rpc-host", "127.0.0.1") or "127.0.0.1",
                                                args.get_int("rpc-port", 4000), f"{NAME}/grpc"))
        if not args.flag("disable-grpc-gateway"):
            servers.append(netio.start_http(args.get("grpc-gateway-host", "127.0.0.1") or "127.0.0.1",
                                            args.get_int("grpc-gateway-port", 3500), node.rest, f"{NAME}/gateway"))
        if not args.flag("disable-monitoring"):
            servers.append(netio.start_http(args.get("monitoring-host", "127.0.0.1") or "127.0.0.1",
                                            args.get_int("monitoring-port", 8080), node.monitoring,
                                            f"{NAME}/monitoring"))
        p2p_host = args.get("p2p-local-ip") or chain.p2p_bind_from_env()
        servers.append(netio.start_tcp_listener(p2p_host, args.get_int("p2p-tcp-port", 13000), f"{NAME}/p2p"))
        if not args.flag("no-discovery"):
            servers.append(netio.start_udp_listener(p2p_host, args.get_int("p2p-udp-port", 12000),
                                                    f"{NAME}/discovery"))
    except (netio.BindError, cli.UsageError) as exc:
        netio.stop_servers(servers)
        runtime.release_lock(lock_fd)
        return _fail(str(exc))
    runtime.log(NAME, "info", "Started stand-in beacon node", profile=profile, endpoint=endpoint,
                datadir=str(datadir))
    step = max(0.2, min(1.0, clock.slot_seconds / 2))
    while not runtime.STOP.is_set():
        started = time.monotonic()
        node.poll_engine()
        if runtime.wait_stop(step - (time.monotonic() - started)):
            break
    netio.stop_servers(servers)
    runtime.release_lock(lock_fd)
    runtime.log(NAME, "info", "Stopped")
    return 0
