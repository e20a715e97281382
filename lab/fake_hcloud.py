"""A local stand-in for the few Hetzner Cloud API endpoints that qpool's fencing uses.

Why it exists: fencing is the safety-critical step of an unattended failover, so it must be
exercised end to end with the *real* ``hcloud`` client (its URL building, pagination and
deserialisation), against faults we can switch on at will, without a cloud account. In the lab a
server's power can be wired to a real host through :class:`PowerBackend`, so "power off" really
kills it and the reported status is what the host really is.

Only what ``hcloud`` 2.27 calls for listing, getting, labelling and powering servers is served:

- ``GET  /v1/servers`` (``name``, ``label_selector``, ``status``, ``page``, ``per_page``)
- ``GET  /v1/servers/{id}``, ``PUT /v1/servers/{id}`` (name, labels: replaces the label set)
- ``POST /v1/servers/{id}/actions/poweroff|poweron|shutdown``
- ``GET  /v1/actions/{id}`` and ``GET /v1/servers/actions/{id}``

Run it for the lab with ``python -m lab.fake_hcloud --port P --token T --state FILE``: it prints
the endpoint on its first stdout line and serves until SIGTERM. The state file lists the servers
and is rewritten (atomically) on every change, so the lab can read labels and power state::

    {"servers": [{"id": 1, "name": "lab-primary", "labels": {"app": "quantapool", ...},
                  "public_ipv4": "192.0.2.10", "private_ip": "10.0.0.2",
                  "backend": {"type": "command", "power_off": ["machinectl", "terminate", "lab-primary"],
                              "power_on": ["machinectl", "start", "lab-primary"],
                              "status": ["machinectl", "show", "lab-primary"], "timeout": 60}}]}

A server without ``backend`` gets an in-memory power flag (``"running": true|false``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("lab.fake_hcloud")

API_PREFIX = "/v1"
DEFAULT_PER_PAGE = 25  # Hetzner's default page size
MAX_PER_PAGE = 50  # Hetzner's maximum page size
RATE_LIMIT_PER_HOUR = 3600

# Hetzner's label rules: optional DNS-style prefix, name and value of at most 63 characters made of
# alphanumerics, '-', '_' and '.', starting and ending alphanumeric; values may be empty.
_LABEL_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_LABEL_KEY_RE = re.compile(rf"^(?:[a-z0-9](?:[a-z0-9.-]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE_RE = re.compile(rf"^(?:{_LABEL_NAME})?$")


# --------------------------------------------------------------------------------------------
# Power backends
# --------------------------------------------------------------------------------------------


@runtime_checkable
class PowerBackend(Protocol):
    """What the fake needs from a machine: the lab plugs real hosts in through this."""

    def power_off(self) -> None:
        """Cut power now; return only once the machine can no longer run anything."""

    def power_on(self) -> None:
        """Start the machine."""

    def is_running(self) -> bool:
        """True while the machine is powered."""


class InMemoryPower:
    """Default backend: a flag, so tests need no real machine."""

    def __init__(self, running: bool = True) -> None:
        self._running = running
        self._lock = threading.Lock()
        self.power_off_calls = 0
        self.power_on_calls = 0

    def power_off(self) -> None:
        with self._lock:
            self.power_off_calls += 1
            self._running = False

    def power_on(self) -> None:
        with self._lock:
            self.power_on_calls += 1
            self._running = True

    def is_running(self) -> bool:
        with self._lock:
            return self._running


class CommandBackend:
    """Power a lab host through commands (e.g. ``machinectl terminate NAME``), for the CLI mode.

    ``status_cmd`` exiting 0 means the host is running. Commands are argv lists, never a shell.
    """

    def __init__(
        self,
        power_off_cmd: list[str],
        power_on_cmd: list[str],
        status_cmd: list[str],
        timeout: float = 60.0,
    ) -> None:
        self.power_off_cmd = list(power_off_cmd)
        self.power_on_cmd = list(power_on_cmd)
        self.status_cmd = list(status_cmd)
        self.timeout = timeout

    def _run(self, argv: list[str]) -> int:
        return subprocess.run(argv, timeout=self.timeout, capture_output=True, check=False).returncode

    def power_off(self) -> None:
        rc = self._run(self.power_off_cmd)
        if rc != 0 and self.is_running():
            raise RuntimeError(f"power-off command {shlex.join(self.power_off_cmd)} exited {rc}")

    def power_on(self) -> None:
        rc = self._run(self.power_on_cmd)
        if rc != 0:
            raise RuntimeError(f"power-on command {shlex.join(self.power_on_cmd)} exited {rc}")

    def is_running(self) -> bool:
        try:
            return self._run(self.status_cmd) == 0
        except subprocess.TimeoutExpired:
            return True  # unknown must never read as "off"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "command",
            "power_off": self.power_off_cmd,
            "power_on": self.power_on_cmd,
            "status": self.status_cmd,
            "timeout": self.timeout,
        }


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class _Server:
    id: int
    name: str
    labels: dict[str, str]
    public_ipv4: str | None
    private_ip: str | None
    backend: PowerBackend
    created: str
    # fault knobs
    action_latency_polls: int | None = None
    action_latency_seconds: float | None = None
    stuck_status: str | None = None  # reported instead of "off" forever
    off_delay_polls: int = 0  # reports "stopping" for this many GETs after the host is off
    fail_next_action: tuple[str, str] | None = None  # (code, message)
    off_polls_seen: int = 0
    lying_off: bool = False  # reports "off" whatever the power, and power actions never reach the machine


@dataclass
class _Action:
    id: int
    command: str
    server_id: int
    started: str
    latency_polls: int
    ready_at: float
    fail: tuple[str, str] | None
    polls: int = 0
    status: str = "running"
    error: dict[str, str] | None = None
    finished: str | None = None
    worker: threading.Thread | None = None
    worker_error: str | None = None
    worker_done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Fault:
    """An injected failure for the next ``remaining`` requests that match."""

    kind: str  # "error" | "drop" | "delay"
    remaining: int
    path: re.Pattern[str] | None
    method: str | None
    status: int = 500
    code: str = "server_error"
    message: str = ""
    body: str = "json"  # "json" | "html" | "empty"
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(path) is not None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it, for assertions."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    body: Any
    authorized: bool


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def validate_labels(labels: Any) -> dict[str, str]:
    """Reject what Hetzner rejects, so code that passes here is not surprised in production."""
    if not isinstance(labels, dict):
        raise _ApiError(400, "invalid_input", "invalid input in field 'labels'")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
            raise _ApiError(400, "invalid_input", f"invalid label key {key!r}")
        if not isinstance(value, str) or not _LABEL_VALUE_RE.match(value):
            raise _ApiError(400, "invalid_input", f"invalid label value {value!r} for key {key!r}")
    return dict(labels)


# --------------------------------------------------------------------------------------------
# Label selectors
# --------------------------------------------------------------------------------------------


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside an ``in (...)`` list."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^(?P<key>[^\s!=]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)$")


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Evaluate a Hetzner label selector (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``in``, ``notin``)."""
    for term in _split_selector(selector):
        set_match = _SET_RE.match(term)
        if set_match:
            values = {v.strip() for v in set_match["values"].split(",")}
            inside = labels.get(set_match["key"]) in values
            if inside != (set_match["op"] == "in"):
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.split("==" if "==" in term else "=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _validate_selector(selector: str) -> None:
    for term in _split_selector(selector):
        if _SET_RE.match(term):
            continue
        key = re.split(r"!=|==|=", term.lstrip("!"), maxsplit=1)[0].strip()
        if not key or not _LABEL_KEY_RE.match(key):
            raise _ApiError(400, "invalid_input", f"label_selector: invalid term {term!r}")


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeHetzner:
    """In-process fake of the Hetzner Cloud servers/actions API, with fault injection.

    ``start()`` serves it on 127.0.0.1 from a daemon thread and returns the endpoint to give
    ``hcloud.Client(api_endpoint=...)``. All knobs may be changed while it runs.
    """

    def __init__(
        self,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: Path | None = None,
        worker_grace: float = 1.0,
    ) -> None:
        self.token = token
        self.host = host
        self.port = port
        self.state_file = state_file
        # How long an action GET waits for a finished-but-not-yet-returned backend call, so the
        # in-memory backend gives deterministic poll counts while a slow real host still reads
        # as "running".
        self.worker_grace = worker_grace
        self._lock = threading.RLock()
        self._servers: dict[int, _Server] = {}
        self._actions: dict[int, _Action] = {}
        self._faults: list[_Fault] = []
        self._log: list[RequestRecord] = []
        self._next_server_id = 4_200_001
        self._next_action_id = 7_700_001
        self._default_latency_polls = 0
        self._default_latency_seconds = 0.0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._requests_served = 0
        # Open client connections and requests being served, so stop() leaves nothing running.
        self._connections: set[socket.socket] = set()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on ``host:port`` (0 = any free port) and return the API endpoint URL."""
        if self._httpd is not None:
            return self.endpoint
        self._stopping.clear()
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"fake-hcloud-{self.port}",
        )
        self._thread.start()
        log.info("fake Hetzner API listening on %s", self.endpoint)
        return self.endpoint

    def stop(self) -> None:
        """Stop serving, drop open connections and wait (bounded) for requests and power actions."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # keep-alive connections would otherwise outlive the server
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            workers = [a.worker for a in self._actions.values() if a.worker is not None]
        for worker in workers:
            worker.join(timeout=5)

    def __enter__(self) -> FakeHetzner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}{API_PREFIX}"

    # ---- servers ---------------------------------------------------------------------------

    def add_server(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        public_ipv4: str | None = None,
        private_ip: str | None = None,
        backend: PowerBackend | None = None,
        *,
        server_id: int | None = None,
    ) -> int:
        """Register a server and return its id; its power state comes from ``backend``."""
        if backend is not None and not isinstance(backend, PowerBackend):
            raise TypeError(f"backend for {name!r} lacks power_off/power_on/is_running")
        with self._lock:
            if any(s.name == name for s in self._servers.values()):
                raise ValueError(f"server name {name!r} already exists")
            validated = validate_labels(dict(labels or {}))
            sid = server_id if server_id is not None else self._next_server_id
            if sid in self._servers:
                raise ValueError(f"server id {sid} already exists")
            self._next_server_id = max(self._next_server_id, sid + 1)
            self._servers[sid] = _Server(
                id=sid,
                name=name,
                labels=validated,
                public_ipv4=public_ipv4,
                private_ip=private_ip,
                backend=backend if backend is not None else InMemoryPower(),
                created=_now_iso(),
            )
            self._save_state()
            return sid

    def backend(self, server_id: int) -> PowerBackend:
        with self._lock:
            return self._get(server_id).backend

    def server_status(self, server_id: int) -> str:
        """The status the API reports now (without counting as a poll)."""
        with self._lock:
            return self._status(self._get(server_id), count_poll=False)

    def server_labels(self, server_id: int) -> dict[str, str]:
        with self._lock:
            return dict(self._get(server_id).labels)

    def actions(self, server_id: int | None = None) -> list[dict[str, Any]]:
        """Snapshot of the actions created so far (optionally for one server)."""
        with self._lock:
            return [
                self._action_json(a) for a in self._actions.values()
                if server_id is None or a.server_id == server_id
            ]

    # ---- fault knobs -----------------------------------------------------------------------

    def set_action_latency(
        self, server_id: int | None = None, *, polls: int = 0, seconds: float = 0.0
    ) -> None:
        """Keep new actions ``running`` for ``polls`` GETs and at least ``seconds`` (global if no id)."""
        with self._lock:
            if server_id is None:
                self._default_latency_polls = polls
                self._default_latency_seconds = seconds
            else:
                server = self._get(server_id)
                server.action_latency_polls = polls
                server.action_latency_seconds = seconds

    def fail_next_action(
        self, server_id: int, *, code: str = "action_failed", message: str = "Action failed"
    ) -> None:
        """The next power action on this server ends in ``error`` and does not touch the host."""
        with self._lock:
            self._get(server_id).fail_next_action = (code, message)

    def never_off(self, server_id: int, status: str = "stopping") -> None:
        """Report ``status`` instead of ``off`` for this server forever (power actions still succeed)."""
        with self._lock:
            self._get(server_id).stuck_status = status

    def lie_off(self, server_id: int) -> None:
        """A wrong API: report ``off`` for this server whatever its real power, and let power actions
        "succeed" without reaching the machine (issue 12: the fence must not rest on this one reading)."""
        with self._lock:
            self._get(server_id).lying_off = True

    def set_off_delay(self, server_id: int, polls: int) -> None:
        """After the host is off, report ``stopping`` for this many more server GETs."""
        with self._lock:
            server = self._get(server_id)
            server.off_delay_polls = polls
            server.off_polls_seen = 0

    def inject_error(
        self,
        status: int,
        code: str,
        *,
        message: str | None = None,
        count: int = 1,
        path: str | None = None,
        method: str | None = None,
        server_id: int | None = None,
        body: str = "json",
    ) -> None:
        """Answer the next ``count`` matching requests with an error instead of serving them.

        ``path`` is a regex searched in the request path (e.g. ``/actions/poweroff$``);
        ``server_id`` restricts it to that server's URLs; ``body`` "html"/"empty" mimics a proxy error.
        """
        self._add_fault(_Fault(
            kind="error", remaining=count, path=self._fault_path(path, server_id),
            method=method, status=status, code=code,
            message=message or f"injected {code}", body=body,
        ))

    def rate_limit(self, count: int = 1, *, path: str | None = None, method: str | None = None) -> None:
        """Answer the next ``count`` matching requests with 429 ``rate_limit_exceeded``."""
        self.inject_error(
            429, "rate_limit_exceeded", message="limit of 3600 requests per hour reached",
            count=count, path=path, method=method,
        )

    def drop_connections(
        self, count: int = 1, *, path: str | None = None, method: str | None = None,
        server_id: int | None = None,
    ) -> None:
        """Close the connection without answering the next ``count`` matching requests."""
        self._add_fault(_Fault(
            kind="drop", remaining=count, path=self._fault_path(path, server_id), method=method,
        ))

    def delay_responses(
        self, seconds: float, count: int = 1, *, path: str | None = None, method: str | None = None,
    ) -> None:
        """Hold the next ``count`` matching requests for ``seconds`` before serving them (timeouts)."""
        self._add_fault(_Fault(
            kind="delay", remaining=count, path=self._fault_path(path, None), method=method,
            seconds=seconds,
        ))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._default_latency_polls = 0
            self._default_latency_seconds = 0.0
            for server in self._servers.values():
                server.action_latency_polls = None
                server.action_latency_seconds = None
                server.stuck_status = None
                server.lying_off = False
                server.off_delay_polls = 0
                server.fail_next_action = None

    # ---- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # ---- internals -------------------------------------------------------------------------

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("fault count must be >= 1")
        with self._lock:
            self._faults.append(fault)

    @staticmethod
    def _fault_path(path: str | None, server_id: int | None) -> re.Pattern[str] | None:
        if server_id is not None:
            scoped = rf"^{API_PREFIX}/servers/{server_id}(/|$)"
            return re.compile(scoped if path is None else f"(?={scoped}).*{path}")
        return re.compile(path) if path is not None else None

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            taken = None
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    taken = copy.copy(fault)
                    break
            self._faults = [f for f in self._faults if f.remaining > 0]
        return taken

    def _track(self, conn: socket.socket, *, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    @contextlib.contextmanager
    def _serving(self) -> Iterator[None]:
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            self._requests_served += 1

    def _get(self, server_id: int) -> _Server:
        try:
            return self._servers[server_id]
        except KeyError:
            raise _ApiError(404, "not_found", f"server with ID '{server_id}' not found") from None

    def _busy_action(self, server: _Server) -> _Action | None:
        for action in self._actions.values():
            if action.server_id == server.id and action.status == "running":
                return action
        return None

    def _status(self, server: _Server, *, count_poll: bool) -> str:
        if server.lying_off:
            return "off"
        running = server.backend.is_running()
        busy = self._busy_action(server)
        if busy is not None and busy.command == "stop_server" and running:
            return "stopping"
        if busy is not None and busy.command == "start_server" and not running:
            return "starting"
        if running:
            server.off_polls_seen = 0
            return "running"
        if server.stuck_status is not None:
            return server.stuck_status
        if server.off_polls_seen < server.off_delay_polls:
            if count_poll:
                server.off_polls_seen += 1
            return "stopping"
        return "off"

    def _server_json(self, server: _Server) -> dict[str, Any]:
        location = {
            "id": 2, "name": "nbg1", "description": "Nuremberg DC Park 1", "country": "DE",
            "city": "Nuremberg", "latitude": 49.452102, "longitude": 11.076665,
            "network_zone": "eu-central",
        }
        ipv4 = None
        if server.public_ipv4 is not None:
            ipv4 = {
                "id": server.id + 100_000_000, "ip": server.public_ipv4, "blocked": False,
                "dns_ptr": f"static.{server.public_ipv4}.clients.your-server.de",
            }
        private_net = []
        if server.private_ip is not None:
            octets = server.id.to_bytes(4, "big").hex()
            private_net.append({
                "network": 1_000_001, "ip": server.private_ip, "alias_ips": [],
                "mac_address": f"86:00:{octets[0:2]}:{octets[2:4]}:{octets[4:6]}:{octets[6:8]}",
            })
        return {
            "id": server.id,
            "name": server.name,
            "status": self._status(server, count_poll=True),
            "created": server.created,
            "public_net": {
                "ipv4": ipv4,
                "ipv6": {
                    "id": server.id + 200_000_000, "ip": "2a01:4f8:c0c:1234::/64",
                    "blocked": False, "dns_ptr": [],
                },
                "floating_ips": [],
                "firewalls": [],
            },
            "private_net": private_net,
            "server_type": {
                "id": 22, "name": "cpx31", "description": "CPX 31", "category": "regular_purpose",
                "cores": 4, "memory": 8.0, "disk": 160, "deprecated": False, "deprecation": None,
                "prices": [], "storage_type": "local", "cpu_type": "shared",
                "architecture": "x86",
                "locations": [
                    {"id": 2, "name": "nbg1", "deprecation": None, "available": True,
                     "recommended": True},
                ],
            },
            "datacenter": {
                "id": 2, "name": "nbg1-dc3", "description": "Nuremberg 1 virtual DC 3",
                "location": location,
                "server_types": {"supported": [22], "available": [22], "available_for_migration": [22]},
            },
            "location": location,
            "image": {
                "id": 114_690_387, "type": "system", "status": "available", "name": "debian-12",
                "description": "Debian 12", "image_size": None, "disk_size": 5,
                "created": "2023-06-13T06:00:02Z", "created_from": None, "bound_to": None,
                "os_flavor": "debian", "os_version": "12", "rapid_deploy": True,
                "protection": {"delete": False}, "deprecated": None, "deleted": None,
                "labels": {}, "architecture": "x86",
            },
            "iso": None,
            "rescue_enabled": False,
            "locked": False,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21_990_232_555_520,
            "protection": {"delete": False, "rebuild": False},
            "labels": dict(server.labels),
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": 160,
            "placement_group": None,
        }

    def _action_json(self, action: _Action) -> dict[str, Any]:
        return {
            "id": action.id,
            "command": action.command,
            "status": action.status,
            "progress": 100 if action.status != "running" else 0,
            "started": action.started,
            "finished": action.finished,
            "resources": [{"id": action.server_id, "type": "server"}],
            "error": action.error,
        }

    def _new_action(self, server: _Server, command: str) -> _Action:
        polls = (
            server.action_latency_polls if server.action_latency_polls is not None
            else self._default_latency_polls
        )
        seconds = (
            server.action_latency_seconds if server.action_latency_seconds is not None
            else self._default_latency_seconds
        )
        fail, server.fail_next_action = server.fail_next_action, None
        action = _Action(
            id=self._next_action_id, command=command, server_id=server.id, started=_now_iso(),
            latency_polls=polls, ready_at=time.monotonic() + seconds, fail=fail,
        )
        self._next_action_id += 1
        self._actions[action.id] = action
        if command == "shutdown_server":
            # ACPI shutdown is only a request to the guest OS: "sent" is all Hetzner confirms.
            # Modelled as an unresponsive guest, which is exactly the host fencing must handle.
            action.worker_done.set()
        elif fail is not None or server.lying_off:
            action.worker_done.set()
        else:
            power = server.backend.power_off if command == "stop_server" else server.backend.power_on
            action.worker = threading.Thread(
                target=self._run_power, args=(action, power), daemon=True,
                name=f"fake-hcloud-action-{action.id}",
            )
            action.worker.start()
        return action

    def _run_power(self, action: _Action, power: Callable[[], None]) -> None:
        try:
            power()
        except Exception as exc:  # a failing backend must surface as an action error
            action.worker_error = f"{type(exc).__name__}: {exc}"
            log.warning("backend failed for action %s: %s", action.id, action.worker_error)
        finally:
            action.worker_done.set()

    def _finish_action(self, action: _Action) -> None:
        """Settle an action whose backend call has returned: it never succeeds before that."""
        action.finished = _now_iso()
        if action.fail is not None:
            action.status = "error"
            action.error = {"code": action.fail[0], "message": action.fail[1]}
        elif action.worker_error is not None:
            action.status = "error"
            action.error = {"code": "action_failed", "message": action.worker_error}
        else:
            action.status = "success"

    # ---- routing ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        """Serve one authorised request: returns (HTTP status, JSON payload)."""
        if not path.startswith(API_PREFIX + "/"):
            raise _ApiError(404, "not_found", f"no route {path}")
        parts = path[len(API_PREFIX) + 1:].strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["servers", "actions"] and method == "GET":
            return 200, {"action": self._get_action(parts[2], server_scoped=True)}
        if len(parts) == 2 and parts[0] == "actions" and method == "GET":
            return 200, {"action": self._get_action(parts[1], server_scoped=False)}
        with self._lock:
            if parts == ["servers"] and method == "GET":
                return 200, self._list_servers(query)
            if len(parts) >= 2 and parts[0] == "servers":
                server = self._get(self._parse_id(parts[1], "server"))
                if len(parts) == 2 and method == "GET":
                    return 200, {"server": self._server_json(server)}
                if len(parts) == 2 and method == "PUT":
                    return 200, {"server": self._update_server(server, body)}
                if len(parts) == 4 and parts[2] == "actions" and method == "POST":
                    command = {
                        "poweroff": "stop_server", "poweron": "start_server",
                        "shutdown": "shutdown_server",
                    }.get(parts[3])
                    if command is not None:
                        busy = self._busy_action(server)
                        if busy is not None:
                            raise _ApiError(
                                423, "locked", f"server {server.id} is locked by action {busy.id}"
                            )
                        action = self._new_action(server, command)
                        return 201, {"action": self._action_json(action)}
        raise _ApiError(404, "not_found", f"no route {method} {path}")

    @staticmethod
    def _parse_id(raw: str, kind: str) -> int:
        if not raw.isdigit():
            raise _ApiError(400, "invalid_input", f"invalid {kind} id {raw!r}")
        return int(raw)

    def _get_action(self, raw_id: str, *, server_scoped: bool) -> dict[str, Any]:
        with self._lock:
            action = self._actions.get(self._parse_id(raw_id, "action"))
            if action is None or (server_scoped and action.server_id not in self._servers):
                raise _ApiError(404, "not_found", f"action with ID '{raw_id}' not found")
            if action.status == "running":
                action.polls += 1
            due = (
                action.status == "running"
                and action.polls > action.latency_polls
                and time.monotonic() >= action.ready_at
            )
        # Wait for the backend outside the lock so a slow host never blocks other requests.
        if due:
            action.worker_done.wait(timeout=self.worker_grace)
        with self._lock:
            if due and action.status == "running" and action.worker_done.is_set():
                self._finish_action(action)
            return self._action_json(action)

    def _list_servers(self, query: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        servers = sorted(self._servers.values(), key=lambda s: s.id)
        name = one("name")
        if name is not None:
            servers = [s for s in servers if s.name == name]
        selector = one("label_selector")
        if selector is not None:
            _validate_selector(selector)
            servers = [s for s in servers if label_selector_matches(selector, s.labels)]
        statuses = query.get("status")
        if statuses:
            servers = [s for s in servers if self._status(s, count_poll=False) in statuses]
        try:
            page = int(one("page") or 1)
            per_page = int(one("per_page") or DEFAULT_PER_PAGE)
        except ValueError:
            raise _ApiError(400, "invalid_input", "page and per_page must be integers") from None
        if page < 1 or per_page < 1:
            raise _ApiError(400, "invalid_input", "page and per_page must be >= 1")
        per_page = min(per_page, MAX_PER_PAGE)
        total = len(servers)
        last_page = max(1, -(-total // per_page))
        chunk = servers[(page - 1) * per_page: page * per_page]
        return {
            "servers": [self._server_json(s) for s in chunk],
            "meta": {
                "pagination": {
                    "page": page,
                    "per_page": per_page,
                    "previous_page": page - 1 if page > 1 else None,
                    "next_page": page + 1 if page < last_page else None,
                    "last_page": last_page,
                    "total_entries": total,
                }
            },
        }

    def _update_server(self, server: _Server, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _ApiError(400, "json_error", "request body must be a JSON object")
        if "labels" in body:
            server.labels = validate_labels(body["labels"])  # PUT replaces the whole label set
        if "name" in body:
            new_name = body["name"]
            if not isinstance(new_name, str) or not new_name:
                raise _ApiError(400, "invalid_input", "invalid input in field 'name'")
            if any(s.name == new_name and s.id != server.id for s in self._servers.values()):
                raise _ApiError(409, "uniqueness_error", "server name is already used")
            server.name = new_name
        self._save_state()
        return self._server_json(server)

    # ---- state file (CLI mode) -------------------------------------------------------------

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        servers = []
        for s in self._servers.values():
            entry: dict[str, Any] = {
                "id": s.id, "name": s.name, "labels": s.labels,
                "public_ipv4": s.public_ipv4, "private_ip": s.private_ip,
            }
            if isinstance(s.backend, CommandBackend):
                entry["backend"] = s.backend.to_json()
            else:
                entry["running"] = s.backend.is_running()
            servers.append(entry)
        payload = json.dumps({"servers": servers}, indent=2, sort_keys=True)
        directory = self.state_file.parent
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.state_file.name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(payload + "\n")
            os.replace(tmp, self.state_file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def load_state(self) -> None:
        """Register the servers listed in ``state_file`` (ids, labels and backends kept)."""
        if self.state_file is None or not self.state_file.exists():
            return
        data = json.loads(self.state_file.read_text())
        for entry in data.get("servers", []):
            spec = entry.get("backend")
            backend: PowerBackend
            if spec is not None:
                if spec.get("type") != "command":
                    raise ValueError(f"{self.state_file}: unknown backend type {spec.get('type')!r}")
                backend = CommandBackend(
                    spec["power_off"], spec["power_on"], spec["status"], float(spec.get("timeout", 60))
                )
            else:
                backend = InMemoryPower(running=bool(entry.get("running", True)))
            self.add_server(
                entry["name"], entry.get("labels", {}), entry.get("public_ipv4"),
                entry.get("private_ip"), backend, server_id=entry.get("id"),
            )


# --------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHetzner
    protocol_version = "HTTP/1.1"
    server_version = "fake-hcloud/1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._track(self.connection, opened=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        with self.fake._serving():
            self._serve_one(method)

    def _serve_one(self, method: str) -> None:
        fake = self.fake
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        authorized = auth == f"Bearer {fake.token}"
        body: Any = None
        record = RequestRecord(method, url.path, query, 0, None, authorized)
        fault: _Fault | None = None
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _ApiError(400, "json_error", "invalid JSON in request body") from None
            record = replace(record, body=body)
            if not authorized:
                raise _ApiError(401, "unauthorized", "unable to authenticate")
            fault = fake._take_fault(method, url.path)
            if fault is not None and fault.kind == "delay":
                fake._stopping.wait(fault.seconds)
                fault = None
            if fault is not None:
                status, payload = fault.status, None
            else:
                status, payload = fake.handle(method, url.path, query, body)
        except _ApiError as err:
            status = err.status
            payload = {"error": {"code": err.code, "message": err.message, "details": err.details}}
        except Exception as exc:  # the fake must answer like an API, never hang the client
            log.exception("fake Hetzner API crashed on %s %s", method, url.path)
            status = 500
            payload = {"error": {"code": "server_error", "message": str(exc), "details": None}}
        # Record before answering: a client that got its answer must find its request in the log.
        if fault is not None and fault.kind == "drop":
            fake._record(replace(record, status=0))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        fake._record(replace(record, status=status))
        if fault is not None:
            self._send_fault(fault)
        else:
            self._send_json(status, payload)

    def _headers_common(self) -> None:
        self.send_header("X-Correlation-Id", uuid.uuid4().hex[:16])
        self.send_header("RateLimit-Limit", str(RATE_LIMIT_PER_HOUR))
        self.send_header("RateLimit-Remaining", str(max(0, RATE_LIMIT_PER_HOUR - self.fake._requests_served)))
        self.send_header("RateLimit-Reset", str(int(time.time()) + 1))

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._headers_common()
        self.end_headers()
        self.wfile.write(data)

    def _send_fault(self, fault: _Fault) -> None:
        if fault.body == "json":
            self._send_json(fault.status, {
                "error": {"code": fault.code, "message": fault.message, "details": None}
            })
            return
        data = b"<html><body><h1>502 Bad Gateway</h1></body></html>" if fault.body == "html" else b""
        self.send_response(fault.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self._headers_common()
        self.end_headers()
        self.wfile.write(data)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(fake: FakeHetzner) -> Iterator[str]:
    """Serve ``fake`` for the duration of a ``with`` block, yielding its endpoint."""
    endpoint = fake.start()
    try:
        yield endpoint
    finally:
        fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.fake_hcloud",
        description="Serve a local fake of the Hetzner Cloud servers/actions API for the lab.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = any free port)")
    parser.add_argument(
        "--token", default=os.environ.get("HCLOUD_TOKEN"),
        help="accepted API token (default: $HCLOUD_TOKEN)",
    )
    parser.add_argument(
        "--state", type=Path, default=None,
        help="JSON file with the servers to serve; rewritten on every change",
    )
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("no token: pass --token or export HCLOUD_TOKEN")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    fake = FakeHetzner(args.token, host=args.host, port=args.port, state_file=args.state)
    fake.load_state()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with running(fake) as endpoint:
        print(endpoint, flush=True)  # the lab reads the endpoint from the first line
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
