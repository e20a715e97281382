"""Issue 11: the `clients` bundle's host side, executed (relocated into a temp root, systemctl stubbed).

qp-clients-apply restarts the execution client / beacon node only when what they run changed (the digest
qp-clients-state records at every start), runs the health gate after, never restarts/starts the validator
and records "restart pending" for a running validator whose binary or unit changed. qp-clients-health
answers against real HTTP servers (JSON-RPC and beacon REST) and fails loudly, bounded, when they do not.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_init import key_host as kh

from .support import Rendered, render_variant
from .test_key_host_scripts import calls, install, run, stub

EXE, BEACON, VAL = kh.EXECUTION_UNIT, kh.BEACON_UNIT, kh.VALIDATOR_UNIT


@pytest.fixture(scope="module")
def host() -> Rendered:
    return render_variant("gqrl", "primary", False)


def _relocate_more(text: str, root: Path) -> str:
    """Beyond test_key_host_scripts.relocate: the unit dir, the textfile dir and the sbin helpers."""
    for prefix in ("/etc/systemd/system", "/var/lib/prometheus", "/usr/local/sbin"):
        text = text.replace(prefix, f"{root}{prefix}")
    return text


class Host:
    """A temp root with the rendered units, pinned binaries (symlinks, as qp-install-clients leaves them),
    the real qp-clients-state and qp-clients-apply, and stubs for systemctl, qp-install-clients and the gate."""

    def __init__(self, r: Rendered, root: Path) -> None:
        self.root = root
        for unit in (EXE, BEACON, VAL):
            self.write(f"etc/systemd/system/{unit}", r.files[f"{kh.UNIT_DIR}/{unit}"])
        self.write("etc/quantapool/host.env", "QP_PUBLIC_IPV4=192.0.2.1\n")
        self.write("etc/quantapool/network/config.yml", "CONFIG: 1\n")
        (root / "var/lib/prometheus/node-exporter").mkdir(parents=True)
        for name in ("gqrl", "beacon-chain", "validator"):
            self.pin(name, "v1")
        state = r.files[kh.CLIENTS_STATE]
        self.state = install(root, "qp-clients-state", _relocate_more(state, root))
        apply_text = r.files[kh.CLIENTS_APPLY].replace(kh.CLIENTS_STATE, str(self.state))
        self.apply = install(root, "qp-clients-apply", _relocate_more(apply_text, root))
        for sbin in ("qp-install-clients", "qp-clients-health"):
            path = root / "usr/local/sbin" / sbin
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f'#!/bin/bash\necho "{sbin} $*" >> "{root}/calls.log"\n'
                            f'[ ! -e "{root}/{sbin}.fails" ]\n')
            path.chmod(0o755)
        # systemctl: is-active answers from $root/active/<unit>; everything else is only logged
        stub(root, "systemctl", f'if [ "$1" = is-active ]; then [ -e "{root}/active/${{@: -1}}" ]; exit $?; fi\n'
                                f'if [ "$1" = restart ]; then "{self.state}" record "$(echo "$2" | '
                                "sed 's/qp-//; s/.service//')\"; fi\nexit 0")
        (root / "active").mkdir()

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def pin(self, name: str, version: str) -> None:
        """What qp-install-clients does for a pin: <name>-<version> plus the <name> symlink."""
        bin_dir = self.root / "opt/quantapool/bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        (bin_dir / f"{name}-{version}").write_text(f"#!/bin/sh\n# {name} {version}\n")
        link = bin_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"{name}-{version}")

    def start(self, *roles: str) -> None:
        """Units running, each having recorded what it started with (the units' ExecStartPre)."""
        for role in roles:
            (self.root / "active" / f"qp-{role}.service").touch()
            assert run(self.root, self.state, "record", role).returncode == 0

    def run_apply(self) -> subprocess.CompletedProcess[str]:
        (self.root / "calls.log").unlink(missing_ok=True)
        return run(self.root, self.apply)

    @property
    def pending(self) -> dict | None:
        path = self.root / "var/lib/quantapool/clients-state/validator.restart-pending.json"
        return json.loads(path.read_text()) if path.exists() else None

    @property
    def metric(self) -> str:
        return (self.root / "var/lib/prometheus/node-exporter/quantapool_clients.prom").read_text()


@pytest.fixture
def box(host: Rendered, tmp_path: Path) -> Host:
    return Host(host, tmp_path)


def _restarts(box: Host) -> list[str]:
    return [c for c in calls(box.root) if c.startswith("systemctl restart")]


def test_first_bootstrap_installs_and_restarts_nothing(box: Host) -> None:
    res = box.run_apply()
    assert res.returncode == 0, res.stderr
    log = calls(box.root)
    assert log[0] == "systemctl daemon-reload" and "qp-install-clients " in log
    assert not _restarts(box) and not [c for c in log if c.startswith("qp-clients-health")]
    assert box.pending is None and "quantapool_validator_restart_pending 0" in box.metric


def test_nothing_changed_restarts_nothing_but_the_gate_still_answers(box: Host) -> None:
    box.start("execution", "beacon", "validator")
    res = box.run_apply()
    assert res.returncode == 0, res.stderr
    assert not _restarts(box) and "qp-clients-health " in calls(box.root)
    assert box.pending is None


def test_a_new_beacon_binary_restarts_only_the_beacon_then_gates(box: Host) -> None:
    box.start("execution", "beacon")
    box.pin("beacon-chain", "v2")
    res = box.run_apply()
    assert res.returncode == 0, res.stderr
    log = calls(box.root)
    assert _restarts(box) == [f"systemctl restart {BEACON}"]
    assert log.index(f"systemctl restart {BEACON}") < log.index("qp-clients-health ")
    assert box.run_apply().returncode == 0 and not _restarts(box), "recorded at the restart: no second restart"


@pytest.mark.parametrize("change", ["unit", "env"])
def test_a_changed_unit_or_start_file_restarts_the_execution_client(box: Host, change: str) -> None:
    box.start("execution", "beacon")
    if change == "unit":
        box.write(f"etc/systemd/system/{EXE}", (box.root / f"etc/systemd/system/{EXE}").read_text() + "# new flag\n")
    else:
        box.write("etc/quantapool/host.env", "QP_PUBLIC_IPV4=192.0.2.2\n")
    assert box.run_apply().returncode == 0
    assert f"systemctl restart {EXE}" in _restarts(box)
    if change == "unit":
        assert _restarts(box) == [f"systemctl restart {EXE}"], "the beacon does not read the execution unit"


def test_a_host_without_a_record_restarts_rather_than_guess(box: Host) -> None:
    (box.root / "active" / EXE).touch()  # running, but never recorded (started before issue 11)
    assert box.run_apply().returncode == 0
    assert _restarts(box) == [f"systemctl restart {EXE}"]


def test_a_failed_health_gate_fails_the_step_loudly(box: Host) -> None:
    box.start("execution", "beacon")
    box.pin("gqrl", "v2")
    (box.root / "qp-clients-health.fails").touch()
    res = box.run_apply()
    assert res.returncode == 1
    assert "health gate failed" in res.stderr and "qp-execution.service" in res.stderr


def test_running_validator_is_never_restarted_only_marked_pending(box: Host) -> None:
    box.start("execution", "beacon", "validator")
    box.pin("validator", "v2")
    res = box.run_apply()
    assert res.returncode == 0, res.stderr
    assert not any("validator" in c for c in _restarts(box))
    assert not [c for c in calls(box.root) if "qp-validator" in c and not c.startswith("systemctl is-active")]
    assert box.pending is not None and "differs" in box.pending["reason"]
    assert "quantapool_validator_restart_pending 1" in box.metric
    # the next start of the validator (qpool, via the unit's ExecStartPre) records it and clears the marker
    assert run(box.root, box.state, "record", "validator").returncode == 0
    assert box.pending is None and "quantapool_validator_restart_pending 0" in box.metric


def test_stopped_validator_has_nothing_pending(box: Host) -> None:
    box.start("execution", "beacon")
    box.pin("validator", "v2")
    assert box.run_apply().returncode == 0
    assert box.pending is None and "quantapool_validator_restart_pending 0" in box.metric


# -- the health gate against real HTTP answers -----------------------------------------------------------

class _Answers(http.server.BaseHTTPRequestHandler):
    health = 206

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send(200, {"jsonrpc": "2.0", "id": body["id"], "result": "0x10"}
                   if body["method"].endswith("_blockNumber") else {"error": "no"})

    def do_GET(self) -> None:
        if self.path.endswith("/node/health"):
            self._send(self.health, {})
        elif self.path.endswith("/node/syncing"):
            self._send(200, {"data": {"is_syncing": False, "head_slot": "5", "sync_distance": "0"}})
        else:
            self._send(404, {})

    def _send(self, code: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _gate(host: Rendered, root: Path, rpc_port: int, rest_port: int) -> Path:
    text = host.files[kh.CLIENTS_HEALTH]
    text = text.replace("http://127.0.0.1:8545", f"http://127.0.0.1:{rpc_port}")
    text = text.replace("http://127.0.0.1:3500", f"http://127.0.0.1:{rest_port}")
    return install(root, "qp-clients-health", text)


def test_health_gate_passes_when_both_answer(host: Rendered, tmp_path: Path, answering: int) -> None:
    res = run(tmp_path, _gate(host, tmp_path, answering, answering), "--timeout", "10")
    assert res.returncode == 0, res.stderr
    assert "is_syncing=false" in res.stdout


def test_health_gate_fails_bounded_naming_what_did_not_answer(host: Rendered, tmp_path: Path,
                                                              answering: int) -> None:
    res = run(tmp_path, _gate(host, tmp_path, answering, 9), "--timeout", "3")  # nothing on port 9
    assert res.returncode == 1
    assert "HEALTH GATE FAILED" in res.stderr and "beacon REST" in res.stderr and "execution" not in \
        res.stderr.split("no answer from", 1)[1]


def test_health_gate_uses_the_profile_namespace_and_prefix(host: Rendered) -> None:
    text = host.files[kh.CLIENTS_HEALTH]
    assert '"method":"qrl_blockNumber"' in text and "http://127.0.0.1:3500/qrl/v1" in text
    zond = render_variant("gzond", "backup", False).files[kh.CLIENTS_HEALTH]
    assert '"method":"zond_blockNumber"' in zond and "/zond/v1" in zond
