"""Issue 12 items 1+2: a key moved from pair p1 to pair p2 carries its history in p1's copies (p1's hosts'
DBs, p1's replicas on the monitoring server), which p2's own copies never include. Every start of p2 also
counts those copies, filtered to the target's keys; p1's other keys never count against p2.

Two pairs on test_history_coverage's PairSsh (monitoring server with list-replicas/read-replica, conversion on
the target) and test_key_ownership's p2 hosts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from qpool import interchange as ic
from qpool import operations as ops
from qpool.errors import QpoolError

from .safety_support import make_ctx
from .test_history_coverage import MON, PairSsh
from .test_key_ownership import MOVED, P2_BACKUP, P2_PRIMARY
from .test_operations_guards import BACKUP, GVR, KEY, PRIMARY, running_status, stopped_status


def history(**votes: list[tuple[int, int]]) -> bytes:
    """EIP-3076 with attestations per key: history(kept=[(1, 2)], moved=[(2, 3)])."""
    names = {"kept": KEY, "moved": MOVED}
    return json.dumps({"metadata": {"interchange_format_version": "5", "genesis_validators_root": GVR},
                       "data": [{"pubkey": names[k], "signed_blocks": [],
                                 "signed_attestations": [{"source_epoch": str(s), "target_epoch": str(t)}
                                                         for s, t in v]} for k, v in votes.items()]}).encode()


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    """p1 failed over after the move: its backup signs KEY only, its old primary is stopped and locked and its
    DB holds MOVED's history up to target epoch 3 (as does its replica on the monitoring server). p2: both
    hosts stopped and locked, wallet [MOVED], never started (no DB)."""
    context = make_ctx(tmp_path, monkeypatch)
    hosts = {**context.inventory.hosts, P2_PRIMARY.name: P2_PRIMARY, P2_BACKUP.name: P2_BACKUP, MON.name: MON}
    context.inventory = dataclasses.replace(context.inventory, hosts=hosts)
    context.config_file.write_text("config:\n  quantapool:validatorPairs:\n    - name: p1\n      active: backup\n"
                                   "    - name: p2\n      active: primary\n")
    ssh = PairSsh({
        PRIMARY.name: stopped_status(wallet={"pubkeys": [KEY]}),
        BACKUP.name: running_status(wallet={"pubkeys": [KEY]}),
        P2_PRIMARY.name: stopped_status(db_present=False, wallet={"pubkeys": [MOVED]}),
        P2_BACKUP.name: stopped_status(db_present=False, wallet={"pubkeys": [MOVED]}),
    })
    ssh.history[PRIMARY.name] = history(kept=[(1, 2), (2, 3)], moved=[(1, 2), (2, 3)])
    ssh.private_ips.update({P2_PRIMARY.name: P2_PRIMARY.private_ip, P2_BACKUP.name: P2_BACKUP.private_ip})
    ssh.ship_to_monitoring("h-primary--20261201T0500Z.db", history(kept=[(1, 2), (2, 3)], moved=[(1, 2), (2, 3)]))
    context.ssh = ssh  # type: ignore[assignment]
    return context


def _ssh(ctx: ops.Context) -> PairSsh:
    return ctx.ssh  # type: ignore[return-value]


def _started(ctx: ops.Context) -> bool:
    return (P2_PRIMARY.name, "activate", "--run-id") in _ssh(ctx).calls


def _carry(ctx: ops.Context, votes: list[tuple[int, int]]) -> None:
    """The runbook's manual step: the moved key's entries only, imported on p2's target."""
    ssh = _ssh(ctx)
    ssh.statuses[P2_PRIMARY.name]["db_present"] = True  # type: ignore[index]
    ssh.history[P2_PRIMARY.name] = history(moved=votes)


