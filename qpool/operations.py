"""`qpool activate` and `qpool failover`: the only code paths that may start a validator.

The one rule: a validator starts on a host only after *fresh* checks, made just before the start, show that
every other host holding the same keys is stopped and locked (independent checks: unit state, process
table, metrics port, lock file) or fenced (Hetzner reports it powered off). Everything else — journals,
locks, prompts, epoch gates — serves that rule or makes it survivable to interrupt.
"""

from __future__ import annotations

import hashlib
import math
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qpool import chain_liveness, history_coverage, interchange, key_ownership, reachability, replicas, witnesses
from qpool import epoch_gate as epoch_gate_clocks
from qpool.context import Context
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.journal import Journal, exclusive, journal_path, open_journal, state_dir
from qpool.progress import progress_of
from qpool.remote import Unreachable
from qpool.signing import running, stopped_reasons
from qpool.stackfile import read_active, write_active
from qpool.status import check_identity, hetzner_fenced, observe

#: The fenced path waits until this many epochs after the fence epoch have begun (the epoch after the fence
#: time, plus two): anything the dead primary signed before it was powered off targets an older epoch.
EPOCH_GATE_OFFSET = 3
#: Three backup intervals (qp-slashing-backup.timer runs every 5 min): an older replica means replication broke.
MAX_REPLICA_AGE_SECONDS = 15 * 60


# -- shared guards --------------------------------------------------------------------------------------

def verify_peer_safe(ctx: Context, peer: HostRecord) -> str:
    """Fresh proof that `peer` cannot sign: stopped and locked (reachable) or fenced (powered off)."""
    view = observe(ctx, peer)
    if view.status is not None:
        reasons = stopped_reasons(view.status)
        if reasons:
            raise QpoolError(f"refusing: {peer.name} may still sign ({'; '.join(reasons)}); stop it first "
                             "(`qpool failover` does this safely)")
        return "stopped and locked"
    if view.fenced:
        return "fenced (powered off through the Hetzner API)"
    raise QpoolError(f"refusing: {peer.name} is unreachable and not fenced ({view.error}); with "
                     "HCLOUD_FENCING_TOKEN set, `qpool failover` fences it first")


def require_beacon_ready(host: HostRecord, status: dict[str, Any]) -> str:
    """Before ANY validator start: the host's own beacon node answers and is not syncing (the same reading
    `qpool status` shows). A validator started against a dead or syncing beacon node cannot attest, and its
    first epochs would be missed; refusing keeps the host stopped and locked."""
    beacon = status.get("beacon") or {}
    if not beacon.get("reachable"):
        raise QpoolError(f"refusing: {host.name}'s beacon node does not answer on its REST API; nothing was started. "
                         "Fix it first (runbook BeaconNotSynced, `journalctl -u qp-beacon` on the host), then re-run")
    if beacon.get("syncing") is not False:
        state = "is syncing" if beacon.get("syncing") else "does not report its sync state"
        raise QpoolError(f"refusing: {host.name}'s beacon node {state} (head slot {beacon.get('head_slot')}, "
                         f"current slot {beacon.get('current_slot')}); nothing was started. Wait until `qpool status` "
                         "shows it synced (runbook BeaconNotSynced), then re-run")
    return f"beacon node synced at slot {beacon.get('head_slot')}"


def _owner() -> str:
    return f"qpool@{socket.gethostname()}"


# -- activate -------------------------------------------------------------------------------------------

def _lock_pair(ctx: Context, hosts: list[HostRecord], run_id: str) -> list[HostRecord]:
    """Take the operation lock on every host of the pair (name order), so no other qpool run — from any
    machine, targeting either host — can start a validator in this pair meanwhile. An unreachable host is
    acceptable only if it is fenced (nothing can run there)."""
    held: list[HostRecord] = []
    try:
        for host in sorted(hosts, key=lambda h: h.name):
            try:
                ctx.ssh.ctl(host, "oplock", "acquire", "--run-id", run_id, "--owner", _owner())
                held.append(host)
            except Unreachable:
                if not (ctx.hcloud is not None and host.server_id is not None and hetzner_fenced(ctx, host)):
                    raise
        return held
    except BaseException:
        for host in held:
            _release(ctx, host, run_id)
        raise


def _export(ctx: Context, host: HostRecord, where: str) -> interchange.History:
    data, _sha = ctx.ssh.export_bytes(host, "export-slashing")
    return interchange.parse(data, where)


