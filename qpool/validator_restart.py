"""`qpool validator-restart`: restart the ACTIVE validator in place, so a new validator binary or unit
(installed by `pulumi up`'s `clients` bundle, which never restarts a validator) takes effect.

Why a command of its own: Pulumi may never stop, start or restart a validator. A restart in place is a
stop followed by a start on the SAME host, and the start is guarded exactly like `qpool activate`:
every other key holder of the pair must be verified stopped and locked, freshly, right before the start,
and the host's own slashing-protection history must cover every copy of the pair's history
(qpool/history_coverage.py). It can never produce two signers: it only ever starts the host it stopped,
and only after that host itself was verified stopped (unit, processes, metrics port, lock file).

Epoch considerations: the same slashing-protection DB stays on the same host, so no epoch gate applies
(as on failover's clean path). With doppelganger protection enabled for the pair, the restarted validator
waits its doppelganger epochs before signing again: duties in those epochs are missed, not doubled.
An interruption between the stop and the start leaves the validator stopped and LOCKED (the safe side):
`qpool activate` starts it again after the same checks.
"""

from __future__ import annotations

import uuid
from typing import Any

from qpool import chain_liveness, history_coverage, key_ownership
from qpool.context import Context
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.journal import exclusive, journal_path, last_journal, state_dir
from qpool.operations import _lock_pair, _release, require_beacon_ready, verify_peer_safe
from qpool.signing import running, stopped_reasons
from qpool.stackfile import read_active
from qpool.status import observe

STOP_TIMEOUT_SECONDS = 60


def _peers_stopped(ctx: Context, peers: list[HostRecord], target: HostRecord) -> None:
    """Every peer verified stopped and locked (not merely fenced), as `qpool activate` requires."""
    for peer in peers:
        evidence = verify_peer_safe(ctx, peer)
        if not evidence.startswith("stopped"):
            raise QpoolError(f"refusing: {peer.name} is {evidence}; a restart of {target.name} needs every peer "
                             "reachable, stopped and locked (bring it back first; nothing was changed)")
        ctx.report(f"  peer {peer.name}: {evidence}")


def restart_validator(ctx: Context, pair: str) -> dict[str, Any]:
    """Stop, verify stopped, and start again the validator of the host stack config names active."""
    role = read_active(ctx.config_file, pair)
    hosts = ctx.inventory.pair_hosts(pair)
    target = next((h for h in hosts if h.role == role), None)
    if target is None:
        raise QpoolError(f"stack config names {role} active for pair {pair}, but the inventory has no such host")
    peers = [h for h in hosts if h is not target]
    ctx.report(f"validator-restart: pair {pair}, active host {target.name}")
    path = journal_path(ctx.inventory.stack, pair, ctx.journal_dir or state_dir())
    with exclusive(path):
        last = last_journal(path)
        if last is not None and not last.get("completed") and not last.get("aborted"):
            raise QpoolError(f"an unfinished failover {last['source']} -> {last['target']} (run {last['run_id']}) "
                             "exists for this pair: finish it with `qpool failover` first; nothing was changed")
        view = observe(ctx, target)
        if view.status is None:
            raise QpoolError(f"{target.name} is unreachable ({view.error}); nothing was changed")
        if not running(view.status):
            unit = view.status.get("unit", {}).get("active")
            raise QpoolError(f"{target.name}'s validator is not running (unit {unit}"
                             f", lock {'on' if view.status.get('locked') else 'off'}): nothing to restart; start it "
                             "with `qpool activate` (same checks)")
        pending = view.status.get("restart_pending")
        ctx.report(f"  {target.name}: signing; restart pending: {pending.get('reason') if pending else 'no'}")
        _peers_stopped(ctx, peers, target)
        # The start that follows must succeed: refuse while its beacon node is not ready or another pair holds
        # one of its keys, before anything is stopped.
        ctx.report(f"  {target.name}: {require_beacon_ready(target, view.status)}")
        ctx.report(f"  {key_ownership.check_before_start(ctx, target, view.status)}")
        # Its own keys are live while it signs: here only "a reading exists"; the full check follows the stop.
        chain_liveness.reading(target, view.status)
        run_id = f"restart-{uuid.uuid4().hex[:12]}"
        held = _lock_pair(ctx, hosts, run_id)
        stopped = False
        try:
            # Checked again under the pair's operation locks: nothing may have started meanwhile.
            _peers_stopped(ctx, peers, target)
            if not ctx.confirm(f"Restart the validator on {target.name} (it misses duties while stopped)?"):
                raise QpoolError("aborted at the confirmation prompt; nothing changed")
            ctx.report(f"  stop: {target.name} (lock armed first, graceful, then forced)")
            ctx.ssh.ctl(target, "stop", "--reason", f"qpool validator-restart run {run_id}",
                        "--timeout", str(STOP_TIMEOUT_SECONDS), timeout=240)
            st = ctx.ssh.status(target)
            reasons = stopped_reasons(st)
            if reasons:
                raise QpoolError(f"refusing to start: {target.name} did not stop ({'; '.join(reasons)}); investigate "
                                 "with `qpool status` (nothing was started)")
            stopped = True
            ctx.report(f"  {target.name}: stopped and locked (verified)")
            # The same history check as activate: the host's own DB must cover every copy of the pair's history.
            history_coverage.check_before_start(ctx, target, st, first_start=False)
            # The decisive fresh checks right before the start (the same gates as every other start).
            require_beacon_ready(target, st)
            key_ownership.check_before_start(ctx, target, st)
            ctx.report(f"  {chain_liveness.check_before_start(ctx, target, st)}")
            _peers_stopped(ctx, peers, target)
            ctx.ssh.ctl(target, "activate", "--run-id", run_id, timeout=180)
            ctx.report(f"  {target.name}: validator running again")
            return {"target": target.name, "restarted": True, "run_id": run_id}
        except QpoolError as exc:
            if stopped:
                raise QpoolError(f"{exc}. {target.name}'s validator is STOPPED and LOCKED (nobody signs for pair "
                                 f"{pair}): fix the cause, then `qpool activate --pair {pair}`") from None
            raise
        finally:
            for host in held:
                _release(ctx, host, run_id)
