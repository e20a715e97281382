"""Issue 12 item 8: one failed SSH call never decides "unreachable"; an auth failure is an error, not a fence.

The fakes answer like the real layers: `Ssh.run` is fed ssh(1)'s real exit code and stderr lines, and the
operation-level fake (tests/failover/test_operations_guards.FakeSsh) answers like qp-validator-ctl.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from qpool import operations as ops
from qpool import reachability
from qpool.errors import QpoolError
from qpool.inventory import HostRecord, Inventory
from qpool.remote import AuthFailure, HostKeyMismatch, Ssh, Unreachable

from .safety_support import fake, make_ctx
from .test_operations_guards import BACKUP, PRIMARY, FakeSsh, _fenced_by_hetzner, running_status

# What OpenSSH 9 prints (LogLevel=ERROR) for each case, as seen on Debian 12.
SSH_STDERR = {
    "auth": "u@192.0.2.11: Permission denied (publickey).\r\n",
    "hostkey": "Host key verification failed.\r\n",
    "tcp": "ssh: connect to host 192.0.2.11 port 22: Connection timed out\r\n",
    "tcp-refused": "ssh: connect to host 192.0.2.11 port 22: Connection refused\r\n",
    "handshake": "Connection timed out during banner exchange\r\nConnection to 192.0.2.11 port 22 timed out\r\n",
    "reset": "kex_exchange_identification: read: Connection reset by peer\r\n",
}


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    return make_ctx(tmp_path, monkeypatch)


@pytest.mark.parametrize(("stderr", "kind"), [
    (SSH_STDERR["auth"], "auth"), (SSH_STDERR["hostkey"], "hostkey"), (SSH_STDERR["tcp"], "tcp"),
    (SSH_STDERR["tcp-refused"], "tcp"), (SSH_STDERR["handshake"], "handshake"), (SSH_STDERR["reset"], "handshake"),
])
def test_classify_ssh_failure(stderr: str, kind: str) -> None:
    assert reachability.classify_ssh_failure(stderr) == kind


@pytest.fixture
def real_ssh(tmp_path: Path) -> Ssh:
    inv = Inventory(stack="t", hosts={PRIMARY.name: PRIMARY}, ssh_user="u", ssh_key=tmp_path / "k",
                    known_hosts=tmp_path / "kh", config_file=tmp_path / "c.yaml")
    return Ssh(inv)


@pytest.mark.parametrize(("stderr", "exc"), [(SSH_STDERR["auth"], AuthFailure),
                                              (SSH_STDERR["hostkey"], HostKeyMismatch),
                                              (SSH_STDERR["tcp"], Unreachable),
                                              (SSH_STDERR["handshake"], Unreachable)])
def test_ssh_exit_255_is_classified(real_ssh: Ssh, monkeypatch: pytest.MonkeyPatch, stderr: str,
                                    exc: type[Exception]) -> None:
    def fake_run(argv: list[str], **_kw: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(argv, 255, b"", stderr.encode())

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(exc) as raised:
        real_ssh.status(PRIMARY)
    assert type(raised.value) is exc, "an auth failure / host-key mismatch must never be an Unreachable"


def test_tcp_probe_distinguishes_connect(real_ssh: Ssh) -> None:
    """A real TCP connect on loopback: a listening port connects, a closed one is refused."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    local = HostRecord("h-local", "primary", "p1", "127.0.0.1", "127.0.0.1")
    try:
        assert real_ssh.tcp_probe(local, port, 2.0) is None
    finally:
        server.close()
    assert "ConnectionRefusedError" in (real_ssh.tcp_probe(local, port, 2.0) or "")


class FlakySsh(FakeSsh):
    """The source's first `n` status calls fail as unreachable (a 5 s connect timeout), then it answers."""

    def __init__(self, statuses: dict[str, Any], failures: int, error: type[Exception] = Unreachable) -> None:
        super().__init__(statuses)
        self.failures = failures
        self.error = error
        self.status_calls = 0

    def status(self, host: HostRecord) -> dict[str, Any]:
        if host.name == PRIMARY.name:
            self.status_calls += 1
            if self.status_calls <= self.failures:
                raise self.error(f"{host.name} ({host.address}): SSH failed: Connection timed out")
        return super().status(host)