def activate(ctx: Context, pair: str, *, first_start: bool = False, archives: list[Any] | None = None
             ) -> dict[str, Any]:
    """First start (or restart) of the validator on the host that stack config names active."""
    role = read_active(ctx.config_file, pair)
    hosts = ctx.inventory.pair_hosts(pair)
    target = next((h for h in hosts if h.role == role), None)
    if target is None:
        raise QpoolError(f"stack config names {role} active for pair {pair}, but the inventory has no such host")
    peers = [h for h in hosts if h is not target]
    ctx.report(f"activate: pair {pair}, target {target.name} (configured active: {role})")
    path = journal_path(ctx.inventory.stack, pair, ctx.journal_dir or state_dir())
    from qpool.journal import last_journal

    with exclusive(path):
        last = last_journal(path)
        if last is not None and not last.get("completed") and not last.get("aborted"):
            raise QpoolError(f"an unfinished failover {last['source']} -> {last['target']} (run {last['run_id']}) "
                             "exists for this pair: finish it by re-running `qpool failover`, not with activate")
        target_view = observe(ctx, target)
        if target_view.status is None:
            raise QpoolError(f"{target.name} is unreachable: {target_view.error}")
        if running(target_view.status):
            for peer in peers:
                verify_peer_safe(ctx, peer)
            ctx.report(f"{target.name} is already signing and every peer is stopped: nothing to do")
            return {"target": target.name, "changed": False}
        run_id = f"activate-{uuid.uuid4().hex[:12]}"
        held = _lock_pair(ctx, hosts, run_id)
        try:
            for peer in peers:
                evidence = verify_peer_safe(ctx, peer)
                ctx.report(f"  peer {peer.name}: {evidence}")
                if not evidence.startswith("stopped"):
                    # A fenced peer's last signatures may exist nowhere else: only failover (replicated history
                    # + epoch gate) may start its partner.
                    raise QpoolError(f"refusing: {peer.name} is fenced/unreachable, so its newest history may not "
                                     f"be on {target.name}; use `qpool failover` (replica + epoch gate)")
            target_status = ctx.ssh.status(target)
            ctx.report(f"  {target.name}: {require_beacon_ready(target, target_status)}")
            ctx.report(f"  {key_ownership.check_before_start(ctx, target, target_status)}")
            _check_history_covers(ctx, target, target_status, peers, first_start, archives)
            ctx.report(f"  {chain_liveness.check_before_start(ctx, target, target_status)}")
            if not ctx.confirm(f"Start the validator on {target.name}?"):
                raise QpoolError("aborted at the confirmation prompt; nothing changed")
            # Re-check right before the start: the confirmation prompt may have waited a long time.
            for peer in peers:
                verify_peer_safe(ctx, peer)
            fresh = ctx.ssh.status(target)
            require_beacon_ready(target, fresh)
            key_ownership.check_before_start(ctx, target, fresh)
            chain_liveness.check_before_start(ctx, target, fresh)
            args = ["activate", "--run-id", run_id] + (["--first-start"] if first_start else [])
            ctx.ssh.ctl(target, *args, timeout=180)
            ctx.report(f"{target.name}: validator running")
            return {"target": target.name, "changed": True}
        finally:
            for host in held:
                _release(ctx, host, run_id)


def _check_history_covers(ctx: Context, target: HostRecord, target_status: dict[str, Any],
                          peers: list[HostRecord], first_start: bool, archives: list[Any] | None = None) -> None:
    """The target must already hold every signature of the pair anywhere (peer DBs, replicas on the pair's
    hosts and the monitoring server, the operator's archives), or it could repeat one: see
    qpool/history_coverage.py."""
    history_coverage.check_before_start(ctx, target, target_status, first_start=first_start, archives=archives)


def _release(ctx: Context, host: HostRecord, run_id: str) -> None:
    try:
        ctx.ssh.ctl(host, "oplock", "release", "--run-id", run_id)
    except QpoolError as exc:
        ctx.report(f"warning: could not release the operation lock on {host.name}: {exc}")


# -- failover -------------------------------------------------------------------------------------------

STEPS = ("detect", "stop", "verify-stopped", "move-history", "epoch-gate", "start", "record")


def _chain_epoch_start(clock: dict[str, Any], epoch: int) -> float:
    return clock["genesis_time"] + epoch * clock["seconds_per_slot"] * clock["slots_per_epoch"]


