"""The fault matrix for "exactly one signer" (issue 6): every failover fault, in one lab, in order.

Each scenario asserts its outcome (who signs, what was refused) and then runs the independent detector
(tests/failover/detector.py): no double or surround vote in any host's signing log, and no lost history
(the host that signs now holds every vote any host ever signed, except votes the fenced path's epoch gate
provably covers). One lab serves the whole module because every scenario leaves it in a known state:
exactly one signer, whose role the stack config names. The summary table prints at the end of the run.

The lab's chain clock is short (1 s slots, 4-slot epochs) so the fenced path's epoch gate is waited out
for real, as in production, in about 12 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.deploy import LabClock, LabDeployment, _commands_by_host, run_bootstrap
from lab.hosts import LabHost
from lab.net import LabError
from lab.session import LabSession
from lab.testing import lab_unavailable_reason, operator_context, running_lab
from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.journal import journal_path, last_journal
from qpool.operations import Context
from qpool.remote import Refused, RemoteResult, Unreachable
from qpool.stackfile import read_active, write_active

from . import detector, matrix
from .faults import Hang, operator_pid

_SKIP = lab_unavailable_reason()
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

STACK = "fmfault"
OCTET = 33
PAIR = "p1"
CLOCK = LabClock(slot_seconds=1.0, slots_per_epoch=4)
EPOCH_SECONDS = CLOCK.slot_seconds * CLOCK.slots_per_epoch
SIGN_TIMEOUT = 40.0  # a started validator signs within an epoch or two once its beacon node is synced
OTHER = {"primary": "backup", "backup": "primary"}


@dataclass
class Lab:
    """The running lab plus what the scenarios share: the operator context and gate-covered votes."""

    dep: LabDeployment
    session: LabSession
    ctx: Context
    gate_covered: set[tuple[str, int, int]] = field(default_factory=set)

    def context(self, **kwargs: Any) -> Context:
        """A fresh operator context (own Ssh object, so a test may patch it without leaking)."""
        return operator_context(self.session, **kwargs)

    def record(self, role: str) -> HostRecord:
        return next(h for h in self.ctx.inventory.pair_hosts(PAIR) if h.role == role)

    def host(self, role: str) -> LabHost:
        return self.dep.hosts[self.record(role).name]

    @property
    def key_hosts(self) -> list[LabHost]:
        return [self.dep.hosts[h.name] for h in self.ctx.inventory.pair_hosts(PAIR)]

    def active_role(self) -> str:
        return read_active(self.ctx.config_file, PAIR)

    def status(self, role: str) -> dict[str, Any] | None:
        try:
            return self.ctx.ssh.status(self.record(role))
        except Unreachable:
            return None

    def signers(self) -> list[str]:
        """Roles whose validator runs (unreachable hosts are not counted: callers check those separately)."""
        return [role for role in ("primary", "backup") if (st := self.status(role)) and ops.running(st)]

    def log_len(self, role: str) -> int:
        return len(detector.read_signing_log(self.host(role)))

    def wait_signs(self, role: str, after: int | None = None, timeout: float = SIGN_TIMEOUT) -> list[detector.Signed]:
        """Wait until `role`'s signing log grows past `after` records (default: its length now)."""
        start = self.log_len(role) if after is None else after
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = detector.read_signing_log(self.host(role))
            if len(recs) > start:
                return recs[start:]
            time.sleep(0.5)
        raise AssertionError(f"{role} did not sign within {timeout:.0f}s (log has {start} record(s))")

    def assert_silent(self, role: str, seconds: float = EPOCH_SECONDS + CLOCK.slot_seconds) -> None:
        """`role` signs nothing for a while (a whole epoch and a slot: every key had a duty in that time)."""
        before = self.log_len(role)
        time.sleep(seconds)
        assert self.log_len(role) == before, f"{role} signed while it must not"

    def wait_reachable(self, role: str, timeout: float = 120) -> dict[str, Any]:
        """Wait for SSH and a synced beacon node (a validator only signs with one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(role)
            if st and (st.get("beacon") or {}).get("reachable") and not st["beacon"].get("syncing"):
                return st
            time.sleep(1)
        raise AssertionError(f"{role} not reachable with a synced beacon node within {timeout:.0f}s")

    def fresh_backup(self, signer: str) -> dict[str, Any]:
        """Run the signer's backup timer's service now; return the replica the standby then holds."""
        before = (self.status(OTHER[signer]) or {}).get("newest_backup") or {}
        self.host(signer).exec(["systemctl", "start", "qp-slashing-backup.service"], timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            newest = (self.status(OTHER[signer]) or {}).get("newest_backup") or {}
            if newest.get("path") and newest.get("path") != before.get("path"):
                return newest
            time.sleep(1)
        raise AssertionError(f"no fresh replicated backup from {signer} arrived on {OTHER[signer]}")

    def journal(self, ctx: Context | None = None) -> dict[str, Any]:
        ctx = ctx or self.ctx
        doc = last_journal(journal_path(ctx.inventory.stack, PAIR, ctx.journal_dir))
        assert doc is not None
        return doc


def verify(lab: Lab, scenario: str, result: str, *, signer: str, gate_epoch: int | None = None) -> None:
    """Run the detector and the history check, record the matrix row, and require zero of both.

    `signer`: the host that signs now, or, when a scenario aborted with nobody signing, the host that
    signed last: its slashing-protection DB must hold every vote any host ever logged.
    """
    report = detector.scan(lab.key_hosts)
    hist = detector.check_history(lab.host(signer), lab.key_hosts, gate_epoch=gate_epoch,
                                  allowed=lab.gate_covered)
    lab.gate_covered |= {r.vote for r in hist.covered_by_gate}
    matrix.add(matrix.Row(scenario, result, report.double_signs, len(hist.lost), len(hist.covered_by_gate)))
    assert not report.findings, "double signs:\n" + "\n".join(str(f) for f in report.findings)
    assert report.records, "the detector saw no signatures at all: it would prove nothing"
    assert not hist.lost, f"{hist}: " + "; ".join(r.short() for r in hist.lost[:5])


def assert_exactly(lab: Lab, role: str) -> None:
    """`role` signs, the stack config says so, and the other host is stopped and locked."""
    assert lab.signers() == [role]
    assert lab.active_role() == role
    other = lab.status(OTHER[role])
    assert other is not None and ops.stopped_reasons(other) == []


def interrupt_at(prefix: str) -> Callable[[str], None]:
    """A report hook that raises KeyboardInterrupt at the first message starting with `prefix` (Ctrl-C)."""
    fired = []

    def report(msg: str) -> None:
        if not fired and msg.startswith(prefix):
            fired.append(msg)
            raise KeyboardInterrupt(f"simulated Ctrl-C at {msg!r}")

    return report


def signing_lab(root: Path, stack: str, octet: int) -> Iterator[Lab]:
    """A whole lab whose primary signs (first start); torn down when the caller's fixture ends."""
    with running_lab(stack, octet, root, clock=CLOCK, log=lambda _msg: None) as (dep, session):
        ctx = operator_context(session)
        ops.activate(ctx, PAIR, first_start=True)
        handle = Lab(dep, session, ctx)
        handle.wait_signs("primary", after=0)
        yield handle


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the module; the primary signs (first start) when the first scenario begins."""
    yield from signing_lab(tmp_path_factory.mktemp("fm-fault-lab"), STACK, OCTET)


# -- the primary signs --------------------------------------------------------------------------------

def test_activate_refused_while_other_host_signs(lab: Lab) -> None:
    """Stack config (edited by hand, wrongly) names the backup while the primary signs: activate refuses."""
    assert lab.signers() == ["primary"]
    write_active(lab.ctx.config_file, PAIR, "backup", stack=STACK, use_pulumi=False)
    try:
        # Even with --first-start (the backup has no history yet) the fresh peer check refuses.
        with pytest.raises(QpoolError, match="may still sign"):
            ops.activate(lab.ctx, PAIR, first_start=True)
    finally:
        write_active(lab.ctx.config_file, PAIR, "primary", stack=STACK, use_pulumi=False)
    backup = lab.status("backup")
    assert backup is not None and ops.stopped_reasons(backup) == [] and backup["oplock"] is None
    lab.assert_silent("backup")
    lab.wait_signs("primary")
    verify(lab, "activate while another host signs", "refused", signer="primary")


def test_backup_unreachable_aborts_before_touching_primary(lab: Lab) -> None:
    """The target cannot be reached: abort at detect; the primary keeps signing, unlocked."""
    lab.host("backup").cut_network()
    try:
        with pytest.raises(Unreachable):
            ops.failover(lab.ctx, PAIR)
        primary = lab.status("primary")
        assert primary is not None and ops.running(primary) and not primary["locked"]
        lab.wait_signs("primary")
    finally:
        lab.host("backup").restore_network()
    lab.wait_reachable("backup")
    # The aborted attempt left an empty journal (no step done); the next failover resumes it harmlessly.
    assert not any(step.get("done") for step in lab.journal()["steps"].values())
    verify(lab, "backup unreachable", "aborted before stop; primary signs", signer="primary")


def test_clean_failover(lab: Lab) -> None:
    """Primary reachable: stopped, locked, history exported and imported, backup started."""
    before = lab.log_len("backup")
    result = ops.failover(lab.ctx, PAIR)
    assert result["changed"] and result["mode"] == "clean"
    assert_exactly(lab, "backup")
    assert "failover" in (lab.status("primary") or {}).get("lock_reason", "")
    lab.wait_signs("backup", after=before)
    lab.assert_silent("primary")
    verify(lab, "clean failover", "backup signs", signer="backup")


def test_rerun_after_success_is_noop(lab: Lab) -> None:
    journal_before = lab.journal()
    result = ops.failover(lab.ctx, PAIR)
    assert result == {"changed": False, "active": lab.record("backup").name}
    assert lab.journal() == journal_before
    assert_exactly(lab, "backup")
    verify(lab, "re-run after success", "no-op", signer="backup")


def test_old_primary_rebooted_stays_locked(lab: Lab) -> None:
    """A reboot re-arms the lock and never starts the validator (stack config still says backup)."""
    lab.host("primary").reboot()
    st = lab.wait_reachable("primary")
    assert st["locked"] and ops.stopped_reasons(st) == []
    lab.assert_silent("primary")
    assert_exactly(lab, "backup")
    lab.wait_signs("backup")
    verify(lab, "old primary rebooted", "locked, inactive", signer="backup")


def test_bootstrap_rerun_starts_nothing(lab: Lab) -> None:
    """Every recorded bootstrap Command of both key hosts, re-run (as a spurious `pulumi up` diff would).

    On the signing host `qp-import-keys` refuses (the lock is absent): importing keys next to a running
    signer is exactly what it must never do, so the refusal is right; the steps after it are run anyway.
    """
    commands = _commands_by_host(lab.dep.run)
    standby, active = lab.record("primary").name, lab.record("backup").name
    run_bootstrap(lab.dep, standby, commands[standby], log=lambda _m: None)
    with pytest.raises(LabError, match="import-keys") as refused:
        run_bootstrap(lab.dep, active, commands[active], log=lambda _m: None)
    assert "REFUSING" in str(refused.value)
    names = [c.name for c in commands[active]]
    run_bootstrap(lab.dep, active, commands[active][names.index(f"{active}-import-keys") + 1:],
                  log=lambda _m: None)
    lab.wait_reachable("primary")
    lab.wait_reachable("backup")
    assert_exactly(lab, "backup")
    lab.wait_signs("backup")
    lab.assert_silent("primary")
    verify(lab, "bootstrap re-run after failover", "nothing started; import-keys refused on signer",
           signer="backup")


def test_failback(lab: Lab) -> None:
    before = lab.log_len("primary")
    result = ops.failover(lab.ctx, PAIR, to_role="primary")
    assert result["changed"] and result["mode"] == "clean"
    assert_exactly(lab, "primary")
    lab.wait_signs("primary", after=before)
    verify(lab, "failback (--to primary)", "primary signs", signer="primary")


def test_two_concurrent_failovers(lab: Lab) -> None:
    """Run 1 holds the target's operation lock (paused at its prompt); run 2 from the same machine and
    run 3 from another machine are both refused; run 1 then completes."""
    entered, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def confirm(_msg: str) -> bool:
        entered.set()
        return release.wait(60)

    first = lab.context(confirm=confirm)

    def run_first() -> None:
        try:
            outcome["result"] = ops.failover(first, PAIR)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert entered.wait(60), f"run 1 never reached its prompt: {outcome}"
        with pytest.raises(QpoolError, match="another qpool process on this machine"):
            ops.failover(lab.context(), PAIR)
        other_machine = lab.context()
        other_machine.journal_dir = lab.dep.state_dir / "other-operator"
        with pytest.raises(Refused, match="another qpool operation holds this host"):
            ops.failover(other_machine, PAIR)
        assert lab.signers() == ["primary"]
    finally:
        release.set()
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["changed"]
    assert_exactly(lab, "backup")
    lab.wait_signs("backup")
    verify(lab, "two concurrent failovers", "one proceeded, two refused", signer="backup")


def test_hung_validator_is_force_stopped(lab: Lab) -> None:
    """The signer's duty loop hangs (main thread ptrace-stopped, metrics still answer): the graceful stop
    times out, the validator is killed, verified stopped, and only then does the other host start."""
    st = lab.status("backup")
    assert st is not None and ops.running(st)
    hang = Hang(operator_pid(lab.host("backup"), st["processes"][0]))
    lab.assert_silent("backup")
    before = lab.log_len("primary")
    result = ops.failover(lab.ctx, PAIR, to_role="primary")
    assert result["changed"]
    stop = lab.journal()["steps"]["stop"]["data"]
    assert stop == {"graceful": False, "forced": True}
    assert hang.died.wait(10)
    assert_exactly(lab, "primary")
    lab.wait_signs("primary", after=before)
    verify(lab, "signer hung (ptrace-stopped)", "forced stop, verified; primary signs", signer="primary")


@pytest.mark.parametrize("step", range(1, 8))
def test_killed_at_step_then_resumed(lab: Lab, step: int) -> None:
    """Ctrl-C when step N begins; at most one signer meanwhile; the same command resumes and completes."""
    source = lab.active_role()
    target = OTHER[source]
    before = lab.log_len(target)
    with pytest.raises(KeyboardInterrupt):
        ops.failover(lab.context(report=interrupt_at(f"[{step}/7]")), PAIR, to_role=target)
    signing = lab.signers()
    assert len(signing) <= 1
    expected_now = [target] if step == 7 else ([source] if step <= 2 else [])
    assert signing == expected_now, f"interrupted at step {step}: {signing} signing"
    assert not lab.journal()["completed"]
    result = ops.failover(lab.ctx, PAIR, to_role=target)
    assert result["changed"] and result["run_id"] == lab.journal()["run_id"]
    assert_exactly(lab, target)
    lab.wait_signs(target, after=before)
    verify(lab, f"killed at step {step}/7, re-run", f"resumed; {target} signs", signer=target)


def _flip(data: bytes) -> bytes:
    """One byte changed in the middle of the document (still plausible JSON length, wrong content)."""
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def test_export_corrupted_in_transit(lab: Lab) -> None:
    """The export's bytes change on the way to the operator: sha mismatch, abort, nothing started."""
    source = lab.active_role()
    target = OTHER[source]
    ctx = lab.context()
    real_run = ctx.ssh.run

    def corrupting_run(host: HostRecord, command: str, **kw: Any) -> RemoteResult:
        res = real_run(host, command, **kw)
        if "export-slashing" in command:
            return RemoteResult(res.rc, _flip(res.stdout), res.stderr)
        return res

    ctx.ssh.run = corrupting_run  # type: ignore[method-assign]
    with pytest.raises(QpoolError, match="corrupted in transit"):
        ops.failover(ctx, PAIR, to_role=target)
    assert lab.signers() == []
    tgt = lab.status(target)
    assert tgt is not None and tgt["locked"] and ops.stopped_reasons(tgt) == []
    verify(lab, "export corrupted in transit", "detected (sha256), aborted, nobody started", signer=source)
    before = lab.log_len(target)
    assert ops.failover(lab.ctx, PAIR, to_role=target)["changed"]
    assert_exactly(lab, target)
    lab.wait_signs(target, after=before)
    verify(lab, "  ... then re-run", f"resumed; {target} signs", signer=target)


