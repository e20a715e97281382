"""The fault matrix for "exactly one signer" (issue 6), part 2: Ctrl-C at the later steps, corrupted
transfers and the fenced paths, in a lab of its own (stack `fmfence`), in order.

The same checks as part 1 (test_fault_matrix.py; harness in matrix_lab.py): each row asserts its outcome and
then runs the independent double-sign detector and the history check. Its own stack name gives this lab its
own kernel object names (lab/deploy.py lab_name), subnet and state root, so it runs beside part 1's lab.
Every row here is direction-free: it fails over from whoever signs to the other host.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lab.testing import lab_unavailable_reason
from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.remote import Refused, RemoteResult

from .matrix_lab import (
    OTHER,
    PAIR,
    Lab,
    assert_both_signed_never_double,
    assert_exactly,
    fenced_failover,
    flip,
    killed_at_step_then_resumed,
    power_back_on,
    signing_lab,
    verify,
)

_SKIP = lab_unavailable_reason()
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

STACK = "fmfence"
OCTET = 34
#: Ctrl-C rows this module runs (steps 1-3 are in test_fault_matrix.py).
KILLED_AT_STEPS = (4, 5, 6, 7)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the module; the primary signs (first start) when the first scenario begins."""
    yield from signing_lab(tmp_path_factory.mktemp("fm-fence-lab"), STACK, OCTET)


@pytest.mark.parametrize("step", KILLED_AT_STEPS)
def test_killed_at_step_then_resumed(lab: Lab, step: int) -> None:
    killed_at_step_then_resumed(lab, step)


def test_export_corrupted_in_transit(lab: Lab) -> None:
    """The export's bytes change on the way to the operator: sha mismatch, abort, nothing started."""
    source = lab.active_role()
    target = OTHER[source]
    ctx = lab.context()
    real_run = ctx.ssh.run

    def corrupting_run(host: HostRecord, command: str, **kw: Any) -> RemoteResult:
        res = real_run(host, command, **kw)
        if "export-slashing" in command:
            return RemoteResult(res.rc, flip(res.stdout), res.stderr)
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
            input = flip(input)
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

def test_network_cut_fenced(lab: Lab) -> None:
    """The signer's cable is cut (it keeps signing, unseen): fence via the Hetzner API, newest replica,
    epoch gate waited out, then start."""
    source = lab.active_role()
    lab.fresh_backup(source)
    lab.host(source).cut_network()
    gate_epoch, _ = fenced_failover(lab, source)
    verify(lab, "signer's network cut", "fenced, replica, epoch gate; other signs", signer=OTHER[source],
           gate_epoch=gate_epoch)
    power_back_on(lab, source)
    lab.assert_silent(source)


def test_power_off_fenced(lab: Lab) -> None:
    """The signer loses power: fence (already off), replica, epoch gate, start."""
    source = lab.active_role()
    lab.fresh_backup(source)
    lab.host(source).power_off(hard=True)
    gate_epoch, _ = fenced_failover(lab, source)
    verify(lab, "signer powered off", "fenced, replica, epoch gate; other signs", signer=OTHER[source],
           gate_epoch=gate_epoch)
    power_back_on(lab, source)
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
    assert_both_signed_never_double(lab)