def _fence_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    fenced: list[str] = []

    def fence(_c: ops.Context, host: HostRecord, _j: Any) -> dict[str, Any]:
        fenced.append(host.name)
        return {"fenced_at": 0.0, "already_off": False}

    monkeypatch.setattr(ops, "_fence", fence)
    _fenced_by_hetzner(monkeypatch, lambda _c, _h: False)
    return fenced


def test_one_failed_probe_does_not_fence_a_healthy_signer(ctx: ops.Context,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The old behaviour: one exit 255 chose the fenced path. Now a later probe answers: the clean path."""
    ssh = FlakySsh(fake(ctx).statuses, failures=1)
    ctx.ssh = ssh  # type: ignore[assignment]
    ctx.hcloud = object()
    fenced = _fence_spy(monkeypatch)
    result = ops.failover(ctx, "p1")
    assert result["mode"] == "clean" and fenced == []
    assert next(c[:2] for c in ssh.changed()) == (PRIMARY.name, "stop")


def test_unreachable_only_when_every_probe_agrees(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(ctx).statuses[PRIMARY.name] = None
    view = ops.observe(ctx, PRIMARY)
    assert view.status is None
    assert f"all {reachability.PROBES} probes" in (view.error or "")
    assert "tcp 22: TimeoutError" in (view.error or "")
    clock = ctx.clock
    assert clock.slept == [reachability.PROBE_INTERVAL] * (reachability.PROBES - 1)  # type: ignore[attr-defined]


def test_tcp_up_but_handshake_fails_is_reported_as_such(ctx: ops.Context) -> None:
    ssh = FlakySsh(fake(ctx).statuses, failures=99)
    ctx.ssh = ssh  # type: ignore[assignment]
    view = ops.observe(ctx, PRIMARY)
    assert view.status is None and "connected; ssh handshake" in (view.error or "")
    assert ssh.status_calls == reachability.PROBES


def test_auth_failure_on_healthy_source_stops_without_fencing(ctx: ops.Context,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = FlakySsh(fake(ctx).statuses, failures=99, error=AuthFailure)
    ctx.ssh = ssh  # type: ignore[assignment]
    ctx.hcloud = object()
    fenced = _fence_spy(monkeypatch)
    with pytest.raises(AuthFailure):
        ops.failover(ctx, "p1")
    assert fenced == [] and ssh.changed() == []
    assert ctx.clock.slept == [], "an auth failure is not probed again as if the host were unreachable"  # type: ignore[attr-defined]
    assert ssh.oplock == {}, "the refused run released the target's operation lock"


def test_auth_failure_in_a_later_probe_stops_too(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """First call times out, the next probe is refused authentication: an error, never "unreachable"."""

    class Mixed(FlakySsh):
        def status(self, host: HostRecord) -> dict[str, Any]:
            if host.name == PRIMARY.name:
                self.status_calls += 1
                if self.status_calls == 1:
                    raise Unreachable("timed out")
                raise AuthFailure("Permission denied (publickey)")
            return FakeSsh.status(self, host)

    ssh = Mixed(fake(ctx).statuses, failures=0)
    ctx.ssh = ssh  # type: ignore[assignment]
    ctx.hcloud = object()
    fenced = _fence_spy(monkeypatch)
    with pytest.raises(AuthFailure):
        ops.failover(ctx, "p1")
    assert fenced == [] and ssh.changed() == []


def test_stop_times_out_but_source_answers_again_is_not_fenced(ctx: ops.Context,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop call's SSH dies mid-way, the source answers the next probe: refuse (re-run), never fence."""
    real_ctl = FakeSsh.ctl

    def ctl(self: FakeSsh, host: HostRecord, *args: str, **kw: Any) -> dict[str, Any]:
        if args[0] == "stop":
            self.calls.append((host.name, "stop"))
            raise Unreachable(f"{host.name}: no answer within 240s")
        return real_ctl(self, host, *args, **kw)

    monkeypatch.setattr(FakeSsh, "ctl", ctl)
    ctx.hcloud = object()
    fenced = _fence_spy(monkeypatch)
    with pytest.raises(QpoolError, match="answers again"):
        ops.failover(ctx, "p1")
    assert fenced == []
    assert (BACKUP.name, "activate") not in [c[:2] for c in fake(ctx).calls]


def test_running_status_is_reachable_without_probes(ctx: ops.Context) -> None:
    fake(ctx).statuses[PRIMARY.name] = running_status()
    assert ops.observe(ctx, PRIMARY).status is not None
    assert ctx.clock.slept == []  # type: ignore[attr-defined]