def test_import_corrupted_before_target(lab: Lab) -> None:
    """The file changes between the operator and the target's import: the target refuses it."""
    source = lab.active_role()
    target = OTHER[source]
    ctx = lab.context()
    real_ctl = ctx.ssh.ctl

    def corrupting_ctl(host: HostRecord, *args: str, input: bytes | None = None, **kw: Any) -> dict[str, Any]:
        if args and args[0] == "import-slashing" and input is not None:
            input = _flip(input)
        return real_ctl(host, *args, input=input, **kw)

    ctx.ssh.ctl = corrupting_ctl  # type: ignore[method-assign]
    with pytest.raises(Refused, match="checksum mismatch"):
        ops.failover(ctx, PAIR, to_role=target)
    assert lab.signers() == []
    tgt = lab.status(target)
    assert tgt is not None and tgt["locked"] and ops.stopped_reasons(tgt) == []
    verify(lab, "import corrupted in transit", "refused by target (sha256), nobody started", signer=source)
    before = lab.log_len(target)
    assert ops.failover(lab.ctx, PAIR, to_role=target)["changed"]
    assert_exactly(lab, target)
    lab.wait_signs(target, after=before)
    verify(lab, "  ... then re-run", f"resumed; {target} signs", signer=target)


# -- fenced paths (the source cannot be reached) -------------------------------------------------------

