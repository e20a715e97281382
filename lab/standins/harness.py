"""Run stand-in stacks on loopback: free ports, managed subprocesses, bounded waits, small HTTP helpers.

Used by the stand-ins' own tests and reusable by lab benchmarks. Operator/test side (stdlib
only, but not needed on lab hosts); never shipped inside the executables. Every wait is bounded, all traffic goes to
127.0.0.1, and a Runner stops (SIGTERM, then SIGKILL) everything it started.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SLOT_SECONDS = "0.5"
SLOTS_PER_EPOCH = "4"
_used_ports: set[int] = set()
_SAMPLE_RE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


#: Under pytest-xdist, worker gwN takes ports from its own range below Linux's ephemeral range (32768-60999),
#: so no other worker (nor the kernel's bind-to-0) gets a port that a test stopped listening on for a while
#: (e.g. a stand-in being restarted on its port): parallel workers never race for a loopback port.
WORKER_PORT_BASE = 20000
WORKER_PORT_SPAN = 1500
_worker_next = [0]


def _worker_index() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None
    return index if index is not None and WORKER_PORT_BASE + (index + 1) * WORKER_PORT_SPAN <= 32768 else None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A currently unused loopback port, never handed out twice in this session (see WORKER_PORT_BASE)."""
    worker = _worker_index()
    if worker is not None:
        for _ in range(WORKER_PORT_SPAN):
            port = WORKER_PORT_BASE + worker * WORKER_PORT_SPAN + _worker_next[0] % WORKER_PORT_SPAN
            _worker_next[0] += 1
            if port in _used_ports:
                continue
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _used_ports.add(port)
            return port
        first = WORKER_PORT_BASE + worker * WORKER_PORT_SPAN
        raise RuntimeError(f"no free loopback port in this worker's range {first}-{first + WORKER_PORT_SPAN - 1}")
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free loopback port found in 100 tries")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _loopback_only(url: str) -> None:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing non-loopback URL {url!r}: the harness only talks to 127.0.0.1")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET a loopback URL; (status, body), also for 4xx/5xx; (0, b"") when nothing answers."""
    _loopback_only(url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def http_post(url: str, payload: Any, headers: dict[str, str] | None = None,
              timeout: float = 2.0) -> tuple[int, Any]:
    """POST JSON to a loopback URL; (status, parsed JSON, or raw bytes when the answer is not JSON)."""
    _loopback_only(url)
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",  # noqa: S310
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    """One JSON-RPC call; returns the decoded response object."""
    status, body = http_post(url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    if status != 200:
        raise AssertionError(f"RPC {method} at {url}: HTTP {status} {body!r}")
    return body


@dataclass
class Proc:
    """A started stand-in process with its log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        return self.popen.returncode


