"""The fault-matrix harness (issue 6, issue 12): a signing lab, its checks, and the rows two modules share.

Why a module of its own: the matrix's rows run on several labs at once (tests/failover/test_fault_matrix.py,
test_fault_matrix_fenced.py, test_fault_matrix_safety.py; each module has its own stack name, hence its own
kernel object names, subnet and state root, and runs on its own pytest-xdist worker), and they all assert with
the same helpers: `verify` (the independent double-sign detector plus the history check), `assert_exactly`
(one signer, the stack config names it, the other host stopped and locked), and the fenced path's checks.

The lab's chain clock is short (1 s slots, 4-slot epochs) so the fenced path's epoch gate is waited out for
real, as in production, in about 12 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.deploy import LabClock, LabDeployment
from lab.hosts import LabHost
from lab.session import LabSession
from lab.testing import operator_context, running_lab
from qpool import operations as ops
from qpool.inventory import HostRecord
from qpool.journal import journal_path, last_journal
from qpool.operations import Context
from qpool.remote import Unreachable
from qpool.stackfile import read_active

from . import detector, matrix

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
        # A run already under way (activate queues one) would absorb this start and return its older copy:
        # wait for it to end, so the run started here copies the history as it is now.
        wait_for_unit_idle(self.host(signer), "qp-slashing-backup.service")
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


def wait_for_unit_idle(host: LabHost, unit: str, timeout: float = 120) -> None:
    """Wait until a oneshot unit is not running (a start issued now then begins a run of its own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = host.exec(["systemctl", "is-active", unit]).stdout.decode().strip()
        if state not in ("activating", "deactivating", "reloading"):
            return
        time.sleep(1)
    raise AssertionError(f"{unit} still running on {host.name} after {timeout:.0f}s")


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


def killed_at_step_then_resumed(lab: Lab, step: int) -> None:
    """Ctrl-C when step N begins; at most one signer meanwhile; the same command resumes and completes.

    Direction-free (from whoever signs to the other host), so any module's lab can run any step's row."""
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


def assert_both_signed_never_double(lab: Lab) -> None:
    """Whole-run check over everything every host ever signed in one module's lab."""
    report = detector.scan(lab.key_hosts)
    assert report.findings == []
    hosts_signed = {r.host for r in report.records}
    assert len(hosts_signed) == 2, "both hosts signed at some point: the matrix exercised both directions"


def flip(data: bytes) -> bytes:
    """One byte changed in the middle of the document (still plausible JSON length, wrong content)."""
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def fenced_failover(lab: Lab, source: str) -> tuple[int, list[detector.Signed]]:
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


def power_back_on(lab: Lab, role: str) -> None:
    """After a fence: network back, power on; the host must come up locked and not signing."""
    host = lab.host(role)
    host.restore_network()
    host.power_on()
    st = lab.wait_reachable(role)
    assert st["locked"] and ops.stopped_reasons(st) == []