def _fenced_failover(lab: Lab, source: str) -> tuple[int, list[detector.Signed]]:
    """Fail over away from an unreachable `source`; returns the gate epoch and the target's new votes."""
    target = OTHER[source]
    before = lab.log_len(target)
    result = ops.failover(lab.ctx, PAIR, to_role=target)
    assert result["changed"] and result["mode"] == "fenced"
    journal = lab.journal()
    assert journal["steps"]["move-history"]["data"]["source"] == "replica"
    assert journal["steps"]["epoch-gate"]["data"]["overridden"] is False
    # The gate recomputed here from the lab's own chain clock and the journalled fence time (the later of the
    # operator's and the target's clock at the fence), independently of what qpool journalled as its gate.
    clock = {"genesis_time": CLOCK.genesis_time, "seconds_per_slot": CLOCK.slot_seconds,
             "slots_per_epoch": CLOCK.slots_per_epoch}
    stop = journal["steps"]["stop"]["data"]
    gate_epoch, _ = ops.epoch_gate(clock, max(stop["fenced_at"], stop.get("target_time_at_fence") or 0))
    assert not lab.host(source).is_running(), "the fence must really power the source off"
    assert lab.signers() == [target] and lab.active_role() == target
    new = lab.wait_signs(target, after=before)
    assert min(r.target_epoch for r in new) >= gate_epoch, "the target signed before the epoch gate"
    return gate_epoch, new