def test_moved_keys_history_on_p1s_replica_refuses_p2_activate(ctx: ops.Context) -> None:
    _ssh(ctx).history[PRIMARY.name] = history(kept=[(1, 2)])  # p1's old signer's DB was lost; the replica remains
    said: list[str] = []
    ctx.report = said.append
    with pytest.raises(QpoolError) as refused:
        ops.activate(ctx, "p2")
    msg = str(refused.value)
    assert ("replica h-primary--20261201T0500Z.db of p1's host h-primary on the monitoring server h-mon (key moved "
            "from another pair)") in msg
    assert "A key moved between pairs" in msg and "export-slashing" in msg and "import-slashing" in msg
    assert "re-run with --first-start" not in msg
    assert not _started(ctx) and _ssh(ctx).oplock == {}
    assert any("h-backup (pair p1) is live" in m for m in said), "the live holder is reported, not read"
    assert (BACKUP.name, "export-slashing") not in _ssh(ctx).calls


def test_stopped_db_of_another_pair_refuses_when_newer(ctx: ops.Context) -> None:
    """The carry took an old export: p1's old signer's DB knows a newer vote of the moved key."""
    _ssh(ctx).history[PRIMARY.name] = history(kept=[(1, 2)], moved=[(1, 2), (2, 3), (3, 4)])
    _carry(ctx, [(1, 2), (2, 3)])
    with pytest.raises(QpoolError, match=r"the slashing-protection DB of p1's host h-primary \(stopped; key moved "
                                         r"from another pair\) holds newer .*target epoch 4 there, 3 on the target"):
        ops.activate(ctx, "p2")
    assert not _started(ctx)


def test_allowed_after_the_carry(ctx: ops.Context) -> None:
    _carry(ctx, [(1, 2), (2, 3)])
    said: list[str] = []
    ctx.report = said.append
    assert ops.activate(ctx, "p2")["changed"]
    assert any("2 of them held by other pairs" in m for m in said), said


def test_other_keys_of_p1_do_not_count_against_p2(ctx: ops.Context) -> None:
    """p1's kept key is far ahead everywhere; p2 holds only the moved key, whose history is covered."""
    ssh = _ssh(ctx)
    ssh.history[PRIMARY.name] = history(kept=[(1, 2), (8, 9)], moved=[(1, 2)])
    ssh.mon_files.clear()
    ssh.ship_to_monitoring("h-backup--20261201T0600Z.db", history(kept=[(8, 9), (9, 10)]))
    _carry(ctx, [(1, 2)])
    assert ops.activate(ctx, "p2")["changed"]


def test_first_start_refused_when_another_pair_holds_history_of_a_target_key(ctx: ops.Context) -> None:
    with pytest.raises(QpoolError, match=r"--first-start refused.*key moved from another pair.*A key moved between"):
        ops.activate(ctx, "p2", first_start=True)
    assert not _started(ctx)


def test_first_start_allowed_when_other_pairs_hold_only_their_own_keys(ctx: ops.Context) -> None:
    ssh = _ssh(ctx)
    ssh.history[PRIMARY.name] = history(kept=[(1, 2), (2, 3)])
    ssh.mon_files.clear()
    ssh.ship_to_monitoring("h-primary--20261201T0500Z.db", history(kept=[(1, 2), (2, 3)]))
    assert ops.activate(ctx, "p2", first_start=True)["changed"]


def test_single_pair_stack_reads_no_outside_copy(ctx: ops.Context) -> None:
    """The common case: no other key hosts, nothing of another pair is listed, read or exported."""
    from qpool import history_coverage as hc

    ctx.inventory = dataclasses.replace(ctx.inventory, hosts={h.name: h for h in (P2_PRIMARY, P2_BACKUP, MON)})
    assert hc.outside_copies(ctx, P2_PRIMARY, _ssh(ctx).status(P2_PRIMARY)) == []
    assert _ssh(ctx).calls == []


def test_history_only_keeps_the_given_keys() -> None:
    both = ic.parse(history(kept=[(1, 2)], moved=[(2, 3)]), "x")
    assert both.only([MOVED.upper().replace("0X", "0x")]).pubkeys == {MOVED}
    assert both.only([MOVED.removeprefix("0x")]).attestations == {MOVED: frozenset({(2, 3)})}
    assert both.only([]).pubkeys == frozenset()
