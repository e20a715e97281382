"""The next safe action for each validator pair, derived from a `qpool status` document.

Why a separate, pure function: `qpool status` must tell an operator what to do next, and that advice is itself
safety-relevant (suggesting `--first-start` when slashing history exists, or an activate beside a second
signer, could lead to slashing). Deriving it only from the structured status document keeps it testable over
hand-written documents and keeps the rules in one place. The rules are conservative: they suggest a command
only when the state is unambiguous, and otherwise name the runbook to read. The commands suggested
(`qpool activate`, `qpool failover`) re-check everything themselves before they change anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Same threshold as the failover's replica check (qpool.operations.MAX_REPLICA_AGE_SECONDS): three intervals
#: of qp-slashing-backup.timer.
MAX_BACKUP_AGE_SECONDS = 15 * 60
RUNBOOKS = "docs/runbooks"


@dataclass(frozen=True)
class NextAction:
    """What to do for one pair: `healthy` (nothing to do), `act` (a command to run) or `investigate`."""

    pair: str
    kind: str  # "healthy" | "act" | "investigate" | "danger"
    text: str

    def line(self) -> str:
        prefix = {"healthy": "healthy", "act": "next", "investigate": "investigate", "danger": "DANGER"}[self.kind]
        return f"pair {self.pair}: {prefix}: {self.text}"


def open_failover(journal_file: Path) -> dict[str, Any] | None:
    """The unfinished failover run recorded in a pair's journal file (None when there is none)."""
    try:
        doc = json.loads(journal_file.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("completed") or doc.get("aborted"):
        return None
    return {"run_id": doc.get("run_id"), "source": doc.get("source"), "target": doc.get("target"),
            "steps_done": sorted(s for s, v in (doc.get("steps") or {}).items() if v.get("done"))}


def _history_anywhere(pair: dict[str, Any]) -> bool | None:
    """True when any host of the pair holds or received slashing history; None when it cannot be known."""
    if any(h.get("db_present") or h.get("slashing_backup") for h in pair["hosts"]):
        return True
    if any(not h.get("reachable") or h.get("db_present") is None for h in pair["hosts"]):
        return None  # an unreachable host (or an old status without db_present) may hold history
    return False


def pair_next_action(stack: str, pair: dict[str, Any]) -> NextAction:
    """The next safe action for one pair document of `qpool status --json` (see module docstring)."""
    name = pair["pair"]
    hosts = pair["hosts"]
    base = f"--stack {stack} --pair {name}"
    active = next((h for h in hosts if h.get("configured_active")), None)
    others = [h for h in hosts if h is not active]
    signers = [h for h in hosts if h.get("signing")]

    def act(text: str) -> NextAction:
        return NextAction(name, "act", text)

    def investigate(text: str, runbook: str) -> NextAction:
        return NextAction(name, "investigate", f"{text}; read {RUNBOOKS}/{runbook}.md")

    if pair.get("double_signer_risk"):
        live = ", ".join(h["host"] for h in hosts if h.get("may_sign"))
        return NextAction(name, "danger", f"more than one host may sign ({live}): stop all but one NOW; read "
                                          f"{RUNBOOKS}/ValidatorRunningOnTwoHosts.md")
    journal = pair.get("open_failover")
    if journal:
        target = next((h for h in hosts if h["host"] == journal.get("target")), None)
        if target is None:
            return investigate(f"unfinished failover run {journal.get('run_id')} names hosts not in the inventory",
                               "emergency-failover")
        return act(f"unfinished failover run {journal.get('run_id')} ({journal.get('source')} -> "
                   f"{journal.get('target')}): resume it with `qpool failover {base} --to {target['role']}`")
    locked_by = [h for h in hosts if h.get("oplock")]
    if locked_by:
        h = locked_by[0]
        held = h["oplock"]
        return investigate(f"operation lock on {h['host']} held by run {held.get('run_id')} ({held.get('owner')}): "
                           "wait for that run; only if it is dead, `qpool release-oplock "
                           f"--stack {stack} --host {h['host']}`", "README")
    if active is None:
        return investigate("no host of this pair is the configured active one; check the stack config", "activate")
    unreachable = [h for h in hosts if not h.get("reachable")]

    if len(signers) == 1:
        signer = signers[0]
        if signer is not active:
            return investigate(f"{signer['host']} signs but the stack config names {active['host']} active",
                               "ValidatorDownOnActiveHost")
        if unreachable:
            h = unreachable[0]
            return investigate(f"standby {h['host']} is unreachable (signing continues on {signer['host']}); "
                               "bring it back before a failover is needed", "TargetDown")
        stale = _backup_problem(others)
        if stale:
            return investigate(stale, "SlashingProtectionBackupTooOld")
        beacon = signer.get("beacon") or {}
        if not beacon.get("reachable") or beacon.get("syncing"):
            return investigate(f"{signer['host']} signs but its beacon node is "
                               f"{'down' if not beacon.get('reachable') else 'syncing'}", "BeaconNotSynced")
        return NextAction(name, "healthy", f"{signer['host']} signs, standby stopped and locked, "
                                           "slashing-protection backups fresh")

    # Nobody signs.
    if unreachable:
        if active in unreachable and all(h.get("reachable") for h in others) and len(others) == 1:
            other = others[0]
            if other.get("may_sign") is False:
                return act(f"nobody signs and the active host {active['host']} is unreachable: if it stays down, "
                           f"`qpool failover {base} --to {other['role']}` (fences it; waits for the epoch gate)")
        return investigate("nobody signs and " + ", ".join(h["host"] for h in unreachable) + " unreachable",
                           "NoValidatorRunningInPair")
    not_locked = [h for h in hosts if not h.get("locked")]
    if not_locked or any(h.get("may_sign") for h in hosts):
        return investigate("nobody signs, but " + ", ".join(h["host"] for h in not_locked or hosts)
                           + " is not stopped and locked", "ValidatorLockStateUnknown")
    history = _history_anywhere(pair)
    if history is False:
        return act(f"nobody signs and no host of the pair holds slashing history: if these keys never signed "
                   f"anywhere (no `qpool backup` archive of them), first start with "
                   f"`qpool activate {base} --first-start`")
    if active.get("db_present"):
        return act(f"nobody signs: start {active['host']} with `qpool activate {base}` "
                   "(it refuses if a peer holds history the active host lacks)")
    return investigate(f"nobody signs, and slashing history exists but not on the active host {active['host']}",
                       "activate")


def _backup_problem(standbys: list[dict[str, Any]]) -> str | None:
    """Why the replicated slashing-protection backups on the standby host(s) are missing or too old."""
    for h in standbys:
        backup = h.get("slashing_backup")
        if not backup:
            return f"no replicated slashing-protection backup on {h['host']} yet"
        age = backup.get("age_seconds")
        if age is not None and age > MAX_BACKUP_AGE_SECONDS:
            return f"newest slashing-protection backup on {h['host']} is {age:.0f}s old"
    return None


def next_actions(doc: dict[str, Any]) -> list[NextAction]:
    """One NextAction per pair of a `qpool status` document."""
    return [pair_next_action(doc["stack"], pair) for pair in doc["pairs"]]


def format_next_actions(doc: dict[str, Any]) -> str:
    """The lines `qpool status` ends with."""
    return "\n".join(action.line() for action in next_actions(doc))
