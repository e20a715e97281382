"""Fault-matrix row (issue 12 item 2): a key moved from pair p1 to pair p2 in the key bundle, in a two-pair lab.

p1's primary signs keys K and M. The operator moves M from p1's directory to p2's in `validatorKeys` and applies
(`qpool lab apply`, the lab's `pulumi up`): p2's hosts (locked) import M, p1's standby (locked) drops it, and p1's
signer refuses the change loudly (its wallet cannot change while it is unlocked): the apply fails naming it,
and p1's signer keeps signing M. Then:

- `qpool activate --pair p2` (also with `--first-start`, what a new pair's first start uses) is refused while
  p1's signer holds M (`qpool/key_ownership.py`); nothing starts on p2;
- the documented recovery (docs/runbooks/activate.md, "A key moved between pairs"): fail p1 over to its
  standby (which no longer holds M), apply again (now removes M from p1's old signer, locked), carry M's
  slashing history from p1 to p2's target (EIP-3076 export of that one key, import on the stopped, locked
  target: the runbook's manual step), then `qpool activate --pair p2` starts p2, which signs M from then on.
  Before that carry, `qpool activate --pair p2` (and `--first-start`) is refused naming p1's copy of M's
  history (`qpool/history_coverage.py`, copies of the target's keys held by other pairs).

Checked after the refusal and at the end with the independent double-sign detector over all four key hosts of
both pairs (a key signed in two pairs is exactly what it must catch) and a history check per signer: every
vote any host ever logged for a key the signer holds is in the signer's slashing-protection DB.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.apply import ApplyError, apply
from lab.state import LabState
from lab.testing import lab_unavailable_reason, operator_context, running_lab
from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.inventory import HostRecord

from . import detector, matrix
from .matrix_lab import CLOCK, PAIR, SIGN_TIMEOUT, Lab, assert_exactly

_SKIP = lab_unavailable_reason()
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

STACK = "fmkeymove"
OCTET = 38
P2 = "p2"


def _add_p2(config: dict[str, Any]) -> None:
    """A second pair like the first, on the next two addresses of the lab's subnet; its primary active."""
    pair = copy.deepcopy(config["quantapool:validatorPairs"][0])
    pair["name"] = P2
    pair["active"] = "primary"
    pair["primary"]["privateIp"] = f"10.42.{OCTET}.13"
    pair["backup"]["privateIp"] = f"10.42.{OCTET}.14"
    config["quantapool:validatorPairs"].append(pair)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two pairs; p1's primary signs (first start), p2's hosts run their clients, locked."""
    root = tmp_path_factory.mktemp("fm-keymove-lab")
    with running_lab(STACK, OCTET, root, clock=CLOCK, log=lambda _msg: None, mutate=_add_p2) as (dep, session):
        ctx = operator_context(session)
        ops.activate(ctx, PAIR, first_start=True)
        handle = Lab(dep, session, ctx)
        handle.wait_signs("primary", after=0)
        yield handle


def _norm(key: str) -> str:
    return key.lower().removeprefix("0x")


def _host(lab: Lab, pair: str, role: str) -> HostRecord:
    return next(h for h in lab.ctx.inventory.pair_hosts(pair) if h.role == role)


def _all_key_hosts(lab: Lab) -> list[HostRecord]:
    return [h for pair in (PAIR, P2) for h in lab.ctx.inventory.pair_hosts(pair)]


def _wallet(lab: Lab, host: HostRecord) -> set[str]:
    keys = (lab.ctx.ssh.status(host).get("wallet") or {}).get("pubkeys")
    assert keys is not None, f"{host.name}: wallet cannot be listed"
    return {_norm(k) for k in keys}


def _wait_signs_key(lab: Lab, host: HostRecord, key: str, after: int) -> list[detector.Signed]:
    """Wait until `host` logged a vote of `key` past its first `after` records (each key has a duty per epoch)."""
    deadline = time.monotonic() + SIGN_TIMEOUT
    while time.monotonic() < deadline:
        new = detector.read_signing_log(lab.dep.hosts[host.name])[after:]
        if any(_norm(r.pubkey) == key for r in new):
            return new
        time.sleep(0.5)
    raise AssertionError(f"{host.name} did not sign {key[:12]}... within {SIGN_TIMEOUT:.0f}s")


def _verify(lab: Lab, scenario: str, result: str, signers: list[HostRecord]) -> detector.Report:
    """The independent double-sign detector over every key host of both pairs, and per signer the history of
    every key it holds (any host's log) in its own DB; the row goes into the matrix table."""
    hosts = [lab.dep.hosts[h.name] for h in _all_key_hosts(lab)]
    report = detector.scan(hosts)
    lost: list[detector.Signed] = []
    for signer in signers:
        held = _wallet(lab, signer)
        db = {(_norm(p), s, t) for p, s, t in detector.read_db_votes(lab.dep.hosts[signer.name])}
        lost += [r for r in report.records if _norm(r.pubkey) in held
                 and (_norm(r.pubkey), r.source_epoch, r.target_epoch) not in db]
    matrix.add(matrix.Row(scenario, result, report.double_signs, len(lost)))
    assert not report.findings, "double signs:\n" + "\n".join(str(f) for f in report.findings)
    assert report.records, "the detector saw no signatures at all: it would prove nothing"
    assert not lost, "; ".join(r.short() for r in lost[:5])
    return report


def _apply(lab: Lab, tmp_path: Path, log: list[str]) -> Any:
    """`pulumi up` of the stack file as qpool keeps it (failover records the active host there)."""
    config = tmp_path / f"Pulumi.{STACK}.yaml"
    shutil.copyfile(lab.ctx.config_file, config)
    return apply(lab.dep, config, log=log.append, session=lab.session)


def _carry_history(lab: Lab, source: HostRecord, target: HostRecord, key: str) -> int:
    """The runbook's manual step: EIP-3076 export on the stopped, locked old holder, only `key`'s entries,
    imported on the stopped, locked new target. Returns the number of attestations carried."""
    data, _sha = lab.ctx.ssh.export_bytes(source, "export-slashing")
    doc = json.loads(data)
    doc["data"] = [entry for entry in doc["data"] if _norm(entry["pubkey"]) == key]
    assert len(doc["data"]) == 1 and doc["data"][0]["signed_attestations"], "no history of the moved key on p1"
    one = json.dumps(doc).encode()
    lab.ctx.ssh.ctl(target, "import-slashing", "--sha256", hashlib.sha256(one).hexdigest(), input=one, timeout=300)
    return len(doc["data"][0]["signed_attestations"])


def test_key_moved_to_another_pair_start_refused_while_the_old_signer_holds_it(lab: Lab, tmp_path: Path) -> None:
    state = LabState(lab.dep.state_dir)
    p1_keys, p2_keys = [_norm(k) for k in state.pair_pubkeys(PAIR)], [_norm(k) for k in state.pair_pubkeys(P2)]
    assert len(p1_keys) == 2 and not set(p1_keys) & set(p2_keys)
    moved, kept = p1_keys[-1], p1_keys[0]
    p1_primary, p1_backup = _host(lab, PAIR, "primary"), _host(lab, PAIR, "backup")
    p2_primary, p2_backup = _host(lab, P2, "primary"), _host(lab, P2, "backup")
    _wait_signs_key(lab, p1_primary, moved, after=0)

    # -- the move, applied: p2 imports M (locked), p1's standby drops it, p1's signer refuses loudly ----------
    state.move_key(moved, PAIR, P2)
    log: list[str] = []
    with pytest.raises(ApplyError) as failed:
        _apply(lab, tmp_path, log)
    assert f"{p1_primary.name}: step import-keys" in str(failed.value), str(failed.value) + "\n" + "\n".join(log)
    assert "REFUSING" in str(failed.value)
    assert _wallet(lab, p1_primary) == {kept, moved}, "the signer's wallet changed while it was unlocked"
    assert _wallet(lab, p1_backup) == {kept}
    assert _wallet(lab, p2_primary) == _wallet(lab, p2_backup) == {*p2_keys, moved}

    # -- p2 may not start while p1's signer holds M ---------------------------------------------------------
    before = len(detector.read_signing_log(lab.dep.hosts[p1_primary.name]))
    for first_start in (True, False):
        with pytest.raises(QpoolError, match=rf"{p1_primary.name} \(pair {PAIR}\) holds 1 of {p2_primary.name}'s"
                                             r" key\(s\) .* and may sign"):
            ops.activate(lab.ctx, P2, first_start=first_start)
    for host in (p2_primary, p2_backup):
        st = lab.ctx.ssh.status(host)
        assert not ops.running(st) and st["locked"], host.name
        assert detector.read_signing_log(lab.dep.hosts[host.name]) == [], f"{host.name} signed"
    _wait_signs_key(lab, p1_primary, moved, after=before)  # p1's signer still signs M: nothing was disturbed
    _verify(lab, "key moved p1 -> p2, start of p2", "refused while p1's signer holds it", [p1_primary])

    # -- the documented recovery ----------------------------------------------------------------------------
    before = len(detector.read_signing_log(lab.dep.hosts[p1_backup.name]))
    assert ops.failover(lab.ctx, PAIR, to_role="backup")["changed"]
    assert_exactly(lab, "backup")
    new = lab.wait_signs("backup", after=before)
    assert {_norm(r.pubkey) for r in new} <= {kept}, "p1's new signer signed a key it no longer holds"
    _apply(lab, tmp_path, log)  # the failed step again: p1's old signer is locked now, M leaves its wallet
    assert _wallet(lab, p1_primary) == {kept}
    # p2's target lacks M's history, which only p1's copies hold (p1's old signer's DB, p1's replicas on the
    # monitoring server): the start is refused naming that copy and the one-key carry, --first-start too.
    for first_start in (True, False):
        with pytest.raises(QpoolError, match=rf"of {PAIR}'s host .*key moved from another pair\).*A key moved "
                                             "between pairs"):
            ops.activate(lab.ctx, P2, first_start=first_start)
    for host in (p2_primary, p2_backup):
        assert not ops.running(lab.ctx.ssh.status(host)), host.name
    carried = _carry_history(lab, p1_primary, p2_primary, moved)
    before = len(detector.read_signing_log(lab.dep.hosts[p2_primary.name]))
    assert ops.activate(lab.ctx, P2)["changed"]
    new = _wait_signs_key(lab, p2_primary, moved, after=before)
    last_on_p1 = max(r.target_epoch for r in detector.read_signing_log(lab.dep.hosts[p1_primary.name])
                     if _norm(r.pubkey) == moved)
    assert min(r.target_epoch for r in new if _norm(r.pubkey) == moved) > last_on_p1
    report = _verify(lab, "key moved p1 -> p2, recovery", f"p1 failed over, M removed, {carried} votes carried; "
                     "p2 signs M", [p1_backup, p2_primary])
    signers_of_moved = {r.host for r in report.records if _norm(r.pubkey) == moved}
    assert signers_of_moved == {p1_primary.name, p2_primary.name}, signers_of_moved
