"""Hetzner Cloud API access for qpool: client construction, server discovery by label, labelling.

Why a module of its own: failover must work from any operator machine with only ``HCLOUD_FENCING_TOKEN``,
so discovery and labelling go straight to the API (the lab points the same calls at a local fake
through ``QPOOL_HCLOUD_ENDPOINT``). Retries are ours, bounded and driven by an injectable ``sleep``,
so a safety-critical caller knows exactly how long it may wait and tests need no real time.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import hcloud
import requests
from hcloud import APIException
from hcloud.servers import BoundServer, Server

from qpool.errors import QpoolError

log = logging.getLogger("qpool.hetzner")

#: qpool's own token (fencing, discovery, labels): a token of the stack's Hetzner project made for qpool,
#: never the provider's. Why separate: the provider's token lives in the stack config (`hcloud:token`) and in
#: deploy tooling; the fencing token sits on operator machines. Each can be revoked alone (docs/operations.md).
TOKEN_ENV = "HCLOUD_FENCING_TOKEN"  # noqa: S105 -- the variable name, not a secret
#: The hcloud provider's / CLI's ambient variable: qpool never reads it.
PROVIDER_TOKEN_ENV = "HCLOUD_TOKEN"  # noqa: S105 -- the variable name, not a secret
ENDPOINT_ENV = "QPOOL_HCLOUD_ENDPOINT"
DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
# (connect, read) seconds: a hung API must fail a request, never hang a failover.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)

# Hetzner error codes worth retrying: rate limiting, a busy resource and server-side trouble.
TRANSIENT_CODES = frozenset({
    "rate_limit_exceeded",
    "locked",
    "conflict",
    "server_error",
    "service_error",
    "unavailable",
    "maintenance",
    "timeout",
    "bad_gateway",
})

_HINTS = {
    "unauthorized": f"check that {TOKEN_ENV} is a valid token for this project",
    "forbidden": "the token lacks permission (read-only?): use a read-write token for this project",
    "token_readonly": "the token is read-only: use a read-write token for this project",
    "not_found": f"check the server id/name and that {TOKEN_ENV} belongs to the right project",
    "invalid_input": "the request was rejected as invalid; check the labels/ids passed",
}

# Hetzner label rules (key with optional DNS prefix; value may be empty): at most 63 characters
# of alphanumerics, '-', '_', '.', starting and ending alphanumeric.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_LABEL_KEY_RE = re.compile(rf"^(?:[a-z0-9](?:[a-z0-9.-]{{0,251}}[a-z0-9])?/)?{_NAME}$")
_LABEL_VALUE_RE = re.compile(rf"^(?:{_NAME})?$")

T = TypeVar("T")


class HetznerError(QpoolError):
    """A Hetzner API call failed or cannot be made; ``code`` is the API error code when there is one."""

    def __init__(self, message: str, *, code: str | int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


@dataclass(frozen=True)
class ServerInfo:
    """What qpool needs to know about a server, detached from the client (safe to log and keep)."""

    id: int
    name: str
    status: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    public_ipv4: str | None = None
    private_ips: tuple[str, ...] = ()

    @classmethod
    def from_server(cls, server: Server | BoundServer) -> ServerInfo:
        public_net = server.public_net
        ipv4 = public_net.ipv4.ip if public_net is not None and public_net.ipv4 is not None else None
        return cls(
            id=int(server.id),
            name=str(server.name),
            status=str(server.status),
            labels=dict(server.labels or {}),
            public_ipv4=ipv4,
            private_ips=tuple(net.ip for net in (server.private_net or [])),
        )


def make_client(
    token: str | None = None,
    endpoint: str | None = None,
    *,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
) -> hcloud.Client:
    """Build an ``hcloud.Client`` whose only retries are qpool's own.

    The library's built-in retry sleeps with real, jittered time (up to minutes) and ignores
    connection errors; we switch it off so :func:`call_with_retry` is the single, bounded,
    testable retry policy. Token/endpoint default to ``HCLOUD_FENCING_TOKEN``/``QPOOL_HCLOUD_ENDPOINT``;
    ``HCLOUD_TOKEN`` (the provider's) is never used, and a missing fencing token says so.
    """
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if not token or not token.strip():
        ignored = (f" ({PROVIDER_TOKEN_ENV}, the provider's token, is never used by qpool)"
                   if os.environ.get(PROVIDER_TOKEN_ENV) else "")
        raise HetznerError(
            f"no Hetzner API token: export {TOKEN_ENV}=<read-write token of this stack's project, made for "
            f"qpool> and retry{ignored}"
        )
    endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
    client = hcloud.Client(
        token=token.strip(),
        api_endpoint=endpoint.rstrip("/"),
        application_name="qpool",
        timeout=timeout,
    )
    base = getattr(client, "_client", None)
    if base is not None and hasattr(base, "_retry_max_retries"):
        base._retry_max_retries = 0
    log.debug("Hetzner API client for %s", endpoint)
    return client


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry may cure: rate limits, busy resources, 5xx, network trouble."""
    if isinstance(exc, APIException):
        if isinstance(exc.code, int):
            return exc.code >= 500 or exc.code == 429
        return exc.code in TRANSIENT_CODES
    return isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout)


