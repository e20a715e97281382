"""A small, bounded JSON-RPC client for the execution client's ``<ns>_*`` read methods.

Every request has a socket timeout, a whole-request deadline and a bounded number of retries, so a
hung or dead node can only slow a cycle down by a known amount. Proxies from the environment are
ignored on purpose: the exporter talks to a node on the private network or localhost.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from itertools import count
from typing import Any, TypeVar

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_BACKOFF_SECONDS = 5.0
_READ_CHUNK = 64 * 1024

# Called once per attempt with (method, seconds, ok).
Observer = Callable[[str, float, bool], None]
T = TypeVar("T")


def _identity(value: Any) -> Any:
    return value


class RpcError(Exception):
    """Any failure to get a usable answer for one request."""


class RpcTransportError(RpcError):
    """No usable HTTP answer: connection failure, timeout or HTTP error status.

    ``unreachable`` is True when nothing accepted the connection (refused, no route, unknown
    host): every later request in the same cycle would fail the same way.
    """

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class RpcResponseError(RpcError):
    """The node answered, but with a JSON-RPC error or a result of the wrong shape."""


class RpcRevertError(RpcResponseError):
    """A ``<ns>_call`` executed and reverted: a definite answer from the contract, not a node problem.

    go-zond (internal/zondapi/api.go ``Call``) reports a revert with revert data as code 3
    ``execution reverted[: reason]`` and one without data (e.g. a selector the contract does not have,
    no fallback) as the plain ZVM error: code -32000 ``execution reverted``.
    """


REVERT_CODES = (3, -32000)


def _hex_quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) < 3:
        raise RpcResponseError(f"{what}: expected a 0x hex quantity, got {value!r:.80}")
    try:
        return int(value, 16)
    except ValueError:
        raise RpcResponseError(f"{what}: expected a 0x hex quantity, got {value!r:.80}") from None


def _hex_data(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) % 2:
        raise RpcResponseError(f"{what}: expected 0x hex data, got {value!r:.80}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise RpcResponseError(f"{what}: expected 0x hex data, got {value!r:.80}") from None


class RpcClient:
    """JSON-RPC over HTTP POST against one endpoint, methods namespaced per profile (zond_/qrl_)."""

    def __init__(
        self,
        url: str,
        namespace: str,
        timeout: float,
        retries: int,
        backoff: float = 0.5,
        observer: Observer | None = None,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._observer = observer
        self._ids = count(1)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def method(self, name: str) -> str:
        """Full method name for a namespaced call, e.g. ``call`` -> ``qrl_call``."""
        return f"{self.namespace}_{name}"

    def request(self, method: str, params: list[Any], parse: Callable[[Any], T] = _identity) -> T:
        """Send one request with bounded retries on transport failures; return ``parse(result)``.

        ``parse`` raises RpcResponseError for a result of the wrong shape, which then counts as a
        failed attempt. JSON-RPC errors and malformed answers are not retried: the node gave a
        definite answer.
        """
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                result = parse(self._request_once(method, params))
            except RpcTransportError as exc:
                self._observe(method, started, ok=False)
                if attempt == attempts:
                    raise
                log.debug("%s attempt %d/%d failed: %s", method, attempt, attempts, exc)
                time.sleep(min(self.backoff * attempt, MAX_BACKOFF_SECONDS))
                continue
            except RpcError:
                self._observe(method, started, ok=False)
                raise
            self._observe(method, started, ok=True)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, method: str, started: float, ok: bool) -> None:
        if self._observer is not None:
            self._observer(method, time.monotonic() - started, ok)

    def _request_once(self, method: str, params: list[Any]) -> Any:
        request_id = next(self._ids)
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
        req = urllib.request.Request(  # noqa: S310 - scheme is checked to be http(s) in config
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = self._read_bounded(resp, deadline)
        except urllib.error.HTTPError as exc:
            raise RpcTransportError(f"{method}: HTTP {exc.code} from {self.url}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            unreachable = isinstance(reason, OSError) and not isinstance(reason, TimeoutError)
            unreachable &= not isinstance(reason, ConnectionResetError)
            raise RpcTransportError(f"{method}: cannot reach {self.url}: {reason}", unreachable) from None
        try:
            reply = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RpcResponseError(f"{method}: answer is not JSON") from None
        if not isinstance(reply, dict):
            raise RpcResponseError(f"{method}: answer is not a JSON-RPC object")
        if reply.get("error") is not None:
            error = reply["error"]
            if isinstance(error, dict):
                message = str(error.get("message", ""))
                if error.get("code") in REVERT_CODES and message.startswith("execution reverted"):
                    raise RpcRevertError(f"{method}: {message} (JSON-RPC error {error.get('code')})")
                raise RpcResponseError(f"{method}: JSON-RPC error {error.get('code')}: {error.get('message')}")
            raise RpcResponseError(f"{method}: JSON-RPC error {error!r:.200}")
        if reply.get("id") != request_id or "result" not in reply:
            raise RpcResponseError(f"{method}: answer has no result for request id {request_id}")
        return reply["result"]

    def _read_bounded(self, resp: Any, deadline: float) -> bytes:
        """Read the body in chunks so a trickling server cannot exceed the deadline or memory bound."""
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer within {self.timeout}s")
            chunk = resp.read(_READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise RpcResponseError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)

    # -- typed helpers -------------------------------------------------------------------------

    def block_number(self) -> int:
        method = self.method("blockNumber")
        return self.request(method, [], lambda r: _hex_quantity(r, method))

    def call(self, to: str, data: bytes, block: str) -> bytes:
        method = self.method("call")
        params = [{"to": to, "data": "0x" + data.hex()}, block]
        return self.request(method, params, lambda r: _hex_data(r, method))

    def get_balance(self, address: str, block: str) -> int:
        method = self.method("getBalance")
        return self.request(method, [address, block], lambda r: _hex_quantity(r, method))

    def get_logs(self, addresses: list[str], topic0s: list[str], from_block: int, to_block: int) -> list[Any]:
        method = self.method("getLogs")
        flt = {"fromBlock": hex(from_block), "toBlock": hex(to_block), "address": addresses, "topics": [topic0s]}
        return self.request(method, [flt], lambda r: _log_list(r, method))


def _log_list(value: Any, method: str) -> list[Any]:
    if not isinstance(value, list):
        raise RpcResponseError(f"{method}: expected a list of logs, got {type(value).__name__}")
    return value
