"""Key ownership across pairs: no host of ANOTHER pair may be able to sign with a key the target will load.

Why: the program checks that a key is in one pair's set only inside the current key bundle, and
`qp-import-keys` only adds to a wallet while the validator is running. A key moved from p1's directory to
p2's stays loaded on p1's signer (its unlocked wallet cannot be changed) while p2's host loads it too: two
signers of one key, each pair's own checks satisfied. So before any start (activate, failover) qpool reads
the public keys every key host of every other pair has loaded (`qp-validator-ctl status` -> `wallet`, as the
validator client itself lists them) and refuses while one of them holds a target key and is not stopped and
locked. Unknown is never "none": an unreadable wallet on a host that may sign, or an unreachable host that is
not fenced, refuses too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.signing import stopped_reasons
from qpool.status import observe

if TYPE_CHECKING:
    from qpool.context import Context

KEY_ROLES = ("primary", "backup")


def loaded_keys(status: dict[str, Any]) -> list[str] | None:
    """The public keys a host's wallet holds (lower-case 0x hex), or None when the host could not list them."""
    keys = (status.get("wallet") or {}).get("pubkeys")
    return None if keys is None else [str(k).lower() for k in keys]


def _short(key: str) -> str:
    return f"{key[:14]}..."


def check_before_start(ctx: Context, target: HostRecord, target_status: dict[str, Any]) -> str:
    """Refuse (one line: the host, the key, the recovery) unless no other pair's host can sign a target key."""
    keys = loaded_keys(target_status)
    if keys is None:
        raise QpoolError(f"refusing: {target.name} cannot list the keys in its wallet "
                         f"({(target_status.get('wallet') or {}).get('error')}); fix that first (nothing started)")
    mine = set(keys)
    others = sorted((h for h in ctx.inventory.hosts.values()
                     if h.role in KEY_ROLES and h.pair is not None and h.pair != target.pair), key=lambda h: h.name)
    for host in others:
        view = observe(ctx, host)
        if view.status is None:
            if view.fenced:
                continue
            raise QpoolError(f"refusing: cannot check that {host.name} (pair {host.pair}) holds none of "
                             f"{target.name}'s keys: it is unreachable and not fenced ({view.error}); bring it "
                             f"back, or fail pair {host.pair} over (that fences it), then re-run (nothing started)")
        reasons = stopped_reasons(view.status)
        if not reasons:
            continue  # stopped and locked: whatever its wallet holds, it cannot sign
        theirs = loaded_keys(view.status)
        if theirs is None:
            raise QpoolError(f"refusing: {host.name} (pair {host.pair}) may sign ({'; '.join(reasons)}) and its "
                             f"wallet cannot be listed ({(view.status.get('wallet') or {}).get('error')}); fix "
                             "that, then re-run (nothing started)")
        shared = sorted(mine & set(theirs))
        if shared:
            raise QpoolError(
                f"refusing: {host.name} (pair {host.pair}) holds {len(shared)} of {target.name}'s key(s) "
                f"({', '.join(_short(k) for k in shared[:3])}) and may sign ({'; '.join(reasons)}): the key "
                f"moved between pairs. Nothing started. Recovery (docs/runbooks/activate.md, 'A key moved "
                f"between pairs'): `pulumi up`, `qpool failover` of pair {host.pair}, `pulumi up` again (the "
                "import step removes keys no longer assigned to a pair from LOCKED hosts), then re-run")
    return (f"no host of another pair can sign {target.name}'s {len(keys)} key(s) ({len(others)} host(s) of "
            "other pairs checked)")