def epoch_gate(clock: dict[str, Any], fence_time: float) -> tuple[int, float]:
    epoch_seconds = clock["seconds_per_slot"] * clock["slots_per_epoch"]
    fence_epoch = math.floor((fence_time - clock["genesis_time"]) / epoch_seconds)
    gate_epoch = fence_epoch + EPOCH_GATE_OFFSET
    return gate_epoch, _chain_epoch_start(clock, gate_epoch)


def failover(ctx: Context, pair: str, *, to_role: str = "backup", accept_slashing_risk: bool = False,
             alert: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Move signing in `pair` to the host with role `to_role`, following the seven-step runbook."""
    hosts = ctx.inventory.pair_hosts(pair)
    target = next((h for h in hosts if h.role == to_role), None)
    if target is None:
        raise QpoolError(f"pair {pair} has no {to_role} host")
    source = next(h for h in hosts if h is not target)
    path = journal_path(ctx.inventory.stack, pair, ctx.journal_dir or state_dir())
    with exclusive(path):
        active_role = read_active(ctx.config_file, pair)
        journal, resumed = _open(ctx, path, pair, source, target, active_role)
        if journal is None:
            return {"changed": False, "active": target.name}
        if resumed:
            ctx.report(f"resuming run {journal.run_id} ({', '.join(s for s in STEPS if journal.done(s)) or 'no'} "
                       "step(s) done)")
        try:
            result = _run_failover(ctx, journal, source, target, accept_slashing_risk)
        except KeyboardInterrupt:
            ctx.report(f"interrupted: re-run the same command to resume run {journal.run_id}")
            raise
        except QpoolError:
            if not journal.done("stop") and not journal.completed:
                # Refused before the source was stopped: nothing to resume. Close the run (and its host locks)
                # so that the next failover or activate starts from a fresh look at both hosts.
                _abandon(ctx, journal, [source, target], "refused before the source was stopped")
            raise
        if alert is not None:
            try:
                alert(journal.run_id, f"failover of pair {pair} complete: {target.name} signs, {source.name} "
                      f"{'fenced' if journal.mode == 'fenced' else 'stopped and locked'}")
            except Exception as exc:
                ctx.report(f"warning: alert not delivered: {exc}")
        return result


def _abandon(ctx: Context, journal: Journal, hosts: list[HostRecord], why: str) -> None:
    journal.aborted = why
    journal.save()
    for host in hosts:
        try:
            held = (ctx.ssh.status(host).get("oplock") or {}).get("run_id")
            if held == journal.run_id:
                ctx.ssh.ctl(host, "oplock", "release", "--run-id", journal.run_id)
        except QpoolError:
            pass  # unreachable or refused: its lock (if any) names this run; `qpool release-oplock` clears it


def abandon_failover(ctx: Context, pair: str) -> str:
    """Close an unfinished failover that must not be resumed (it never started the target)."""
    path = journal_path(ctx.inventory.stack, pair, ctx.journal_dir or state_dir())
    from qpool.journal import last_journal

    with exclusive(path):
        doc = last_journal(path)
        if doc is None or doc.get("completed") or doc.get("aborted"):
            return "no unfinished failover for this pair"
        journal = Journal(path=path, **doc)
        if journal.done("start"):
            raise QpoolError(f"run {journal.run_id} already started {journal.target}: resume it instead of abandoning")
        hosts = [h for h in ctx.inventory.pair_hosts(pair) if h.name in (journal.source, journal.target)]
        _abandon(ctx, journal, hosts, "abandoned by the operator")
        done = ", ".join(s for s in STEPS if journal.done(s)) or "none"
        return (f"run {journal.run_id} ({journal.source} -> {journal.target}) abandoned; steps done: {done}. "
                f"{journal.source} stays as it is (stopped and locked if the stop step ran): check `qpool status`")


def _open(ctx: Context, path: Path, pair: str, source: HostRecord, target: HostRecord,
          active_role: str) -> tuple[Journal | None, bool]:
    from qpool.journal import last_journal

    last = last_journal(path)
    unfinished = last is not None and not last.get("completed") and not last.get("aborted")
    if active_role == target.role and not unfinished:
        # Re-run after success (or the target was already active): verify, change nothing.
        st = ctx.ssh.status(target)
        if running(st):
            verify_peer_safe(ctx, source)
            ctx.report(f"{target.name} is already the active signer and {source.name} cannot sign: nothing to do")
            return None, False
        raise QpoolError(f"{target.name} is configured active but not signing; use `qpool activate` to start it")
    return open_journal(path, stack=ctx.inventory.stack, pair=pair, source=source.name, target=target.name)


def _run_failover(ctx: Context, j: Journal, source: HostRecord, target: HostRecord,
                  accept_slashing_risk: bool) -> dict[str, Any]:
    """The steps of STEPS in order, one function each (FAILOVER_STEPS); a refusal stops the run resumable."""
    run = _Failover(ctx, j, source, target, accept_slashing_risk)
    for step in STEPS:
        FAILOVER_STEPS[step](run)
    return run.result


@dataclass
class _Failover:
    """One failover run as its steps see it (the journal `j` makes each step resumable)."""

    ctx: Context
    j: Journal
    source: HostRecord
    target: HostRecord
    accept_slashing_risk: bool
    result: dict[str, Any] = field(default_factory=dict)


def _detect(run: _Failover) -> None:
    """Step 1: both hosts observed, nothing unaccounted for signing, the pair's op locks taken, the mode chosen."""
    ctx, j, source, target = run.ctx, run.j, run.source, run.target
    say = ctx.report
    say(f"[1/7] detect: {source.name} -> {target.name}")
    target_st = ctx.ssh.status(target)  # Unreachable propagates: abort before touching the source
    check_identity(target, target_st)
    src = observe(ctx, source)
    say(f"      {target.name}: {'SIGNING' if running(target_st) else 'stopped'}, lock "
        f"{'on' if target_st['locked'] else 'off'}, beacon {target_st.get('beacon')}")
    say(f"      {source.name}: " + ("unreachable: " + str(src.error) if src.status is None else
                                   ("SIGNING" if running(src.status) else "stopped")))
    if running(target_st) and not _activated_by_this_run(target_st, j):
        # Only this run's step 6 may have started it (killed before journaling "start"); anything else is a
        # second signer nobody accounted for.
        raise QpoolError(f"refusing: {target.name} is already signing but not started by this failover run; "
                         "investigate with `qpool status` before anything else")
    # Both hosts of the pair: no other qpool run (any machine, any target) may act on this pair meanwhile.
    ctx.ssh.ctl(target, "oplock", "acquire", "--run-id", j.run_id, "--owner", _owner())
    if src.status is not None:
        ctx.ssh.ctl(source, "oplock", "acquire", "--run-id", j.run_id, "--owner", _owner())
    if j.done("detect") and not j.done("start") and not ctx.confirm(
            f"Resume failover run {j.run_id} ({source.name} -> {target.name}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(j.started))})?"):
        raise QpoolError("aborted at the confirmation prompt; the run stays resumable")
    if not j.done("detect"):
        mode = "clean" if src.status is not None else "fenced"
        if mode == "fenced" and ctx.hcloud is None:
            raise QpoolError(f"{source.name} is unreachable and cannot be fenced: export HCLOUD_FENCING_TOKEN so "
                             "qpool can power it off through the Hetzner API (nothing was changed)")
        if not ctx.confirm(f"Fail over pair {j.pair}: stop {'(fence)' if mode == 'fenced' else ''} {source.name}, "
                           f"start {target.name}?"):
            _release(ctx, target, j.run_id)
            if src.status is not None:
                _release(ctx, source, j.run_id)
            j.aborted = "declined at the confirmation prompt"
            j.save()
            raise QpoolError("aborted at the confirmation prompt; nothing changed")
        j.mode = mode
        j.mark("detect", mode=mode)


def _stop_source(run: _Failover) -> None:
    """Step 2: stop (clean) or fence (unreachable) the source; a stop cut off half-way falls back to fencing."""
    ctx, j, source, target = run.ctx, run.j, run.source, run.target
    say = ctx.report
    if not j.done("stop"):
        if j.mode == "clean":
            say(f"[2/7] stop: {source.name} (graceful, then forced), disable, mask, lock")
            try:
                res = ctx.ssh.ctl(source, "stop", "--reason", f"qpool failover run {j.run_id}", "--timeout", "60",
                                  timeout=240)
                j.mark("stop", graceful=res.get("graceful"), forced=res.get("forced"))
            except Unreachable as exc:
                try:  # several agreeing probes before the fenced path: a source that answers again is not fenced
                    reachability.settle(ctx, source, exc)
                except Unreachable:
                    say(f"      {source.name} became unreachable while stopping: switching to the fenced path")
                    j.mode = "fenced"
                    j.save()
                else:
                    raise QpoolError(f"{source.name} stopped answering during the stop but answers again: re-run "
                                     "the failover (the stop is repeated; nothing was started)") from None
        if j.mode == "fenced":
            fenced = _fence(ctx, source, j)
            fenced.update(epoch_gate_clocks.clocks_at_fence(ctx, target))  # target + beacon clocks at the fence
            j.mark("stop", **fenced)
    else:
        say("[2/7] stop: done earlier")


def _verify_stopped(run: _Failover) -> None:
    """Step 3: fresh proof that the source cannot sign."""
    ctx, j, source = run.ctx, run.j, run.source
    say = ctx.report
    say("[3/7] verify stopped")
    evidence = _ensure_source_safe(ctx, j, source)
    say(f"      {source.name}: {evidence}")
    j.mark("verify-stopped", evidence=evidence)


def _move_slashing_protection(run: _Failover) -> None:
    """Step 4: the source's slashing protection onto the target."""
    ctx, j, source, target, accept_slashing_risk = run.ctx, run.j, run.source, run.target, run.accept_slashing_risk
    say = ctx.report
    if not j.done("move-history"):
        say("[4/7] move slashing protection")
        j.mark("move-history", **_move_history(ctx, j, source, target, accept_slashing_risk))
    else:
        say("[4/7] move slashing protection: done earlier")


def _epoch_gate_step(run: _Failover) -> None:
    """Step 5 (fenced path only): wait until anything the fenced host signed targets an older epoch."""
    ctx, j, target, accept_slashing_risk = run.ctx, run.j, run.target, run.accept_slashing_risk
    say = ctx.report
    if j.mode == "fenced" and not j.done("epoch-gate"):
        gate_status = ctx.ssh.status(target)
        clock = gate_status.get("chain_clock")
        # The latest of the operator's, target's and beacon node's clocks: none may move the fence earlier.
        fence_time, fence_clock = epoch_gate_clocks.fence_time(j.data("stop"), gate_status)
        if clock is None:
            if not accept_slashing_risk:
                raise QpoolError(f"{target.name}'s beacon node does not report the chain clock, so the epoch gate "
                                 "cannot be computed; fix the beacon node, or override with --i-accept-slashing-risk")
            say("      WARNING: no chain clock; epoch gate skipped by --i-accept-slashing-risk")
        else:
            gate_epoch, gate_time = epoch_gate(clock, fence_time)
            say(f"      fence time {fence_time:.0f} (by the {fence_clock}'s clock, the latest); "
                f"gate epoch {gate_epoch}")
            gate_data = j.steps.setdefault("epoch-gate", {"done": False, "data": {}})["data"]
            gate_data.update(gate_epoch=gate_epoch, fence_time=fence_time, fence_clock=fence_clock)
            j.save()
            wait = gate_time - ctx.clock()
            if wait > 0 and accept_slashing_risk:
                say(f"      WARNING: epoch gate (epoch {gate_epoch}, {wait:.0f}s away) skipped by "
                    "--i-accept-slashing-risk")
            if not accept_slashing_risk:  # every clock (operator, target, beacon node) must reach the gate
                epoch_gate_clocks.wait_for_gate(ctx, target, gate_epoch, gate_time, EPOCH_GATE_OFFSET)
        gate_data = j.data("epoch-gate")
        gate = gate_data.get("gate_epoch")
        j.mark("epoch-gate", overridden=accept_slashing_risk, gate_epoch=gate,
               fence_time=gate_data.get("fence_time"), fence_clock=gate_data.get("fence_clock"))
        progress_of(say).done("epoch-gate", "[5/7] epoch gate: " + ("overridden" if accept_slashing_risk else
                                                                    f"epoch {gate} reached"))
    elif j.mode == "clean":
        say("[5/7] epoch gate: not needed (history moved from a verified-stopped validator)")


def _start_target(run: _Failover) -> None:
    """Step 6: the decisive fresh check on the source, then unlock and start the target."""
    ctx, j, source, target = run.ctx, run.j, run.source, run.target
    say = ctx.report
    say(f"[6/7] start: {target.name}")
    # The decisive check, always fresh, also when resuming: the source must not be able to sign.
    evidence = _ensure_source_safe(ctx, j, source)
    if j.mode == "fenced" and not j.done("epoch-gate"):
        raise QpoolError(f"{source.name} had to be fenced after the history was moved: re-run the failover so the "
                         "epoch gate applies before the start")
    st = ctx.ssh.status(target)
    if running(st):
        if not _activated_by_this_run(st, j):
            raise QpoolError(f"refusing: {target.name} is signing but was not started by run {j.run_id}")
        say(f"      {target.name} already signing (started by this run before an interruption)")
    else:
        reasons = stopped_reasons(st)
        if reasons:
            raise QpoolError(f"refusing: {target.name} is in an unexpected state ({'; '.join(reasons)})")
        if j.mode == "clean":
            # The source may have signed again since step 4 (e.g. a stale journal resumed days later):
            # its current history must already be on the target.
            lost = interchange.missing(_export(ctx, source, f"export from {source.name}"),
                                       _export(ctx, target, f"export from {target.name}"))
            if lost:
                j.steps.pop("move-history", None)
                j.save()
                raise QpoolError(f"refusing: {source.name} signed after the history was moved ({'; '.join(lost)}); "
                                 "re-run the failover to move it again")
        # Every copy of the pair's history (replicas on both hosts and the monitoring server) must be covered.
        history_coverage.check_before_start(ctx, target, st, first_start=False, peer_dbs=False, failover=True)
        fresh = ctx.ssh.status(target)
        say(f"      {target.name}: {require_beacon_ready(target, fresh)}")
        say(f"      {key_ownership.check_before_start(ctx, target, fresh)}")
        say(f"      {chain_liveness.check_before_start(ctx, target, fresh)}")
        args = ["activate", "--run-id", j.run_id]
        gate = j.data("epoch-gate").get("gate_epoch") if j.mode == "fenced" else None
        if gate is not None and not j.data("epoch-gate").get("overridden"):
            args += ["--not-before-epoch", str(gate)]  # the host enforces the gate on its own clock too
        ctx.ssh.ctl(target, *args, timeout=180)
    j.mark("start", source_evidence=evidence)
    say(f"      {target.name}: validator running")


def _record(run: _Failover) -> None:
    """Step 7: record the new active host, release the locks, close the run."""
    ctx, j, source, target = run.ctx, run.j, run.source, run.target
    say = ctx.report
    say("[7/7] record the new active host")
    how = write_active(ctx.config_file, j.pair, target.role, stack=j.stack)
    labelled = _label_active(ctx, source, target)
    _release(ctx, target, j.run_id)
    if j.mode == "clean":
        _release(ctx, source, j.run_id)
    j.completed = True
    j.mark("record", config=how, labels=labelled)
    say(f"done: {target.name} signs for pair {j.pair}; stack config updated ({how}); run `pulumi up` "
        "at leisure: it never touches a validator")
    run.result = {"changed": True, "active": target.name, "mode": j.mode, "run_id": j.run_id}


#: One function per step of STEPS, in that order.
FAILOVER_STEPS: dict[str, Callable[[_Failover], None]] = {
    "detect": _detect,
    "stop": _stop_source,
    "verify-stopped": _verify_stopped,
    "move-history": _move_slashing_protection,
    "epoch-gate": _epoch_gate_step,
    "start": _start_target,
    "record": _record,
}


def _activated_by_this_run(status: dict[str, Any], j: Journal) -> bool:
    return (status.get("activated_by") or {}).get("run_id") == j.run_id


def _ensure_source_safe(ctx: Context, j: Journal, source: HostRecord) -> str:
    """Fresh proof the source cannot sign; if contact is lost after a clean stop, fence it (safe direction)."""
    if j.mode == "fenced":
        return _proven_off(ctx, j, source)
    view = observe(ctx, source)
    if view.status is not None:
        reasons = stopped_reasons(view.status)
        if reasons:
            raise QpoolError(f"refusing: {source.name} may still sign ({'; '.join(reasons)})")
        return "stopped and locked (unit inactive, no process, metrics port closed, lock present)"
    ctx.report(f"      {source.name} stopped answering after the stop: fencing it, and the epoch gate will apply")
    fenced = _fence(ctx, source, j)
    # The late fence records the target's and beacon node's clocks too (the gate takes the latest clock).
    fenced.update(epoch_gate_clocks.clocks_at_fence(ctx, ctx.inventory.hosts[j.target]))
    j.mode = "fenced"
    j.steps.setdefault("stop", {"done": True, "at": ctx.clock(), "data": {}})["data"].update(fenced)
    j.steps.pop("epoch-gate", None)
    j.save()
    return _proven_off(ctx, j, source)


def _proven_off(ctx: Context, j: Journal, source: HostRecord) -> str:
    """Fenced means proven off by independent witnesses (qpool/witnesses.py), fresh at every call: the Hetzner
    API (off, after this run's power-off), the target's own probe of the source's private address, and
    Prometheus' scrapes of the source's validator since the fence. Raises unless the accepted rule holds."""
    target = ctx.inventory.hosts[j.target]
    stop = j.data("stop")
    hetzner_text = _verify_fenced(ctx, source)  # refuses at once if the API says not off, or SSH answers
    hetzner = (witnesses.Witness("hetzner", witnesses.OFF, f"{hetzner_text.split(' and ')[0]} after a power-off "
                                 "sent by this run")
               if stop.get("power_off_sent") else
               witnesses.Witness("hetzner", witnesses.UNKNOWN, "reports off, but this run's journal shows no "
                                 "power-off sent (older qpool): abandon the run and fail over again"))
    operator = witnesses.Witness("operator-ssh", witnesses.UNKNOWN, f"no answer to {ctx.inventory.ssh_user}@"
                                 f"{source.address} (not counted: the reason for the fence)")
    found = witnesses.collect(ctx, source, target, fenced_at=float(stop.get("fenced_at") or ctx.clock()),
                              hetzner=hetzner, operator_ssh=operator)
    return witnesses.require_off(ctx, source, target, found, j.pair)


def _fence(ctx: Context, source: HostRecord, j: Journal) -> dict[str, Any]:
    from qpool.fencing import fence_server

    if ctx.hcloud is None or source.server_id is None:
        raise QpoolError(f"cannot fence {source.name}: no Hetzner API access (export HCLOUD_FENCING_TOKEN) "
                         "or no server id")
    _check_server_identity(ctx, source)
    ctx.report(f"[2/7] fence: powering off {source.name} (server {source.server_id}) through the Hetzner API")
    result = fence_server(ctx.hcloud, source.server_id, reason=f"qpool failover run {j.run_id}",
                          sleep=ctx.sleep, wall_clock=ctx.clock)  # the operator's clock, as the gate reads it
    ctx.report(f"      {source.name}: off (fenced at {result.fenced_at:.0f})")
    return {"fenced_at": result.fenced_at, "already_off": result.already_off, "power_off_sent": True}


def _check_server_identity(ctx: Context, host: HostRecord) -> None:
    """Power off (or trust "off" for) exactly the server the inventory names: name, labels and address agree."""
    from qpool.hetzner import get_server

    info = get_server(ctx.hcloud, host.server_id, sleep=ctx.sleep)  # type: ignore[arg-type]
    expected = {"role": host.role, **({"pair": host.pair} if host.pair else {})}
    wrong = [f"{k}={info.labels.get(k)!r}" for k, v in expected.items() if info.labels.get(k) != v]
    if info.name != host.name or wrong or (info.public_ipv4 and info.public_ipv4 != host.address
                                           and host.address not in info.private_ips):
        raise QpoolError(f"refusing: Hetzner server {host.server_id} is {info.name} "
                         f"({', '.join(wrong) or 'labels ok'}, {info.public_ipv4}), not the inventory's {host.name} "
                         f"at {host.address}; fix the inventory")


def _verify_fenced(ctx: Context, source: HostRecord) -> str:
    from qpool.fencing import verify_off

    if ctx.hcloud is None or source.server_id is None:
        raise QpoolError(f"refusing: {source.name} cannot be verified powered off (no Hetzner API access)")
    _check_server_identity(ctx, source)
    if not verify_off(ctx.hcloud, source.server_id, sleep=ctx.sleep):
        raise QpoolError(f"refusing: {source.name} is not verified powered off through the Hetzner API")
    try:
        ctx.ssh.status(source)
    except Unreachable:
        return "powered off (Hetzner API) and unreachable over SSH"
    raise QpoolError(f"refusing: Hetzner reports {source.name} off but it answers over SSH; investigate")


def _move_history(ctx: Context, j: Journal, source: HostRecord, target: HostRecord,
                  accept_slashing_risk: bool) -> dict[str, Any]:
    # The newest replica that passes its checksum (corrupt newer ones are moved aside and reported).
    replica = replicas.select_intact(ctx, target)
    if j.mode == "clean":
        data, sha = ctx.ssh.export_bytes(source, "export-slashing")
        exported = interchange.parse(data, f"export from {source.name}")
        ctx.report(f"      exported {len(exported.pubkeys)} key(s) from {source.name}, sha256 {sha[:16]}...")
        if replica:
            old_data, _ = ctx.ssh.export_bytes(target, "export-replica", replica["path"])
            problems = interchange.regressions(interchange.parse(old_data, "replicated backup"), exported)
            if problems:
                raise QpoolError("refusing: the export does not cover the last replicated backup: "
                                 + "; ".join(problems))
    else:
        if not replica:
            if not accept_slashing_risk:
                raise QpoolError(f"refusing: {target.name} holds no replicated slashing-protection backup of "
                                 f"{source.name}; override only with --i-accept-slashing-risk")
            ctx.report("      WARNING: no replicated backup; starting with the target's own history only")
            return {"sha256": None, "keys": 0, "source": "none (overridden)"}
        if replica.get("source") != source.name:
            raise QpoolError(f"refusing: the newest replicated backup on {target.name} ({replica['path']}) comes from "
                             f"{replica.get('source')}, not from {source.name}")
        if replica["age_seconds"] > MAX_REPLICA_AGE_SECONDS and not accept_slashing_risk:
            raise QpoolError(f"refusing: the newest intact replicated backup of {source.name} ({replica['name']}) is "
                             f"{replica['age_seconds']:.0f}s old (bound {MAX_REPLICA_AGE_SECONDS}s); override only "
                             "with --i-accept-slashing-risk")
        ctx.report(f"      using replicated backup {replica['path']} ({replica['age_seconds']:.0f}s old)")
        data, sha = ctx.ssh.export_bytes(target, "export-replica", replica["path"])
        exported = interchange.parse(data, f"replicated backup on {target.name}")
        # A newer copy of the source on the monitoring server is merged in (the newest copy anywhere counts).
        data, merged = history_coverage.with_monitoring_copies(ctx, target, source, data, exported)
        if merged:
            sha, exported = hashlib.sha256(data).hexdigest(), interchange.parse(data, "merged replicas")
        replica_used = {"replica": replica["name"], "replica_age_seconds": replica["age_seconds"],
                        "replicas_moved_aside": [bad["name"] for bad in replica.get("skipped") or []],
                        "merged": merged}
    ctx.ssh.ctl(target, "import-slashing", "--sha256", sha, input=data, timeout=600)
    back, _ = ctx.ssh.export_bytes(target, "export-slashing")
    lost = interchange.missing(exported, interchange.parse(back, f"re-export on {target.name}"))
    if lost:
        raise QpoolError("refusing: history on the target is missing entries after the import: " + "; ".join(lost))
    ctx.report(f"      imported on {target.name} and verified (history there covers the export)")
    return {"sha256": sha, "keys": len(exported.pubkeys), "source": "export" if j.mode == "clean" else "replica",
            **(replica_used if j.mode != "clean" else {})}


def _label_active(ctx: Context, source: HostRecord, target: HostRecord) -> bool:
    if ctx.hcloud is None or source.server_id is None or target.server_id is None:
        return False
    from qpool.hetzner import set_labels

    try:
        set_labels(ctx.hcloud, target.server_id, {"qpool-active": "true"}, sleep=ctx.sleep)
        set_labels(ctx.hcloud, source.server_id, {"qpool-active": "false"}, sleep=ctx.sleep)
        return True
    except QpoolError as exc:
        ctx.report(f"warning: server labels not updated: {exc}")
        return False


def alertmanager_alert(ctx: Context) -> Callable[[str, str], None]:
    """Deliver an info alert through the monitoring server's Alertmanager (its configured receivers)."""

    def send(run_id: str, text: str) -> None:
        mon = ctx.inventory.monitoring()
        if mon is None:
            raise QpoolError("no monitoring host in the inventory")
        # qp-validator-ctl alert on the monitoring host posts a QpoolFailoverCompleted alert to its Alertmanager.
        try:
            ctx.ssh.ctl(mon, "alert", "--run-id", run_id, "--summary", text, timeout=30)
        except QpoolError as exc:
            raise QpoolError(f"Alertmanager on {mon.name} refused the alert: {exc}") from None

    return send
