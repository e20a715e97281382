"""The fault matrix for "exactly one signer" (issue 6), part 1: the clean paths, in one lab, in order.

Each scenario asserts its outcome (who signs, what was refused) and then runs the independent detector
(tests/failover/detector.py): no double or surround vote in any host's signing log, and no lost history
(the host that signs now holds every vote any host ever signed, except votes the fenced path's epoch gate
provably covers). One lab serves the whole module because every scenario leaves it in a known state:
exactly one signer, whose role the stack config names. The summary table prints at the end of the run (also
under pytest-xdist: tests/failover/conftest.py).

The matrix is split over two modules so its rows run on two labs at once (`make test` gives each module its own
worker): this one (stack `fmfault`) takes the refusals, the clean failover and failback, reboot, bootstrap
re-run, concurrent runs, the hung signer and Ctrl-C at steps 1-3; test_fault_matrix_fenced.py (stack
`fmfence`) takes Ctrl-C at steps 4-7, corrupted transfers and the fenced paths. The harness is matrix_lab.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lab.deploy import _commands_by_host, run_bootstrap
from lab.net import LabError
from lab.testing import lab_unavailable_reason
from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.remote import Refused, Unreachable
from qpool.stackfile import write_active

from .faults import Hang, operator_pid
from .matrix_lab import (
    PAIR,
    Lab,
    assert_both_signed_never_double,
    assert_exactly,
    killed_at_step_then_resumed,
    signing_lab,
    verify,
)

_SKIP = lab_unavailable_reason()
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

STACK = "fmfault"
OCTET = 33
#: Ctrl-C rows this module runs (the others are in test_fault_matrix_fenced.py): which steps go where only
#: balances the two labs' run times; every row is direction-free.
KILLED_AT_STEPS = (1, 2, 3)


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


@pytest.mark.parametrize("step", KILLED_AT_STEPS)
def test_killed_at_step_then_resumed(lab: Lab, step: int) -> None:
    killed_at_step_then_resumed(lab, step)


def test_module_leaves_one_signer(lab: Lab) -> None:
    """Whole-run check over everything every host ever signed in this module."""
    assert_both_signed_never_double(lab)