def _power_back_on(lab: Lab, role: str) -> None:
    """After a fence: network back, power on; the host must come up locked and not signing."""
    host = lab.host(role)
    host.restore_network()
    host.power_on()
    st = lab.wait_reachable(role)
    assert st["locked"] and ops.stopped_reasons(st) == []


def test_network_cut_fenced(lab: Lab) -> None:
    """The signer's cable is cut (it keeps signing, unseen): fence via the Hetzner API, newest replica,
    epoch gate waited out, then start."""
    source = lab.active_role()
    lab.fresh_backup(source)
    lab.host(source).cut_network()
    gate_epoch, _ = _fenced_failover(lab, source)
    verify(lab, "signer's network cut", "fenced, replica, epoch gate; other signs", signer=OTHER[source],
           gate_epoch=gate_epoch)
    _power_back_on(lab, source)
    lab.assert_silent(source)


def test_power_off_fenced(lab: Lab) -> None:
    """The signer loses power: fence (already off), replica, epoch gate, start."""
    source = lab.active_role()
    lab.fresh_backup(source)
    lab.host(source).power_off(hard=True)
    gate_epoch, _ = _fenced_failover(lab, source)
    verify(lab, "signer powered off", "fenced, replica, epoch gate; other signs", signer=OTHER[source],
           gate_epoch=gate_epoch)
    _power_back_on(lab, source)
    lab.assert_silent(source)


def test_failback_after_fence(lab: Lab) -> None:
    """The fenced host, powered on again, takes over cleanly with the full history."""
    target = OTHER[lab.active_role()]
    before = lab.log_len(target)
    assert ops.failover(lab.ctx, PAIR, to_role=target)["changed"]
    assert_exactly(lab, target)
    lab.wait_signs(target, after=before)
    verify(lab, "failback after fenced failover", f"{target} signs", signer=target)


def test_module_leaves_one_signer(lab: Lab) -> None:
    """Whole-run check over everything every host ever signed in this module."""
    report = detector.scan(lab.key_hosts)
    assert report.findings == []
    hosts_signed = {r.host for r in report.records}
    assert len(hosts_signed) == 2, "both hosts signed at some point: the matrix exercised both directions"
