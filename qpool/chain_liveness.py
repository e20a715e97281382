"""Before any start: the chain itself must not show a vote of the target's keys that the stack cannot account for.

Why: every other guard looks at hosts the inventory knows (peers stopped and locked or fenced, other pairs'
wallets, every copy of the pair's history). A signer the stack does not know — a forgotten old server, a
copy of the keys on a laptop, a host of another stack — is invisible to all of them; the chain sees it.
So before every start (activate, `--first-start`, failover, restore + activate, validator-restart) qpool
reads what the TARGET's own beacon node says about the keys in the target's wallet (`qp-validator-ctl status`
-> `liveness`: qrysm's `POST /zond/v1/validator/liveness/{epoch}` for the head epoch E and E-1, answered from
the head state's participation, i.e. from votes of any host on the network), and:

- refuses when there is no reading at all (beacon REST API down, index lookup failed, answer incomplete):
  fail closed, as for every other unknown;
- for every key that voted in epoch e (e in {E-1, E}), requires the KNOWN SIGNER: the target's own
  slashing-protection history, which at this point already covers every copy of the pair's history (the
  history-coverage check runs first: the stopped peer's DB on the clean paths, the failover source's replica
  on the fenced path, the target's own DB on a restart), must record a vote of that key with target epoch
  >= e. Then the vote the chain saw is one this pair's hosts made (the failover source that was just stopped,
  or the target itself before a restart) and the target's slashing protection refuses to vote again in e.
  Otherwise somebody outside the pair's history signed it — an unknown signer, or a host of another pair
  the key was moved from — and starting now could double-vote in e: refused, naming key, epoch and what to do.

A key that is not (yet) a validator on the chain cannot be live. The check cannot see a second signer whose
votes coincide with ones this pair also made (liveness is one bit per key and epoch), and a beacon node that
was just restarted or is partitioned may under-report (qrysm: "best-effort ... subjective view"): it adds a
witness, it does not replace the host checks. Once an unknown signer is stopped, its keys stop being live
after two epochs without votes: re-running then passes (the doppelganger rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qpool import interchange
from qpool.errors import QpoolError
from qpool.inventory import HostRecord

if TYPE_CHECKING:
    from qpool.context import Context

RUNBOOK = "docs/runbooks/activate.md (\"A key is live on the chain\")"


def _short(key: str) -> str:
    return f"{key[:14]}..."


def reading(target: HostRecord, status: dict[str, Any]) -> dict[str, Any]:
    """The target beacon node's liveness reading from `status`; refuses (fail closed) when there is none."""
    live = status.get("liveness")
    if not isinstance(live, dict) or not live.get("known"):
        why = (live or {}).get("error") if isinstance(live, dict) else "qp-validator-ctl reports no liveness"
        raise QpoolError(f"refusing: no chain liveness reading for {target.name}'s keys from its beacon node ({why}); "
                         "nothing was started. Fix the beacon node's REST API (runbook BeaconNotSynced, `journalctl "
                         f"-u qp-beacon` on {target.name}; `qpool status` shows the reading), then re-run")
    return live


def check_before_start(ctx: Context, target: HostRecord, status: dict[str, Any],
                       history: interchange.History | None = None) -> str:
    """Refuse (one line) unless every key of the target that voted in the last two epochs is accounted for by
    the target's own slashing-protection history (module docstring). `status` is the target's fresh status
    (stopped: its DB is exported when a key was live). Returns the evidence line for the operator."""
    live = reading(target, status)
    keys = set((status.get("wallet") or {}).get("pubkeys") or [])
    voted = {str(k).lower(): sorted(int(e) for e in epochs)
             for k, epochs in (live.get("live") or {}).items() if epochs and (not keys or str(k).lower() in keys)}
    epochs = live.get("epochs") or []
    span = f"epoch(s) {', '.join(map(str, epochs))}" if epochs else "no epoch yet"
    if not voted:
        return (f"chain liveness ({target.name}'s beacon node): none of {live.get('keys', len(keys))} key(s) voted "
                f"in {span}")
    if history is None and status.get("db_present"):
        data, _sha = ctx.ssh.export_bytes(target, "export-slashing")
        history = interchange.parse(data, f"export from {target.name}")
    if history is None:  # no DB at all (a first start): nothing recorded, every live vote is somebody else's
        history = interchange.History("", {}, {})
    unknown: list[tuple[str, int]] = []
    for key, key_epochs in sorted(voted.items()):
        newest = history.max_target(key)
        unknown += [(key, e) for e in key_epochs if newest is None or newest < e]
    if unknown:
        keys_text = ", ".join(sorted({_short(k) for k, _e in unknown})[:3])
        latest = max(e for _k, e in unknown)
        raise QpoolError(
            f"refusing: key(s) {keys_text} voted on the chain in epoch {latest} (liveness from {target.name}'s "
            f"beacon node), but no host of this stack recorded that vote ({target.name}'s slashing-protection "
            "history, which covers every copy of the pair's, lacks it): another signer is using the key. Nothing "
            f"was started. Find and stop that signer (`qpool status` of every pair; a copy of the keys outside the "
            f"stack), then re-run after epoch {latest + 2} (two epochs without votes clear the reading); {RUNBOOK}")
    return (f"chain liveness ({target.name}'s beacon node): {len(voted)} key(s) voted in {span}, every vote "
            f"recorded in {target.name}'s history (the known signer: this pair's hosts)")