def error_code(exc: BaseException) -> str:
    """A short, token-free name for the failure (API code, HTTP status or exception type)."""
    if isinstance(exc, APIException):
        return str(exc.code)
    return type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """One line for an operator: the API code, its message and what to do about it."""
    if isinstance(exc, APIException):
        hint = _HINTS.get(str(exc.code))
        text = f"{exc.code}: {exc.message}"
        return f"{text} ({hint})" if hint else text
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def backoff_delays(attempts: int, base: float, cap: float) -> list[float]:
    """Delays between ``attempts`` tries: exponential from ``base``, truncated at ``cap``."""
    return [min(cap, base * 2**i) for i in range(max(0, attempts - 1))]


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = 6,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    clock: Callable[[], float] | None = None,
    deadline: float | None = None,
) -> T:
    """Call ``fn``; retry transient failures with bounded exponential backoff.

    Non-transient API errors raise :class:`HetznerError` at once. ``what`` names the call and the
    server for the message. With ``clock``/``deadline`` no retry is started that would sleep past
    the deadline, so callers' timeouts hold even while the API misbehaves.
    """
    delays = backoff_delays(attempts, base_delay, max_delay)
    for attempt in range(attempts):
        try:
            return fn()
        except (APIException, requests.exceptions.RequestException) as exc:
            if not is_transient(exc):
                raise HetznerError(
                    f"{what}: Hetzner API error {describe_error(exc)}", code=error_code(exc)
                ) from exc
            out_of_time = (
                clock is not None and deadline is not None
                and attempt < len(delays) and clock() + delays[attempt] > deadline
            )
            if attempt >= len(delays) or out_of_time:
                raise HetznerError(
                    f"{what}: Hetzner API still failing after {attempt + 1} attempts "
                    f"({describe_error(exc)}); check the network and https://status.hetzner.com, then retry",
                    code=error_code(exc),
                    transient=True,
                ) from exc
            log.warning(
                "%s: transient Hetzner API error %s (attempt %d/%d), retrying in %.1fs",
                what, error_code(exc), attempt + 1, attempts, delays[attempt],
            )
            sleep(delays[attempt])
    raise AssertionError("unreachable")  # pragma: no cover


def _check_label_value(name: str, value: str) -> None:
    if not _LABEL_VALUE_RE.match(value) or not value:
        raise HetznerError(
            f"invalid label value {value!r} for {name}: use 1-63 letters, digits, '-', '_' or '.'"
        )


def label_selector(**labels: str | None) -> str:
    """``k=v,...`` for the given labels (``None`` values skipped), validated so no term can inject."""
    terms = []
    for key, value in labels.items():
        if value is None:
            continue
        _check_label_value(key, value)
        terms.append(f"{key}={value}")
    return ",".join(terms)


def find_stack_servers(
    client: hcloud.Client,
    *,
    app: str,
    env: str,
    pair: str | None = None,
    role: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ServerInfo]:
    """All servers labelled for this stack (optionally one pair/role), sorted by name.

    Pagination is followed to the end: missing a key-holder would break the one-signer check.
    """
    selector = label_selector(app=app, env=env, pair=pair, role=role)
    servers = call_with_retry(
        lambda: client.servers.get_all(label_selector=selector),
        what=f"listing servers with labels {selector}",
        sleep=sleep,
    )
    infos = sorted((ServerInfo.from_server(s) for s in servers), key=lambda s: (s.name, s.id))
    log.info("found %d server(s) with labels %s", len(infos), selector)
    return infos


def get_server(
    client: hcloud.Client, server_id: int, *, sleep: Callable[[float], None] = time.sleep
) -> ServerInfo:
    """The server's current state as :class:`ServerInfo`."""
    server = call_with_retry(
        lambda: client.servers.get_by_id(server_id),
        what=f"reading server {server_id}",
        sleep=sleep,
    )
    return ServerInfo.from_server(server)


def validate_labels(labels: Mapping[str, str]) -> None:
    """Reject labels Hetzner would reject, before any request is made."""
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
            raise HetznerError(f"invalid label key {key!r}: use letters, digits, '-', '_' or '.'")
        if not isinstance(value, str) or not _LABEL_VALUE_RE.match(value):
            raise HetznerError(
                f"invalid label value {value!r} for {key}: use up to 63 letters, digits, '-', '_' or '.'"
            )


def set_labels(
    client: hcloud.Client,
    server_id: int,
    updates: Mapping[str, str],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> ServerInfo:
    """Merge ``updates`` into the server's labels and return the server as the API answered.

    The API replaces the whole label set on update, so this reads, merges and writes: labels the
    Pulumi program set (app/env/role/pair) must never be dropped.
    """
    validate_labels(updates)
    current = call_with_retry(
        lambda: client.servers.get_by_id(server_id),
        what=f"reading labels of server {server_id}",
        sleep=sleep,
    )
    merged: dict[str, Any] = {**(current.labels or {}), **updates}
    updated = call_with_retry(
        lambda: client.servers.update(Server(id=server_id), labels=merged),
        what=f"setting labels {sorted(updates)} on server {current.name} ({server_id})",
        sleep=sleep,
    )
    info = ServerInfo.from_server(updated)
    missing = {k: v for k, v in merged.items() if info.labels.get(k) != v}
    if missing:
        raise HetznerError(
            f"server {info.name} ({server_id}): labels {sorted(missing)} not stored by the API; retry"
        )
    log.info("server %s (%d): labels %s set", info.name, server_id, sorted(updates))
    return info