class Runner:
    """Starts stand-in executables and guarantees they are gone at teardown."""

    def __init__(self, bins: dict[str, Path], workdir: Path, env: dict[str, str]) -> None:
        self.bins = bins
        self.workdir = workdir
        self.env = env
        self.procs: list[Proc] = []

    def run(self, client: str, *args: str, timeout: float = 20.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a short command (subcommands, failing starts) to completion."""
        return subprocess.run([str(self.bins[client]), *args], capture_output=True, text=True,
                              timeout=timeout, env={**self.env, **(env or {})}, check=False)

    def start(self, client: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """Start a long-running process with its stderr/stdout in a log file."""
        log_path = self.workdir / f"{client}-{len(self.procs)}.log"
        with open(log_path, "wb") as log_fh:
            popen = subprocess.Popen([str(self.bins[client]), *args], stdout=log_fh, stderr=subprocess.STDOUT,
                                     env={**self.env, **(env or {})})
        proc = Proc(client, popen, log_path)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        """Stop every process this runner started."""
        for proc in self.procs:
            proc.stop()


@dataclass
class Stack:
    """A running execution + beacon pair on loopback."""

    el: Proc
    bn: Proc
    jwt: Path
    http_url: str
    auth_url: str
    el_metrics_url: str
    rest_url: str
    grpc: str
    bn_metrics_url: str


def write_jwt(path: Path) -> Path:
    """A fresh random engine JWT secret file (0x-hex, as the project writes it)."""
    path.write_text("0x" + secrets.token_hex(32) + "\n")
    return path


def start_execution(runner: Runner, tmp: Path, jwt: Path, client: str = "gzond", name: str = "el",
                    env: dict[str, str] | None = None) -> dict:
    """Start an execution stand-in with all listeners on free loopback ports."""
    ports = {k: free_port() for k in ("http", "auth", "metrics", "p2p")}
    proc = runner.start(
        client, "--datadir", str(tmp / name), "--http", "--http.addr", "127.0.0.1",
        "--http.port", str(ports["http"]), "--authrpc.addr", "127.0.0.1", "--authrpc.port", str(ports["auth"]),
        "--authrpc.jwtsecret", str(jwt), "--metrics", "--metrics.addr", "127.0.0.1",
        "--metrics.port", str(ports["metrics"]), "--port", str(ports["p2p"]),
        "--discovery.port", str(free_port(socket.SOCK_DGRAM)), env=env)
    urls = {"proc": proc, "http": f"http://127.0.0.1:{ports['http']}",
            "auth": f"http://127.0.0.1:{ports['auth']}",
            "metrics": f"http://127.0.0.1:{ports['metrics']}/debug/metrics/prometheus"}
    wait_until(lambda: http_get(urls["metrics"])[0] == 200, 10, f"{client} metrics endpoint")
    return urls


def start_beacon(runner: Runner, tmp: Path, jwt: Path, auth_url: str, name: str = "bn",
                 env: dict[str, str] | None = None) -> dict:
    """Start a beacon stand-in against an execution auth URL."""
    ports = {k: free_port() for k in ("grpc", "rest", "mon", "p2p")}
    proc = runner.start(
        "beacon-chain", "--accept-terms-of-use", "--datadir", str(tmp / name), "--execution-endpoint", auth_url,
        "--jwt-secret", str(jwt), "--rpc-host", "127.0.0.1", "--rpc-port", str(ports["grpc"]),
        "--grpc-gateway-host", "127.0.0.1", "--grpc-gateway-port", str(ports["rest"]),
        "--monitoring-host", "127.0.0.1", "--monitoring-port", str(ports["mon"]),
        "--p2p-local-ip", "127.0.0.1", "--p2p-tcp-port", str(ports["p2p"]),
        "--p2p-udp-port", str(free_port(socket.SOCK_DGRAM)), env=env)
    urls = {"proc": proc, "rest": f"http://127.0.0.1:{ports['rest']}", "grpc": f"127.0.0.1:{ports['grpc']}",
            "metrics": f"http://127.0.0.1:{ports['mon']}/metrics"}
    wait_until(lambda: http_get(urls["metrics"])[0] == 200, 10, "beacon monitoring endpoint")
    return urls


def import_keys(runner: Runner, wallet_dir: Path, keys: dict[str, Any]) -> subprocess.CompletedProcess:
    """``validator accounts import`` of a keys dict as made by the ``keys`` fixture."""
    return runner.run("validator", "accounts", "import", "--wallet-dir", str(wallet_dir), "--keys-dir",
                      str(keys["dir"]), "--wallet-password-file", str(keys["wallet_pw"]),
                      "--account-password-file", str(keys["account_pw"]), "--accept-terms-of-use")


def validator_args(wallet_dir: Path, datadir: Path, wallet_pw: Path, stack: Stack, mon_port: int,
                   *extra: str) -> list[str]:
    """Command line of a validator attached to ``stack`` with its monitoring on ``mon_port``."""
    return ["--accept-terms-of-use", "--wallet-dir", str(wallet_dir), "--wallet-password-file", str(wallet_pw),
            "--datadir", str(datadir), "--beacon-rpc-provider", stack.grpc, "--beacon-rest-api-provider",
            stack.rest_url, "--monitoring-host", "127.0.0.1", "--monitoring-port", str(mon_port), *extra]


def signing_log(datadir: Path) -> list[dict[str, Any]]:
    """Parsed lines of a validator's signing log (empty when it has not signed yet)."""
    path = datadir / "signing-log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def promtool_check(text: str) -> list[str]:
    """Run ``promtool check metrics``; fail on parse errors, return lint findings (one per line)."""
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                         timeout=30, check=False)
    if res.returncode not in (0, 3):  # 3 = lint findings only
        raise AssertionError(f"promtool could not parse metrics: {res.stderr}")
    return [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by exact exposed name (no ``_total`` rewriting, unlike prometheus_client's parser).

    Handles the subset the stand-ins emit: ``name value`` and ``name{k="v",...} value``; promtool_check
    is the strict validator.
    """
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            raise ValueError(f"unparsable metrics line: {line[:120]!r}")
        pairs = _LABEL_RE.findall(match["labels"] or "")
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in pairs}
        out.setdefault(match["name"], []).append((labels, float(match["value"])))
    return out


def start_stack(runner: Runner, tmp: Path, prefix: str = "/zond", client: str = "gzond",
                beacon_env: dict[str, str] | None = None) -> Stack:
    """Execution + beacon sharing one JWT secret, waited until the beacon reports healthy (synced)."""
    jwt = write_jwt(tmp / "jwt.hex")
    el = start_execution(runner, tmp, jwt, client=client)
    bn = start_beacon(runner, tmp, jwt, el["auth"], env=beacon_env)
    wait_until(lambda: http_get(bn["rest"] + f"{prefix}/v1/node/health")[0] == 200, 15, "beacon synced")
    return Stack(el["proc"], bn["proc"], jwt, el["http"], el["auth"], el["metrics"], bn["rest"], bn["grpc"],
                 bn["metrics"])
