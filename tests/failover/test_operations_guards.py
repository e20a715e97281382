"""qpool.operations' guards without a lab: a fake Ssh answers with status dicts, as qp-validator-ctl would.

Why: the lab proves the whole path works; these prove each refusal happens for the right reason and
*before* anything changes (no stop, no import, no start), including the combinations a lab cannot reach
quickly: the epoch gate with a fake clock, a peer that starts during the prompt, a stop that did not stop.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from qpool import operations as ops
from qpool import status as status_mod
from qpool.errors import QpoolError
from qpool.inventory import HostRecord, Inventory
from qpool.journal import journal_path, last_journal
from qpool.remote import Refused, Unreachable
from qpool.stackfile import read_active

PRIMARY = HostRecord("h-primary", "primary", "p1", "192.0.2.11", "10.0.0.11", server_id=1)
BACKUP = HostRecord("h-backup", "backup", "p1", "192.0.2.12", "10.0.0.12", server_id=2)
GVR = "0x" + "ab" * 32
KEY = "0x" + "cd" * 16


def stopped_status(**over: Any) -> dict[str, Any]:
    st = {"unit": {"active": "inactive"}, "processes": [], "metrics_port_open": False, "locked": True,
          "db_present": True, "newest_backup": None, "chain_clock": None, "oplock": None,
          "beacon": {"reachable": True, "syncing": False, "head_slot": 100}, "wallet": {"pubkeys": [KEY]},
          "liveness": {"known": True, "head_epoch": 3, "epochs": [2, 3], "keys": 1, "not_on_chain": 0, "live": {}}}
    st.update(over)
    return st


def running_status(**over: Any) -> dict[str, Any]:
    return stopped_status(**{"unit": {"active": "active"}, "processes": [101], "metrics_port_open": True,
                             "locked": False, **over})


def interchange(*votes: tuple[int, int]) -> bytes:
    return json.dumps({"metadata": {"interchange_format_version": "5", "genesis_validators_root": GVR},
                       "data": [{"pubkey": KEY, "signed_blocks": [],
                                 "signed_attestations": [{"source_epoch": str(s), "target_epoch": str(t)}
                                                         for s, t in votes]}]}).encode()


class FakeSsh:
    """Answers like qp-validator-ctl on two hosts and records every state-changing call."""

    def __init__(self, statuses: dict[str, dict[str, Any] | None]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, ...]] = []
        self.history: dict[str, bytes] = {PRIMARY.name: interchange((1, 2), (2, 3)), BACKUP.name: interchange()}
        self.replica: bytes | None = None
        self.oplock: dict[str, str] = {}
        self.stop_works = True
        self.on_status: Any = None
        self.private_ips = {PRIMARY.name: PRIMARY.private_ip, BACKUP.name: BACKUP.private_ip}
        #: What the target's probe-peer sees per host (default: alive iff the host answers SSH).
        self.probe_answers: dict[str, bool] = {}

    def status(self, host: HostRecord) -> dict[str, Any]:
        if self.on_status is not None:
            self.on_status(host)
        st = self.statuses[host.name]
        if st is None:
            raise Unreachable(f"{host.name}: no answer")
        return {"host": host.name, "role": host.role, **copy.deepcopy(st)}

    def tcp_probe(self, host: HostRecord, port: int, timeout: float) -> str | None:
        """An unreachable fake host is unreachable at the TCP level too (qpool.reachability's probes)."""
        return None if self.statuses[host.name] is not None else "TimeoutError: timed out"

    def ctl(self, host: HostRecord, *args: str, input: bytes | None = None, timeout: float = 180) -> dict[str, Any]:
        if self.statuses[host.name] is None:
            raise Unreachable(f"{host.name}: no answer")
        self.calls.append((host.name, *args[:2]))
        if args[0] == "oplock":
            run_id = args[args.index("--run-id") + 1]
            held = self.oplock.get(host.name)
            if args[1] == "acquire":
                if held not in (None, run_id):
                    raise Refused("another qpool operation holds this host")
                self.oplock[host.name] = run_id
            elif held == run_id:
                del self.oplock[host.name]
            return {}
        if args[0] == "select-replica":  # as qp-validator-ctl: the newest intact replica (all intact here)
            newest = self.statuses[host.name].get("newest_backup")  # type: ignore[union-attr]
            return {"path": None, "skipped": []} if not newest else {
                "name": newest["path"].rsplit("/", 1)[-1], "skipped": [], **newest}
        if args[0] == "probe-peer":  # the target's private-network probe: a host that answers SSH is alive
            peer = next(n for n in self.statuses if n in self.private_ips and self.private_ips[n] == args[1])
            alive = self.statuses[peer] is not None if peer not in self.probe_answers else self.probe_answers[peer]
            return {"verdict": "alive" if alive else "silent", "answered": ["22: open"] if alive else [],
                    "rounds": [{"22": "open" if alive else "timeout"}] * 3}
        if args[0] == "stop":
            if self.stop_works:
                self.statuses[host.name] = stopped_status()
            return {"graceful": True, "forced": False}
        if args[0] == "activate":
            self.statuses[host.name] = running_status()
            return {"running": True}
        if args[0] == "import-slashing":
            assert input is not None
            assert hashlib.sha256(input).hexdigest() == args[args.index("--sha256") + 1]
            self.history[host.name] = input
            return {"imported": True}
        raise AssertionError(f"unexpected ctl call {args}")

    def export_bytes(self, host: HostRecord, *args: str) -> tuple[bytes, str]:
        self.calls.append((host.name, args[0]))
        data = self.replica if args[0] == "export-replica" else self.history[host.name]
        assert data is not None
        return data, hashlib.sha256(data).hexdigest()

    def changed(self) -> list[tuple[str, ...]]:
        """State-changing calls (not the operation lock itself)."""
        return [c for c in self.calls if c[1] in ("stop", "activate", "import-slashing")]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def build_ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    """Primary signs, backup stopped and locked, on the fake SSH layer and a fake clock."""
    monkeypatch.setenv("QPOOL_NO_PULUMI_CLI", "1")
    config = tmp_path / "Pulumi.t.yaml"
    config.write_text("config:\n  quantapool:validatorPairs:\n    - name: p1\n      active: primary\n")
    inv = Inventory(stack="t", hosts={h.name: h for h in (PRIMARY, BACKUP)}, ssh_user="u",
                    ssh_key=tmp_path / "k", known_hosts=tmp_path / "kh", config_file=config)
    clock = FakeClock(1_000_000.0)
    context = ops.Context(inventory=inv, config_file=config, report=lambda _m: None, clock=clock,
                          sleep=clock.sleep, journal_dir=tmp_path / "state")
    context.ssh = FakeSsh({PRIMARY.name: running_status(), BACKUP.name: stopped_status()})  # type: ignore[assignment]
    return context


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    return build_ctx(tmp_path, monkeypatch)


def record_starts(ssh: FakeSsh, clock: FakeClock) -> list[float]:
    """The fake clock's time at every `qp-validator-ctl activate` the operation sends (the start itself)."""
    started: list[float] = []
    real_ctl = ssh.ctl

    def ctl(host: HostRecord, *args: str, **kw: Any) -> dict[str, Any]:
        if args[0] == "activate":
            started.append(clock.now)
        return real_ctl(host, *args, **kw)

    ssh.ctl = ctl  # type: ignore[method-assign]
    return started


def fake(ctx: ops.Context) -> FakeSsh:
    return ctx.ssh  # type: ignore[return-value]


def _fenced_by_hetzner(monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
    """What the Hetzner API says about power, for both readers: status.observe and the operations' lock step."""
    monkeypatch.setattr(status_mod, "hetzner_fenced", answer)
    monkeypatch.setattr(ops, "hetzner_fenced", answer)


# -- stopped_reasons / running --------------------------------------------------------------------------

def test_stopped_and_locked_has_no_reasons() -> None:
    assert ops.stopped_reasons(stopped_status()) == []
    assert ops.stopped_reasons(stopped_status(unit={"active": "failed"})) == []


@pytest.mark.parametrize(("over", "word"), [
    ({"unit": {"active": "active"}}, "unit is active"),
    ({"unit": {"active": "deactivating"}}, "unit is deactivating"),
    ({"unit": {"active": "activating"}}, "unit is activating"),
    ({"unit": {}}, "unit is None"),
    ({"processes": [7]}, "process"),
    ({"metrics_port_open": True}, "metrics port"),
    ({"locked": False}, "lock file absent"),
])
def test_each_independent_check_alone_means_not_stopped(over: dict[str, Any], word: str) -> None:
    reasons = ops.stopped_reasons(stopped_status(**over))
    assert len(reasons) == 1 and word in reasons[0]


def test_running_needs_unit_process_and_port() -> None:
    assert ops.running(running_status())
    assert not ops.running(running_status(processes=[]))
    assert not ops.running(running_status(metrics_port_open=False))
    assert not ops.running(running_status(unit={"active": "activating"}))


# -- verify_peer_safe ---------------------------------------------------------------------------------

def test_peer_reachable_stopped_and_locked_is_safe(ctx: ops.Context) -> None:
    fake(ctx).statuses[PRIMARY.name] = stopped_status()
    assert ops.verify_peer_safe(ctx, PRIMARY) == "stopped and locked"


@pytest.mark.parametrize("status", [running_status(), stopped_status(locked=False),
                                    stopped_status(processes=[5]), stopped_status(metrics_port_open=True)])
def test_peer_reachable_not_stopped_is_refused(ctx: ops.Context, status: dict[str, Any]) -> None:
    fake(ctx).statuses[PRIMARY.name] = status
    with pytest.raises(QpoolError, match="may still sign"):
        ops.verify_peer_safe(ctx, PRIMARY)


def test_peer_unreachable_and_fenced_is_safe(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(ctx).statuses[PRIMARY.name] = None
    ctx.hcloud = object()
    _fenced_by_hetzner(monkeypatch, lambda _ctx, _host: True)
    assert "fenced" in ops.verify_peer_safe(ctx, PRIMARY)


@pytest.mark.parametrize("hcloud", [None, object()])
def test_peer_unreachable_not_fenced_is_refused(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch,
                                                hcloud: object) -> None:
    fake(ctx).statuses[PRIMARY.name] = None
    ctx.hcloud = hcloud
    _fenced_by_hetzner(monkeypatch, lambda _ctx, _host: False)
    with pytest.raises(QpoolError, match="unreachable and not fenced"):
        ops.verify_peer_safe(ctx, PRIMARY)


# -- epoch gate -----------------------------------------------------------------------------------------

ZOND = {"genesis_time": 1_000, "seconds_per_slot": 60.0, "slots_per_epoch": 128}  # 7680 s epochs


@pytest.mark.parametrize(("fence_offset", "gate"), [
    (0.0, 3),                 # fenced at the very start of epoch 0
    (7679.9, 3),              # last instant of epoch 0
    (7680.0, 4),              # first instant of epoch 1
    (5 * 7680 + 10.0, 8),
])
def test_epoch_gate_is_fence_epoch_plus_three(fence_offset: float, gate: int) -> None:
    gate_epoch, gate_time = ops.epoch_gate(ZOND, ZOND["genesis_time"] + fence_offset)
    assert gate_epoch == gate
    assert gate_time == ZOND["genesis_time"] + gate * 7680
    # The gate is always more than two whole epochs after the fence.
    assert gate_time - (ZOND["genesis_time"] + fence_offset) > 2 * 7680


# -- activate refusals ----------------------------------------------------------------------------------

def test_activate_without_history_needs_first_start(ctx: ops.Context) -> None:
    fake(ctx).statuses = {PRIMARY.name: stopped_status(db_present=False), BACKUP.name: stopped_status()}
    with pytest.raises(QpoolError, match="first-start"):
        ops.activate(ctx, "p1")
    assert fake(ctx).changed() == [] and fake(ctx).oplock == {}


def test_activate_refused_while_peer_signs(ctx: ops.Context) -> None:
    fake(ctx).statuses = {PRIMARY.name: stopped_status(), BACKUP.name: running_status()}
    with pytest.raises(QpoolError, match="may still sign"):
        ops.activate(ctx, "p1")
    assert fake(ctx).changed() == []
    assert fake(ctx).oplock == {}, "the operation lock is released after a refusal"


def test_activate_rechecks_peer_after_the_prompt(ctx: ops.Context) -> None:
    """The peer starts while the operator reads the prompt: the fresh re-check refuses the start."""
    fake(ctx).statuses = {PRIMARY.name: stopped_status(), BACKUP.name: stopped_status()}

    def confirm(_msg: str) -> bool:
        fake(ctx).statuses[BACKUP.name] = running_status()
        return True

    ctx.confirm = confirm
    with pytest.raises(QpoolError, match="may still sign"):
        ops.activate(ctx, "p1")
    assert fake(ctx).changed() == []


def test_activate_declined_changes_nothing(ctx: ops.Context) -> None:
    fake(ctx).statuses = {PRIMARY.name: stopped_status(), BACKUP.name: stopped_status()}
    ctx.confirm = lambda _m: False
    with pytest.raises(QpoolError, match="aborted"):
        ops.activate(ctx, "p1")
    assert fake(ctx).changed() == [] and fake(ctx).oplock == {}


def test_activate_starts_only_after_peer_check(ctx: ops.Context) -> None:
    fake(ctx).statuses = {PRIMARY.name: stopped_status(), BACKUP.name: stopped_status()}
    assert ops.activate(ctx, "p1")["changed"]
    assert fake(ctx).changed() == [(PRIMARY.name, "activate", "--run-id")]


# -- failover refusals ----------------------------------------------------------------------------------

def test_failover_target_unreachable_touches_nothing(ctx: ops.Context) -> None:
    fake(ctx).statuses[BACKUP.name] = None
    with pytest.raises(Unreachable):
        ops.failover(ctx, "p1")
    assert fake(ctx).calls == []


def test_failover_refused_when_target_already_signs(ctx: ops.Context) -> None:
    fake(ctx).statuses[BACKUP.name] = running_status()
    with pytest.raises(QpoolError, match="already signing"):
        ops.failover(ctx, "p1")
    assert fake(ctx).changed() == []


def test_failover_unreachable_source_without_api_is_refused(ctx: ops.Context) -> None:
    fake(ctx).statuses[PRIMARY.name] = None
    with pytest.raises(QpoolError, match="cannot be fenced"):
        ops.failover(ctx, "p1")
    assert fake(ctx).changed() == []


def test_failover_declined_aborts_journal_and_releases_lock(ctx: ops.Context) -> None:
    ctx.confirm = lambda _m: False
    with pytest.raises(QpoolError, match="aborted"):
        ops.failover(ctx, "p1")
    assert fake(ctx).changed() == [] and fake(ctx).oplock == {}
    doc = last_journal(journal_path("t", "p1", ctx.journal_dir))
    assert doc is not None and doc["aborted"]


def test_failover_refuses_start_when_stop_did_not_stop(ctx: ops.Context) -> None:
    fake(ctx).stop_works = False
    with pytest.raises(QpoolError, match="may still sign"):
        ops.failover(ctx, "p1")
    assert (BACKUP.name, "activate", "--run-id") not in fake(ctx).calls
    assert read_active(ctx.config_file, "p1") == "primary"


def test_failover_refuses_when_export_regresses_replica(ctx: ops.Context) -> None:
    """A replicated backup newer than the fresh export means the export is from the wrong DB: refuse."""
    fake(ctx).replica = interchange((1, 2), (2, 3), (3, 4))
    fake(ctx).statuses[BACKUP.name] = stopped_status(newest_backup={"path": "/r/x.db", "age_seconds": 5.0})
    with pytest.raises(QpoolError, match="does not cover the last replicated backup"):
        ops.failover(ctx, "p1")
    assert [c for c in fake(ctx).changed() if c[1] != "stop"] == []


def test_failover_refuses_when_import_lost_entries(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    real = FakeSsh.ctl

    def lossy(self: FakeSsh, host: HostRecord, *args: str, input: bytes | None = None,
              timeout: float = 180) -> dict[str, Any]:
        result = real(self, host, *args, input=input, timeout=timeout)
        if args[0] == "import-slashing":
            self.history[host.name] = interchange((1, 2))  # the target kept less than it was given
        return result

    monkeypatch.setattr(FakeSsh, "ctl", lossy)
    with pytest.raises(QpoolError, match="missing entries"):
        ops.failover(ctx, "p1")
    assert (BACKUP.name, "activate", "--run-id") not in fake(ctx).calls


def test_clean_failover_moves_history_then_starts(ctx: ops.Context) -> None:
    result = ops.failover(ctx, "p1")
    assert result["changed"] and result["mode"] == "clean"
    order = [c[:2] for c in fake(ctx).changed()]
    assert order == [(PRIMARY.name, "stop"), (BACKUP.name, "import-slashing"), (BACKUP.name, "activate")]
    assert fake(ctx).history[BACKUP.name] == fake(ctx).history[PRIMARY.name]
    assert read_active(ctx.config_file, "p1") == "backup"
    assert ops.failover(ctx, "p1") == {"changed": False, "active": BACKUP.name}


# -- fenced path: epoch gate with a fake clock ---------------------------------------------------------

@pytest.fixture
def fenced_ctx(ctx: ops.Context, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    """The primary is unreachable; fencing "succeeds" at the fake clock's time; a replica exists."""
    clock: FakeClock = ctx.clock  # type: ignore[assignment]
    ssh = fake(ctx)
    ssh.statuses[PRIMARY.name] = None
    ssh.replica = interchange((1, 2), (2, 3))
    ssh.statuses[BACKUP.name] = stopped_status(
        newest_backup={"path": "/r/x.db", "age_seconds": 60.0, "source": PRIMARY.name},
        chain_clock={"genesis_time": int(clock.now) - 10 * 7680 - 100, "seconds_per_slot": 60.0,
                     "slots_per_epoch": 128})
    ctx.hcloud = object()
    _fenced_by_hetzner(monkeypatch, lambda _c, _h: False)
    monkeypatch.setattr(ops, "_fence", lambda c, _h, _j: {"fenced_at": c.clock(), "already_off": False,
                                                          "power_off_sent": True})
    monkeypatch.setattr(ops, "_verify_fenced", lambda _c, _h: "powered off (fake)")
    monkeypatch.setattr(ops, "_label_active", lambda _c, _s, _t: False)
    return ctx


def test_fenced_path_starts_only_after_the_epoch_gate(fenced_ctx: ops.Context) -> None:
    clock: FakeClock = fenced_ctx.clock  # type: ignore[assignment]
    ssh = fake(fenced_ctx)
    chain = ssh.statuses[BACKUP.name]["chain_clock"]  # type: ignore[index]
    fence_time = clock.now
    gate_epoch, gate_time = ops.epoch_gate(chain, fence_time)
    started_at = record_starts(ssh, clock)
    result = ops.failover(fenced_ctx, "p1")
    assert result["mode"] == "fenced"
    assert gate_epoch == 10 + ops.EPOCH_GATE_OFFSET
    assert started_at and started_at[0] >= gate_time
    assert clock.slept and max(clock.slept) <= 30, "the wait is done in short sleeps (Ctrl-C stays responsive)"
    assert ssh.history[BACKUP.name] == ssh.replica


def test_fenced_path_without_chain_clock_is_refused(fenced_ctx: ops.Context) -> None:
    fake(fenced_ctx).statuses[BACKUP.name]["chain_clock"] = None  # type: ignore[index]
    with pytest.raises(QpoolError, match="epoch gate cannot be computed"):
        ops.failover(fenced_ctx, "p1")
    assert (BACKUP.name, "activate", "--run-id") not in fake(fenced_ctx).calls


def test_fenced_path_without_replica_is_refused(fenced_ctx: ops.Context) -> None:
    fake(fenced_ctx).statuses[BACKUP.name]["newest_backup"] = None  # type: ignore[index]
    with pytest.raises(QpoolError, match="no replicated slashing-protection backup"):
        ops.failover(fenced_ctx, "p1")
    assert fake(fenced_ctx).changed() == []


def test_fenced_override_is_recorded(fenced_ctx: ops.Context) -> None:
    clock: FakeClock = fenced_ctx.clock  # type: ignore[assignment]
    ops.failover(fenced_ctx, "p1", accept_slashing_risk=True)
    assert [s for s in clock.slept if s != ops.reachability.PROBE_INTERVAL] == [], "no gate wait, only probes"
    doc = last_journal(journal_path("t", "p1", fenced_ctx.journal_dir))
    assert doc is not None and doc["steps"]["epoch-gate"]["data"]["overridden"] is True
