"""A local monitoring server: the real Prometheus and Alertmanager with the rendered configuration.

Used by the end-to-end tests and by bench/alert_latency.py. Everything listens on 127.0.0.1 on free ports:
- stand-in scrape targets (one small HTTP server per job and host) serving the real metric names, with
  validator processes and validator locks that a test switches;
- the rendered prometheus.yml with each target address rewritten to its stand-in (labels untouched), the
  rendered rule files, the rendered Prometheus/Alertmanager flags (paths and ports re-rooted);
- the rendered Alertmanager routing tree, every receiver pointed at a local webhook sink at /<receiver>.

`fast=True` shortens scrape and evaluation intervals to 1 s for tests; the rules' `for` and the routes'
timings stay as rendered. `fast=False` is production timing (the benchmark).

`targets` points a job at a real process instead of a stand-in (job name -> 127.0.0.1 port, e.g. the real
contract exporter); `rule_for` shortens the `for` of named alerts whose production hold (minutes) a test
cannot wait out; expressions, labels and routing stay as rendered.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from cloud_init import monitoring
from core.config import HostSpec, StackConfig
from lab.standins.harness import free_port as harness_free_port

PROMETHEUS_BIN = "/usr/bin/prometheus"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
GENESIS = time.time() - 3600 * 24  # stand-in chain genesis: slots are 60 s like Zond


def free_port() -> int:
    return harness_free_port()  # per-worker port ranges under pytest-xdist (lab/standins/harness.py)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HttpEndpoint:
    """A tiny HTTP server on a fixed 127.0.0.1 port that can be stopped (connection refused) and restarted."""

    def __init__(self, handle: Callable[[str, str, bytes], tuple[int, str, bytes]], port: int | None = None):
        self.port = port or free_port()
        self._handle = handle
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            return
        handle = self._handle

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code, ctype, out = handle(self.command, self.path, body)
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None


# ---------------------------------------------------------------------------------------------------------
# Stand-in targets
# ---------------------------------------------------------------------------------------------------------

def _expo(samples: list[tuple[str, dict[str, str], float]]) -> bytes:
    lines = []
    for name, lbl, value in samples:
        inner = ",".join(f'{k}="{v}"' for k, v in lbl.items())
        lines.append(f"{name}{{{inner}}} {value}" if inner else f"{name} {value}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class HostState:
    locked: bool
    validator_running: bool
    #: False: the validator runs without keys (qrysm: no per-key series, no block stream)
    keys_loaded: bool = True
    #: qrysm's validator_failed_attestations for the key; the series exists only once > 0
    failed_attestations: int = 0


@dataclass
class StandIns:
    """Metrics of every job on every host; `hosts` state is what a test changes."""

    cfg: StackConfig
    hosts: dict[str, HostState] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], HttpEndpoint] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for h in self.cfg.key_hosts():
            self.hosts[h.name] = HostState(locked=not h.active, validator_running=h.active)

    @staticmethod
    def slot() -> int:
        return int((time.time() - GENESIS) // 60)

    def metrics(self, job: str, host: HostSpec) -> bytes:
        now = time.time()
        slot = self.slot()
        if job == monitoring.JOB_NODE:
            fs = {"device": "/dev/sdb", "fstype": "ext4", "mountpoint": "/var/lib/prometheus"}
            samples = [
                ("node_timex_sync_status", {}, 1), ("node_timex_offset_seconds", {}, 0.0002),
                ("node_filesystem_avail_bytes", fs, 40e9), ("node_filesystem_size_bytes", fs, 50e9),
                ("node_filesystem_readonly", fs, 0), ("node_memory_MemAvailable_bytes", {}, 8e9),
                ("node_memory_MemTotal_bytes", {}, 16e9), ("node_vmstat_oom_kill", {}, 0),
                ("node_cpu_seconds_total", {"cpu": "0", "mode": "idle"}, now % 1e6),
                ("node_load1", {}, 0.3), ("node_network_receive_bytes_total", {"device": "eth0"}, now % 1e6 * 100),
                ("node_network_transmit_bytes_total", {"device": "eth0"}, now % 1e6 * 50),
                ("node_textfile_scrape_error", {}, 0),
            ]
            state = self.hosts.get(host.name)
            if state is not None:
                samples.append(("quantapool_validator_locked", {}, 1 if state.locked else 0))
                if not state.locked:
                    samples.append(("quantapool_slashing_protection_backup_timestamp_seconds", {}, now - 60))
            return _expo(samples)
        if job == monitoring.JOB_EXECUTION:
            return _expo([("chain_head_block", {}, slot), ("chain_head_header", {}, slot),
                          ("chain_head_finalized", {}, slot - 256), ("chain_head_safe", {}, slot - 128),
                          ("p2p_peers", {}, 20), ("txpool_pending", {}, 1), ("txpool_queued", {}, 0)])
        if job == monitoring.JOB_BEACON:
            return _expo([("beacon_head_slot", {}, slot), ("beacon_clock_time_slot", {}, slot),
                          ("beacon_finalized_epoch", {}, slot // 128 - 2),
                          ("beacon_current_justified_epoch", {}, slot // 128 - 1),
                          ("p2p_peer_count", {"state": "Connected"}, 50),
                          ("p2p_peer_count", {"state": "Disconnected"}, 0), ("connected_libp2p_peers", {}, 50)])
        if job == monitoring.JOB_VALIDATOR:
            key = {"pubkey": "0x" + "ab" * 8}
            vstate = self.hosts.get(host.name)
            if vstate is not None and not vstate.keys_loaded:
                return _expo([])
            samples = [("validator_statuses", key, 3), ("validator_balance", key, 40000.5),
                       ("validator_last_attested_slot", key, slot - 3),
                       ("validator_successful_attestations", key, slot // 128),
                       ("validator_successful_proposals", key, 2),
                       ("grpc_client_msg_received_total", {"grpc_type": "server_stream", "grpc_method":
                        "StreamBlocksAltair", "grpc_service": "theqrl.zond.v1alpha1.BeaconNodeValidator"}, slot)]
            if vstate is not None and vstate.failed_attestations:
                samples.append(("validator_failed_attestations", key, vstate.failed_attestations))
            return _expo(samples)
        if job == monitoring.JOB_CONTRACT_EXPORTER:
            return _expo([
                ("quantapool_exporter_up", {}, 1), ("quantapool_exporter_last_success_timestamp_seconds", {}, now),
                ("quantapool_exporter_call_success", {"contract": "deposit_pool", "call": "paused"}, 1),
                ("quantapool_pool_paused", {"contract": "deposit_pool"}, 0),
                ("quantapool_pool_paused", {"contract": "stqrl"}, 0),
                ("quantapool_chain_block_height", {}, slot), ("quantapool_stqrl_total_pooled_qrl", {}, 80000),
                ("quantapool_pool_balance_qrl", {}, 1000), ("quantapool_pool_buffered_qrl", {}, 1000),
                ("quantapool_pool_staked_qrl", {}, 79000), ("quantapool_pool_exchange_rate", {}, 1.01),
                ("quantapool_validators_registered", {}, 2), ("quantapool_validators_active", {}, 2),
                ("quantapool_validators_pending", {}, 0), ("quantapool_pool_total_rewards_qrl", {}, 5),
                ("quantapool_pool_total_slashing_losses_qrl", {}, 0),
                ("quantapool_events_total", {"contract": "deposit_pool", "event": "Deposited"}, 3),
                ("quantapool_exporter_rpc_errors_total", {"method": "qrl_call"}, 0),
            ])
        raise KeyError(job)

    def endpoint(self, job: str, host: HostSpec) -> HttpEndpoint:
        def handle(_method: str, _path: str, _body: bytes) -> tuple[int, str, bytes]:
            return 200, "text/plain; version=0.0.4", self.metrics(job, host)

        ep = HttpEndpoint(handle)
        self.endpoints[(job, host.name)] = ep
        return ep

    def validator(self, host: str) -> HttpEndpoint:
        return self.endpoints[(monitoring.JOB_VALIDATOR, host)]

    def stop_all(self) -> None:
        for ep in self.endpoints.values():
            ep.stop()


# ---------------------------------------------------------------------------------------------------------
# Webhook sink
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Notification:
    received: float
    receiver: str
    payload: dict[str, Any]


class WebhookSink:
    """Records every Alertmanager webhook delivery with its arrival time."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._cond = threading.Condition()
        self.endpoint = HttpEndpoint(self._handle)

    def _handle(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if method == "POST":
            with self._cond:
                self.notifications.append(Notification(time.time(), path.strip("/"), json.loads(body)))
                self._cond.notify_all()
        return 200, "text/plain", b"ok"

    def url(self, receiver: str) -> str:
        return f"http://127.0.0.1:{self.endpoint.port}/{receiver}"

    def alerts(self, alertname: str, status: str = "firing", since: float = 0.0) -> list[tuple[Notification, dict]]:
        with self._cond:
            return [(n, a) for n in self.notifications if n.received >= since for a in n.payload["alerts"]
                    if a["labels"].get("alertname") == alertname and a["status"] == status]

    def wait_for(self, alertname: str, timeout: float, since: float = 0.0, **labels: str,
                 ) -> tuple[Notification, dict] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for n, a in self.alerts(alertname, since=since):
                    if all(a["labels"].get(k) == v for k, v in labels.items()):
                        return n, a
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(timeout=min(left, 1.0))


# ---------------------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------------------

def _args_from_defaults(text: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith("ARGS="):
            # the shell value is one string; systemd splits an unbraced $ARGS on whitespace
            (value,) = shlex.split(line.removeprefix("ARGS="))
            return value.split()
    raise ValueError("no ARGS= line")


def _replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    out = [a for a in args if not a.startswith(f"--{flag}=")]
    assert len(out) == len(args) - 1, f"rendered flags lack --{flag}"
    return [*out, f"--{flag}={value}"]


class MonitoringStack:
    def __init__(self, cfg: StackConfig, workdir: Path, fast: bool = True, targets: dict[str, int] | None = None,
                 rule_for: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.targets = dict(targets or {})
        self.rule_for = dict(rule_for or {})
        self.dir = workdir
        self.fast = fast
        self.standins = StandIns(cfg)
        self.sink = WebhookSink()
        self.prom_port = free_port()
        self.am_port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files = {f.path: f for f in monitoring.monitoring_files(cfg)}

    # -- config rewriting -----------------------------------------------------------------------------
    def _prometheus_yml(self) -> dict[str, Any]:
        doc = yaml.safe_load(self.files[monitoring.PROMETHEUS_CONFIG].content)
        by_name = {h.name: h for h in self.cfg.hosts()}
        for job in doc["scrape_configs"]:
            name = job["job_name"]
            if self.fast:
                job["scrape_interval"] = "1s"
            for sc in job["static_configs"]:
                host = by_name[sc["labels"]["host"]]
                if name == monitoring.JOB_PROMETHEUS:
                    sc["targets"] = [f"127.0.0.1:{self.prom_port}"]
                elif name == monitoring.JOB_ALERTMANAGER:
                    sc["targets"] = [f"127.0.0.1:{self.am_port}"]
                elif name in self.targets:
                    sc["targets"] = [f"127.0.0.1:{self.targets[name]}"]
                else:
                    ep = self.standins.endpoint(name, host)
                    sc["targets"] = [f"127.0.0.1:{ep.port}"]
        if self.fast:
            doc["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        doc["rule_files"] = [str(self.dir / "rules" / "*.yml")]
        doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{self.am_port}"]
        return doc

    def _alertmanager_yml(self) -> dict[str, Any]:
        doc = yaml.safe_load(self.files[monitoring.ALERTMANAGER_TEMPLATE].content)
        for receiver in doc["receivers"]:
            for key in [k for k in receiver if k.endswith("_configs")]:
                del receiver[key]
            receiver["webhook_configs"] = [{"url": self.sink.url(receiver["name"]), "send_resolved": True}]
        return doc

    def _rules(self, text: str) -> str:
        if not self.rule_for:
            return text
        doc = yaml.safe_load(text)
        seen = set()
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") in self.rule_for:
                    rule["for"] = self.rule_for[rule["alert"]]
                    seen.add(rule["alert"])
        missing = set(self.rule_for) - seen
        assert not missing, f"rule_for names alerts that are not rendered: {missing}"
        return yaml.safe_dump(doc, sort_keys=False)

    def write(self) -> None:
        (self.dir / "rules").mkdir(parents=True, exist_ok=True)
        for path, f in self.files.items():
            if path.startswith(monitoring.RULES_DIR + "/"):
                (self.dir / "rules" / Path(path).name).write_text(self._rules(f.content))
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(self._prometheus_yml(), sort_keys=False))
        (self.dir / "alertmanager.yml").write_text(yaml.safe_dump(self._alertmanager_yml(), sort_keys=False))

    # -- processes ------------------------------------------------------------------------------------
    def _spawn(self, argv: list[str], name: str) -> None:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)

    def start(self) -> None:
        self.write()
        self.sink.endpoint.start()
        for (job, host), ep in self.standins.endpoints.items():
            state = self.standins.hosts.get(host)
            if job == monitoring.JOB_VALIDATOR and state is not None and not state.validator_running:
                continue  # a locked host's validator is not running: its port refuses connections
            ep.start()
        am_args = _args_from_defaults(self.files[monitoring.ALERTMANAGER_DEFAULTS].content)
        am_args = _replace_flag(am_args, "config.file", str(self.dir / "alertmanager.yml"))
        am_args = _replace_flag(am_args, "storage.path", str(self.dir / "am-data"))
        am_args = _replace_flag(am_args, "web.listen-address", f"127.0.0.1:{self.am_port}")
        self._spawn([ALERTMANAGER_BIN, *am_args], "alertmanager")
        prom_args = _args_from_defaults(self.files[monitoring.PROMETHEUS_DEFAULTS].content)
        prom_args = _replace_flag(prom_args, "config.file", str(self.dir / "prometheus.yml"))
        prom_args = _replace_flag(prom_args, "storage.tsdb.path", str(self.dir / "tsdb"))
        prom_args = _replace_flag(prom_args, "web.listen-address", f"127.0.0.1:{self.prom_port}")
        self._spawn([PROMETHEUS_BIN, *prom_args], "prometheus")
        self._wait_ready(f"http://127.0.0.1:{self.am_port}/-/ready", "alertmanager")
        self._wait_ready(f"http://127.0.0.1:{self.prom_port}/-/ready", "prometheus")

    def _wait_ready(self, url: str, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: " + (self.dir / f"{name}.log").read_text()[-2000:])
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout}s: " + (self.dir / f"{name}.log").read_text()[-2000:])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.standins.stop_all()
        self.sink.endpoint.stop()

    def __enter__(self) -> MonitoringStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries --------------------------------------------------------------------------------------
    def query(self, expr: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:  # 400/422 carry the error document
            return json.loads(err.read())

    def wait_until(self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.query(expr)
            if res.get("status") == "success" and predicate(res["data"]["result"]):
                return True
            time.sleep(0.5)
        return False


def active_and_standby(cfg: StackConfig, pair: str | None = None) -> tuple[HostSpec, HostSpec]:
    hosts = cfg.key_hosts(pair or cfg.validator_pairs[0].name)
    active = next(h for h in hosts if h.active)
    return active, next(h for h in hosts if h is not active)


__all__ = ["ALERTMANAGER_BIN", "PROMETHEUS_BIN", "MonitoringStack", "active_and_standby", "free_port"]
