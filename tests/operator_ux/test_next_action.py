"""`qpool status` ends with the next safe action per pair: the rules over hand-built status documents.

The documents have the shape `qpool.operations.pair_status` returns (the fields `qpool status --json` prints).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from qpool.next_action import MAX_BACKUP_AGE_SECONDS, format_next_actions, open_failover, pair_next_action

STACK = "testnet"


def host(name: str, role: str, *, active: bool, signing: bool = False, locked: bool | None = None,
         reachable: bool = True, db: bool = False, backup_age: float | None = None, fenced: bool | None = None,
         oplock: dict | None = None, beacon_syncing: bool = False) -> dict[str, Any]:
    if not reachable:
        return {"host": name, "role": role, "configured_active": active, "reachable": False, "error": "timeout",
                "fenced": fenced, "signing": None, "may_sign": None, "locked": None, "db_present": None,
                "unit": None, "processes": None, "metrics_port_open": None, "beacon": None, "execution": None,
                "slashing_backup": None, "oplock": None}
    locked = (not signing) if locked is None else locked
    return {"host": name, "role": role, "configured_active": active, "reachable": True, "error": None,
            "fenced": None, "signing": signing, "may_sign": signing, "locked": locked, "db_present": db,
            "unit": "active" if signing else "inactive", "processes": [4242] if signing else [],
            "metrics_port_open": signing,
            "beacon": {"reachable": True, "syncing": beacon_syncing, "head_slot": 100},
            "execution": {"reachable": True, "syncing": False, "block": 50},
            "slashing_backup": None if backup_age is None else {"path": "/x.db", "age_seconds": backup_age},
            "oplock": oplock}


def pair(primary: dict[str, Any], backup: dict[str, Any], *, journal: dict | None = None,
         name: str = "p1") -> dict[str, Any]:
    hosts = [primary, backup]
    live = [h for h in hosts if h["may_sign"]]
    return {"pair": name, "configured_active": "primary" if primary["configured_active"] else "backup",
            "signers": [h["host"] for h in hosts if h["signing"]], "hosts": hosts,
            "double_signer_risk": len(live) > 1, "open_failover": journal}


P, B = "qp-testnet-p1-primary", "qp-testnet-p1-backup"


def test_fresh_stack_without_history_suggests_first_start() -> None:
    action = pair_next_action(STACK, pair(host(P, "primary", active=True), host(B, "backup", active=False)))
    assert action.kind == "act"
    assert "qpool activate --stack testnet --pair p1 --first-start" in action.text


@pytest.mark.parametrize("where", ["primary-db", "backup-db", "backup-replica", "primary-replica"])
def test_first_start_is_never_suggested_when_any_history_exists(where: str) -> None:
    primary = host(P, "primary", active=True, db=where == "primary-db",
                   backup_age=60.0 if where == "primary-replica" else None)
    backup = host(B, "backup", active=False, db=where == "backup-db",
                  backup_age=60.0 if where == "backup-replica" else None)
    action = pair_next_action(STACK, pair(primary, backup))
    assert "--first-start" not in action.text
    if where == "primary-db":
        assert action.kind == "act" and "`qpool activate --stack testnet --pair p1`" in action.text
    else:  # history exists, but not on the host that would start: only the runbook
        assert action.kind == "investigate" and "docs/runbooks/activate.md" in action.text


def test_first_start_not_suggested_while_a_host_is_unreachable() -> None:
    doc = pair(host(P, "primary", active=True), host(B, "backup", active=False, reachable=False))
    action = pair_next_action(STACK, doc)
    assert "--first-start" not in action.text and action.kind == "investigate"


def test_healthy_pair() -> None:
    doc = pair(host(P, "primary", active=True, signing=True, db=True),
               host(B, "backup", active=False, db=True, backup_age=120.0))
    action = pair_next_action(STACK, doc)
    assert action.kind == "healthy" and P in action.text
    assert action.line().startswith("pair p1: healthy:")


def test_stale_or_missing_replica_is_reported() -> None:
    old = pair(host(P, "primary", active=True, signing=True, db=True),
               host(B, "backup", active=False, backup_age=MAX_BACKUP_AGE_SECONDS + 60))
    assert pair_next_action(STACK, old).kind == "investigate"
    assert "SlashingProtectionBackupTooOld" in pair_next_action(STACK, old).text
    none = pair(host(P, "primary", active=True, signing=True, db=True), host(B, "backup", active=False))
    assert "no replicated slashing-protection backup" in pair_next_action(STACK, none).text


def test_two_possible_signers_is_danger_and_suggests_no_command() -> None:
    doc = pair(host(P, "primary", active=True, signing=True, db=True),
               host(B, "backup", active=False, signing=True, db=True, backup_age=1.0))
    action = pair_next_action(STACK, doc)
    assert action.kind == "danger" and "qpool " not in action.text
    assert action.line().startswith("pair p1: DANGER:")


def test_open_failover_journal_says_resume_with_the_target_role() -> None:
    journal = {"run_id": "abc123", "source": P, "target": B, "steps_done": ["detect", "stop"]}
    doc = pair(host(P, "primary", active=True, db=True), host(B, "backup", active=False, db=True), journal=journal)
    action = pair_next_action(STACK, doc)
    assert action.kind == "act"
    assert "qpool failover --stack testnet --pair p1 --to backup" in action.text and "abc123" in action.text


def test_active_unreachable_and_nobody_signs_suggests_failover_to_the_other_role() -> None:
    doc = pair(host(P, "primary", active=False, db=True), host(B, "backup", active=True, reachable=False))
    action = pair_next_action(STACK, doc)
    assert action.kind == "act" and "qpool failover --stack testnet --pair p1 --to primary" in action.text


def test_standby_unreachable_while_active_signs() -> None:
    doc = pair(host(P, "primary", active=True, signing=True, db=True),
               host(B, "backup", active=False, reachable=False, fenced=True))
    action = pair_next_action(STACK, doc)
    assert action.kind == "investigate" and B in action.text and "failover" not in action.text.split(";")[0]


def test_signer_is_not_the_configured_active_host() -> None:
    doc = pair(host(P, "primary", active=True, db=True), host(B, "backup", active=False, signing=True, db=True))
    action = pair_next_action(STACK, doc)
    assert action.kind == "investigate" and "qpool activate" not in action.text


def test_lock_missing_on_a_stopped_host_is_not_activated() -> None:
    doc = pair(host(P, "primary", active=True, db=True), host(B, "backup", active=False, locked=False))
    action = pair_next_action(STACK, doc)
    assert action.kind == "investigate" and B in action.text and "qpool activate" not in action.text


def test_held_operation_lock_names_the_run_and_release_only_if_dead() -> None:
    doc = pair(host(P, "primary", active=True, db=True, oplock={"run_id": "r9", "owner": "ops@laptop"}),
               host(B, "backup", active=False))
    action = pair_next_action(STACK, doc)
    assert action.kind == "investigate" and "r9" in action.text and "only if it is dead" in action.text


def test_format_has_one_line_per_pair() -> None:
    doc = {"stack": STACK, "pairs": [
        pair(host(P, "primary", active=True), host(B, "backup", active=False)),
        pair(host("qp-testnet-p2-primary", "primary", active=True, signing=True, db=True),
             host("qp-testnet-p2-backup", "backup", active=False, backup_age=30.0), name="p2")]}
    lines = format_next_actions(doc).splitlines()
    assert [line.split(":")[0] for line in lines] == ["pair p1", "pair p2"]
    assert lines[1].startswith("pair p2: healthy")


def test_open_failover_reads_only_unfinished_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "failover-testnet-p1.json"
    assert open_failover(path) is None
    doc = {"run_id": "r1", "source": P, "target": B, "steps": {"detect": {"done": True}, "stop": {"done": False}},
           "completed": False, "aborted": None}
    path.write_text(json.dumps(doc))
    assert open_failover(path) == {"run_id": "r1", "source": P, "target": B, "steps_done": ["detect"]}
    path.write_text(json.dumps({**doc, "completed": True}))
    assert open_failover(path) is None
    path.write_text(json.dumps({**doc, "aborted": "abandoned by the operator"}))
    assert open_failover(path) is None
