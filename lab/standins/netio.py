"""Network plumbing for the stand-ins: small HTTP servers, bare TCP/UDP listeners, Prometheus text, client.

The stand-ins need several independent listeners per process (RPC, auth RPC, metrics, P2P) that start and
stop with the process; threads around the stdlib servers are enough and keep the binaries stdlib-only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .runtime import log

MAX_BODY = 5 * 1024 * 1024


class BindError(Exception):
    """A listener could not bind (port taken, bad address)."""


@dataclass
class Request:
    """One HTTP request as the handlers see it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes


@dataclass
class Response:
    """One HTTP response."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200) -> Response:
    """Serialise ``obj`` as a JSON response."""
    return Response(status=status, body=json.dumps(obj).encode() + b"\n")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def start_http(host: str, port: int, handler: Callable[[Request], Response], name: str) -> ThreadingHTTPServer:
    """Serve ``handler`` on host:port in a daemon thread; raise BindError if the port cannot be used."""

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "qp-standin"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.send_error(413)
                return
            body = self.rfile.read(length) if length else b""
            parsed = urllib.parse.urlsplit(self.path)
            req = Request(self.command, parsed.path, urllib.parse.parse_qs(parsed.query), self.headers, body)
            try:
                resp = handler(req)
            except Exception as exc:  # a handler bug must not kill the listener thread
                log(name, "error", "handler failed", error=repr(exc))
                resp = json_response({"code": 500, "message": "internal error"}, 500)
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return

    class _Server(ThreadingHTTPServer):
        address_family = _family(host)
        daemon_threads = True
        allow_reuse_address = True

    try:
        server = _Server((host, port), _Handler)
    except OSError as exc:
        raise BindError(f"{name}: could not listen on {host}:{port}: {exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    log(name, "info", "HTTP server started", endpoint=f"{host}:{port}")
    return server


class _TCPAcceptor(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        # Accept and hold briefly so a connect() probe succeeds, then close: enough for "port answers".
        with contextlib.suppress(OSError):
            self.request.settimeout(1.0)
            self.request.recv(1)


class _UDPSink(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        return


def start_tcp_listener(host: str, port: int, name: str) -> socketserver.BaseServer:
    """A TCP port that accepts connections (P2P / gRPC placeholders)."""

    class _Server(socketserver.ThreadingTCPServer):
        address_family = _family(host)
        daemon_threads = True
        allow_reuse_address = True

    try:
        server = _Server((host, port), _TCPAcceptor)
    except OSError as exc:
        raise BindError(f"{name}: could not listen on tcp {host}:{port}: {exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    log(name, "info", "TCP listener started", endpoint=f"{host}:{port}")
    return server


def start_udp_listener(host: str, port: int, name: str) -> socketserver.BaseServer:
    """A bound UDP port that swallows datagrams (discovery placeholder)."""

    class _Server(socketserver.UDPServer):
        address_family = _family(host)
        allow_reuse_address = True

    try:
        server = _Server((host, port), _UDPSink)
    except OSError as exc:
        raise BindError(f"{name}: could not listen on udp {host}:{port}: {exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    log(name, "info", "UDP listener started", endpoint=f"{host}:{port}")
    return server


def stop_servers(servers: list[socketserver.BaseServer]) -> None:
    """Stop serve_forever loops in parallel (one poll interval in total), then close the sockets."""
    threads = [threading.Thread(target=server.shutdown, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2.0)
    for server in servers:
        with contextlib.suppress(Exception):
            server.server_close()


@dataclass
class Metric:
    """One Prometheus metric family with its samples (labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_metrics(metrics: list[Metric]) -> Response:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value in metric.samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{metric.name}{{{label_text}}} {_fmt(value)}" if label_text else
                         f"{metric.name} {_fmt(value)}")
    return Response(body=("\n".join(lines) + "\n").encode(), content_type="text/plain; version=0.0.4")


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``host`` -> (host, port)."""
    parsed = urllib.parse.urlsplit("//" + value)
    host = parsed.hostname or "127.0.0.1"
    try:
        port = parsed.port or default_port
    except ValueError:
        raise ValueError(f"bad host:port {value!r}") from None
    return host, port


def http_call(
    url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, Any]:
    """GET (body None) or POST JSON to ``url``; return (status, parsed JSON or None). Raises OSError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise OSError(f"unsupported endpoint {url!r}: only http://host:port is emulated")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET" if data is None else "POST", path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
        except http.client.HTTPException as exc:  # protocol garbage counts as "endpoint not usable"
            raise OSError(f"bad HTTP answer from {url}: {exc!r}") from None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return resp.status, parsed
    finally:
        conn.close()


def tcp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connect to host:port succeeds (the 'gRPC port answers' check)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
