"""`qpool status`: read-only observation of the hosts of a pair (never changes a host).

Why apart from qpool/operations.py: that module is the code that may start a validator; reading who signs,
locks, units and sync state needs none of it, and the operations use `observe` and `check_identity` from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qpool import reachability, witnesses
from qpool.context import Context
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.journal import journal_path, state_dir
from qpool.next_action import format_next_actions, open_failover
from qpool.remote import Unreachable
from qpool.signing import may_sign, running
from qpool.stackfile import read_active


@dataclass
class HostView:
    host: HostRecord
    status: dict[str, Any] | None
    error: str | None = None
    fenced: bool | None = None


def check_identity(host: HostRecord, status: dict[str, Any]) -> None:
    """The host that answered must be the one the inventory names: a mixed-up inventory must not pass checks."""
    if status.get("host") != host.name or (status.get("role") is not None and status.get("role") != host.role):
        raise QpoolError(f"identity mismatch: inventory entry {host.name} ({host.role}) at {host.address} answered as "
                         f"{status.get('host')} ({status.get('role')}); fix the inventory before anything else")


def observe(ctx: Context, host: HostRecord) -> HostView:
    try:
        status = reachability.status_or_unreachable(ctx, host)  # several agreeing probes, not one failed call
        check_identity(host, status)
        return HostView(host, status)
    except Unreachable as exc:
        view = HostView(host, None, str(exc))
        if ctx.hcloud is not None and host.server_id is not None:
            view.fenced = hetzner_fenced(ctx, host)
        return view


def hetzner_fenced(ctx: Context, host: HostRecord) -> bool:
    from qpool.fencing import is_fenced
    from qpool.hetzner import get_server

    try:
        return is_fenced(get_server(ctx.hcloud, host.server_id, sleep=ctx.sleep))  # type: ignore[arg-type]
    except QpoolError:
        return False


def pair_status(ctx: Context, pair: str) -> dict[str, Any]:
    active_role = read_active(ctx.config_file, pair)
    hosts = []
    views = [observe(ctx, host) for host in ctx.inventory.pair_hosts(pair)]
    for view in views:
        host = view.host
        st = view.status or {}
        backup = st.get("newest_backup") or {}
        hosts.append({
            "host": host.name, "role": host.role, "configured_active": host.role == active_role,
            "reachable": view.status is not None, "error": view.error, "fenced": view.fenced,
            "signing": running(st) if st else None,
            "may_sign": may_sign(st) if st else None,
            "locked": st.get("locked"), "db_present": st.get("db_present"), "unit": st.get("unit", {}).get("active"),
            "processes": st.get("processes"), "metrics_port_open": st.get("metrics_port_open"),
            "beacon": st.get("beacon"), "execution": st.get("execution"),
            "slashing_backup": {"path": backup.get("path"), "age_seconds": backup.get("age_seconds")} if backup
            else None,
            "oplock": st.get("oplock"),
            # a validator binary/unit installed by `pulumi up` that the running validator does not use yet
            "restart_pending": st.get("restart_pending"),
            # The public keys its wallet holds (key ownership across pairs: qpool/key_ownership.py).
            "wallet_pubkeys": (st.get("wallet") or {}).get("pubkeys") if st else None,
            # What its beacon node says about those keys on the chain (qpool/chain_liveness.py).
            "liveness": st.get("liveness") if st else None,
            # An unreachable host: what the fencing witnesses see (the pair peer's private-network probe and
            # Prometheus), so "unreachable" is never read from the operator's SSH alone.
            "witnesses": None if view.status is not None else witnesses.for_status(
                ctx, host, [v.host for v in views if v.status is not None]),
        })
    signers = [h["host"] for h in hosts if h["signing"]]
    live = [h["host"] for h in hosts if h["may_sign"]]
    return {"pair": pair, "configured_active": active_role, "signers": signers, "hosts": hosts,
            "double_signer_risk": len(live) > 1,
            "open_failover": open_failover(journal_path(ctx.inventory.stack, pair, ctx.journal_dir or state_dir()))}


def _sync_word(client: dict[str, Any]) -> str:
    if not client.get("reachable"):
        return "down"
    return "syncing" if client.get("syncing") else "synced"


def _keys_word(keys: list[str] | None) -> str:
    if keys is None:
        return "keys=UNKNOWN"
    return f"keys={len(keys)}" + (f" ({','.join(k[:14] + '...' for k in keys)})" if keys else "")


def _liveness_word(reading: dict[str, Any] | None) -> str:
    """`chain-live=...`: which wallet keys voted on the chain in the last two epochs, per the host's beacon."""
    if not isinstance(reading, dict) or not reading.get("known"):
        return "chain-live=UNKNOWN"
    live = reading.get("live") or {}
    epochs = reading.get("epochs") or []
    span = f"@{epochs[0]}-{epochs[-1]}" if epochs else ""
    return f"chain-live={len(live)}{span}" + (f" ({','.join(k[:14] + '...' for k in sorted(live))})" if live else "")


def format_status(doc: dict[str, Any]) -> str:
    lines = []
    for pair in doc["pairs"]:
        flag = "  !!! MORE THAN ONE SIGNER !!!" if pair["double_signer_risk"] else ""
        lines.append(f"pair {pair['pair']}: configured active = {pair['configured_active']}; "
                     f"signing: {', '.join(pair['signers']) or 'nobody'}{flag}")
        for h in pair["hosts"]:
            if not h["reachable"]:
                fenced = {True: "fenced", False: "NOT fenced", None: "fencing unknown"}[h["fenced"]]
                lines.append(f"  {h['host']:<32} {h['role']:<8} UNREACHABLE ({fenced}): {h['error']}")
                lines += [f"      witness {w['name']}: {w['verdict'].upper()} ({w['detail']})"
                          for w in h.get("witnesses") or []]
                continue
            backup = h["slashing_backup"]
            age = f"{backup['age_seconds']:.0f}s old" if backup and backup["age_seconds"] is not None else "none"
            beacon = h["beacon"] or {}
            execution = h["execution"] or {}
            lines.append(
                f"  {h['host']:<32} {h['role']:<8} {'SIGNING' if h['signing'] else 'stopped':<8} "
                f"lock={'on' if h['locked'] else 'OFF'} unit={h['unit']} procs={len(h['processes'] or [])} "
                f"beacon={_sync_word(beacon)}"
                f"@{beacon.get('head_slot')} "
                f"execution={_sync_word(execution)}@{execution.get('block')} slashing-backup={age} "
                f"{_keys_word(h.get('wallet_pubkeys'))} {_liveness_word(h.get('liveness'))}")
            if h.get("restart_pending"):
                lines.append(f"  {'':<32} validator RESTART PENDING: {h['restart_pending'].get('reason')} "
                             f"(`qpool validator-restart --pair {pair['pair']}` or the next failover)")
    return "\n".join([*lines, format_next_actions(doc)])
