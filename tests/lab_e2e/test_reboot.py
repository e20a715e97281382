"""A reboot of the signing primary leaves its validator LOCKED (issue 5, DESIGN.md's safety model).

Why it matters: after an unplanned reboot nobody has re-checked the peer, so the host must not resume
signing on its own; `qp-validator-lock.service` re-arms the lock at every boot and the validator unit has no
[Install] section. Here the primary really signs first (qpool's own `activate`), then reboots from inside
(systemd-nspawn relaunches it on the same disk, like a VM reboot), and must come back with clients running
and the validator locked and stopped, while the backup stays locked throughout.

A fast stand-in chain clock (2 s slots, 4-slot epochs) makes the two keys' duties come round every few
seconds, so "it signs" is observed quickly; nothing here asserts a duration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from cloud_init.key_host import LOCK_FILE, VALIDATOR_DIR
from core import ports
from lab.deploy import LabClock, LabDeployment
from lab.testing import operator_context
from qpool.operations import activate
from qpool.status import pair_status

from .conftest import LAB_MARKS, Lab, ctl_status, module_lab, one_host, out, sh, wait_for

pytestmark = LAB_MARKS

CLOCK_SLOT_SECONDS = 2.0
SLOTS_PER_EPOCH = 4
SIGNING_LOG = f"{VALIDATOR_DIR}/signing-log.jsonl"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    clock = LabClock(slot_seconds=CLOCK_SLOT_SECONDS, slots_per_epoch=SLOTS_PER_EPOCH)
    yield from module_lab("e2ereboot", 23, tmp_path_factory.mktemp("e2ereboot"), clock=clock)


def _signatures(dep: LabDeployment, host: str) -> int:
    """Lines in the stand-in validator's signing log (one per signed attestation); 0 before the first."""
    proc = sh(dep, host, f"sudo cat {SIGNING_LOG}")
    if proc.returncode != 0:
        return 0
    return len([ln for ln in proc.stdout.decode().splitlines() if ln.strip()])


def _boot_id(dep: LabDeployment, host: str) -> str:
    return out(dep, host, "cat /proc/sys/kernel/random/boot_id").strip()


def _assert_locked_and_stopped(dep: LabDeployment, host: str) -> None:
    st = ctl_status(dep, host)
    assert st["locked"] is True, f"{host}: lock file absent: {st}"
    assert st["unit"]["active"] in ("inactive", "failed"), f"{host}: unit {st['unit']}"
    assert st["processes"] == [], f"{host}: validator processes {st['processes']}"
    assert st["metrics_port_open"] is False, f"{host}: validator metrics port answers"
    assert sh(dep, host, "pgrep -u qp-validator").returncode == 1, f"{host}: a qp-validator process runs"


def test_rebooted_primary_comes_back_locked(lab: Lab) -> None:
    dep, session = lab
    primary, backup = one_host(dep, "primary"), one_host(dep, "backup")
    pair = dep.spec(primary).pair
    assert pair is not None
    ctx = operator_context(session)

    # Before: both locked (fresh bootstrap), then qpool activates the configured active host, the primary.
    _assert_locked_and_stopped(dep, primary)
    _assert_locked_and_stopped(dep, backup)
    result = activate(ctx, pair, first_start=True)
    assert result == {"target": primary, "changed": True}
    assert sh(dep, primary, f"test -e {LOCK_FILE}").returncode == 1, "activate left the primary locked"
    first = wait_for("the primary's first signature", lambda: _signatures(dep, primary), timeout=120)
    wait_for("the primary's signing log to grow", lambda: _signatures(dep, primary) > first, timeout=120)
    status = pair_status(ctx, pair)
    assert status["signers"] == [primary] and not status["double_signer_risk"], status
    mon = one_host(dep, "monitoring")
    url = f"http://{dep.spec(primary).private_ip}:{ports.NODE_EXPORTER}/metrics"
    wait_for(f"{primary}: quantapool_validator_locked 0 while signing", lambda: "\nquantapool_validator_locked 0" in
             out(dep, mon, f"curl -sf {url}"), timeout=60)
    _assert_locked_and_stopped(dep, backup)

    # Reboot from inside, as an unattended kernel update or an operator's `reboot` would.
    old_boot = _boot_id(dep, primary)
    dep.host(primary).reboot()
    wait_for(f"{primary} to answer SSH after the reboot", lambda: sh(dep, primary, "true").returncode == 0,
             timeout=120)
    assert _boot_id(dep, primary) != old_boot, "the host did not reboot"
    wait_for(f"{primary}: systemd finished booting", lambda: out(
        dep, primary, "systemctl is-system-running || true").strip() in ("running", "degraded"), timeout=120)

    # After: locked by this boot, validator stopped, clients back.
    lock = out(dep, primary, f"cat {LOCK_FILE}")
    assert "re-armed at boot" in lock and _boot_id(dep, primary) in lock, lock
    _assert_locked_and_stopped(dep, primary)
    wait_for(f"{primary}: execution and beacon active again", lambda: out(
        dep, primary, "systemctl is-active qp-execution qp-beacon || true").split() == ["active", "active"])
    wait_for(f"{primary}: beacon healthy again", lambda: out(
        dep, primary, f"curl -s -o /dev/null -w '%{{http_code}}' "
                      f"http://127.0.0.1:{ports.BEACON_REST}/qrl/v1/node/health || true").strip() == "200")
    # What monitoring sees: the node exporter's textfile says locked again after the reboot.
    wait_for(f"{primary}: quantapool_validator_locked 1 after the reboot", lambda: "\nquantapool_validator_locked 1" in
             out(dep, mon, f"curl -sf {url}"), timeout=60)
    # No signature after the reboot: every key has a duty each epoch, so two epochs of head slots without a
    # new line in the signing log mean nothing signed (observed by chain slots, not by wall-clock time).
    signed = _signatures(dep, primary)
    head = int(ctl_status(dep, primary)["beacon"]["head_slot"])
    wait_for("two epochs of beacon head slots", lambda: int(
        ctl_status(dep, primary)["beacon"]["head_slot"] or 0) >= head + 2 * SLOTS_PER_EPOCH, timeout=120)
    assert _signatures(dep, primary) == signed, "the rebooted primary signed while locked"
    # Nothing restarted it meanwhile (e.g. a Restart= loop or a timer): still stopped once the host settled.
    _assert_locked_and_stopped(dep, primary)
    _assert_locked_and_stopped(dep, backup)
    status = pair_status(ctx, pair)
    assert status["signers"] == [], json.dumps(status, indent=1)
