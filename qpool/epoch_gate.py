"""The fenced path's epoch gate: which clock says when the fence happened, and when the gate has passed.

Why three clocks: the gate is `fence epoch + 3`, so a fence time that is too EARLY moves the gate into an
earlier epoch and lets the new signer start while a vote the dead signer made just before the fence may be
missing from the replica. The operator's laptop, the target host (chrony) and the target's beacon node
(its slot clock: head slot + sync distance) can each be wrong; the fence time is the LATEST of the three,
recorded when the fence completes, on every path that fences (the source unreachable at detect, lost
during the stop, or lost after a clean stop). A clock not recorded at the fence is read when the gate is
computed: that is later than the fence, so it can only move the gate later.

And the wait is over only when EVERY clock (operator, target host, beacon node) has reached the gate: the
earliest clock decides. The target host checks the gate again on its own clocks when asked to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qpool.errors import QpoolError
from qpool.inventory import HostRecord

if TYPE_CHECKING:
    from qpool.context import Context

#: Longest single sleep while waiting (Ctrl-C stays responsive, progress is printed).
MAX_SLEEP = 30.0


def beacon_time(status: dict[str, Any]) -> float | None:
    """Wall time per the beacon node's slot clock (start of its current slot), or None if it does not say."""
    clock = status.get("chain_clock")
    slot = (status.get("beacon") or {}).get("current_slot")
    if not clock or slot is None:
        return None
    return float(clock["genesis_time"]) + int(slot) * float(clock["seconds_per_slot"])


def clocks_at_fence(ctx: Context, target: HostRecord) -> dict[str, Any]:
    """The target host's and its beacon node's clocks right after a fence (journalled with the fence)."""
    try:
        st = ctx.ssh.status(target)
    except QpoolError as exc:
        ctx.report(f"      warning: {target.name}'s clocks not readable at the fence ({exc}); they are read "
                   "when the gate is computed (later, so the gate can only move later)")
        return {"target_time_at_fence": None, "beacon_time_at_fence": None}
    return {"target_time_at_fence": st.get("time"), "beacon_time_at_fence": beacon_time(st)}


def fence_time(stop: dict[str, Any], status_now: dict[str, Any]) -> tuple[float, str]:
    """The latest of the operator's, the target's and the beacon node's clock at the fence, and which it was.

    `stop` is the journal's stop-step data; `status_now` the target's status when the gate is computed,
    used for a clock that was not recorded at the fence.
    """
    candidates = {"operator": stop.get("fenced_at"),
                  "target host": stop.get("target_time_at_fence"),
                  "beacon node": stop.get("beacon_time_at_fence")}
    if candidates["target host"] is None:
        candidates["target host (read at the gate)"] = status_now.get("time")
    if candidates["beacon node"] is None:
        candidates["beacon node (read at the gate)"] = beacon_time(status_now)
    known = {name: float(t) for name, t in candidates.items() if t is not None}
    if "operator" not in known:
        raise QpoolError("the journal has no fence time: re-run the failover so the fence is verified again")
    which = max(known, key=lambda name: known[name])
    return known[which], which


def earliest_now(ctx: Context, target: HostRecord) -> tuple[float, str]:
    """The EARLIEST of the operator's, the target host's and its beacon node's clocks now."""
    now = {"operator": ctx.clock()}
    try:
        st = ctx.ssh.status(target)
    except QpoolError:
        st = {}
    if st.get("time") is not None:
        now["target host"] = float(st["time"])
    if (bt := beacon_time(st)) is not None:
        # The slot clock only says which slot has begun: add nothing (its start is the earliest it can be).
        now["beacon node"] = bt
    which = min(now, key=lambda name: now[name])
    return now[which], which


def wait_for_gate(ctx: Context, target: HostRecord, gate_epoch: int, gate_time: float, offset: int) -> None:
    """Sleep (in short steps) until every clock has reached `gate_time`."""
    now, which = earliest_now(ctx, target)
    while now < gate_time:
        wait = gate_time - now
        ctx.report(f"[5/7] epoch gate: waiting {wait:.0f}s for epoch {gate_epoch} (fence + {offset}; "
                   f"by the {which}'s clock, the earliest)")
        ctx.sleep(min(wait, MAX_SLEEP))
        now, which = earliest_now(ctx, target)
