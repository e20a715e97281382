"""Whether a host's validator is stopped and locked, or may sign: decided on reason codes, never on wording.

Why codes: a safety decision must not depend on how a message is phrased (rewording "lock file absent"
must not change whether a host counts as a possible signer). The host side (qp-validator-ctl, shipped alone
to hosts, stdlib only) computes the same codes from the same four observations and reports them in its
status JSON as `not_stopped` next to the human text; tests/failover/test_signing_codes.py checks that both
sides agree for every combination of observations.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class NotStopped(StrEnum):
    """One independent piece of evidence that a validator is NOT stopped and locked."""

    UNIT = "unit-not-stopped"  # systemd unit neither inactive nor failed
    PROCESSES = "validator-processes"  # a validator process in the process table
    METRICS_PORT = "metrics-port-answers"  # the validator's metrics port accepts connections
    UNLOCKED = "lock-file-absent"  # the lock file is missing (the validator could be started)


#: Evidence of a validator that may be signing right now; UNLOCKED alone only says it could be started.
LIVE = frozenset({NotStopped.UNIT, NotStopped.PROCESSES, NotStopped.METRICS_PORT})


def observed(status: dict[str, Any]) -> list[NotStopped]:
    """The codes that the raw observations in a status document show (empty: stopped and locked)."""
    codes = []
    if status.get("unit", {}).get("active") not in ("inactive", "failed"):
        codes.append(NotStopped.UNIT)
    if status.get("processes"):
        codes.append(NotStopped.PROCESSES)
    if status.get("metrics_port_open"):
        codes.append(NotStopped.METRICS_PORT)
    if not status.get("locked"):
        codes.append(NotStopped.UNLOCKED)
    return codes


def evidence(status: dict[str, Any]) -> list[str]:
    """Observed codes, plus any the host itself reports: more evidence can only make the answer safer.

    A code this side does not know (a newer host script) is kept as it is, and counts as a possible signer.
    """
    codes: list[str] = list(observed(status))
    codes += [str(code) for code in status.get("not_stopped") or () if code not in codes]
    return codes


def _text(code: str, status: dict[str, Any]) -> str:
    if code == NotStopped.UNIT:
        return f"unit is {status.get('unit', {}).get('active')}"
    if code == NotStopped.PROCESSES:
        return f"validator process(es) {status['processes']}"
    if code == NotStopped.METRICS_PORT:
        return "validator metrics port answers"
    if code == NotStopped.UNLOCKED:
        return "lock file absent"
    return f"host reports {code}"


def stopped_reasons(status: dict[str, Any]) -> list[str]:
    """Independent evidence that a host's validator is NOT stopped and locked, as text; empty means it is."""
    return [_text(code, status) for code in evidence(status)]


def may_sign(status: dict[str, Any]) -> bool:
    """Any evidence of a live validator (unit, process or metrics port), whatever the lock says."""
    return any(code != NotStopped.UNLOCKED for code in evidence(status))


def running(status: dict[str, Any]) -> bool:
    return (status.get("unit", {}).get("active") == "active" and bool(status.get("processes"))
            and bool(status.get("metrics_port_open")))
