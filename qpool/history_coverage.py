"""Before any start: the target's slashing-protection history must cover the newest copy of its pair's history
that exists ANYWHERE, not only the peer's own database.

Why: copies of a pair's history live in several places: each key host's validator DB, the replicas the
signer ships every 5 min to the standby and to the monitoring server, and the operator's backup archives.
A primary rebuilt with an empty volume, or restored from an old archive, has less history than the replicas
its partner (or the monitoring server) holds; starting it could sign again what it already signed. So every
start (`activate`, `activate --first-start`, `failover`, and `restore` before the later activate) gathers:

- the peer's DB (only when the peer is stopped: a live signer is refused by the peer check anyway),
- the newest intact replica on every key host of the pair (the target's own replica dir included),
- the newest intact replica of each of this pair's hosts on the monitoring server (converted to EIP-3076
  on a stopped key host of the pair, as `qpool backup` does),
- any archive the operator passed,

and requires, per key, the target's newest attestation target epoch and newest block slot to be at least
those of every copy. `--first-start` is refused as soon as any copy holds an entry for any key.
A refusal names the copy and the recovery: `qpool backup` (collects every copy), `qpool restore` onto the
target, `qpool activate` (docs/runbooks/activate.md, "The target lacks history").

A key moved from pair p1 to p2 (the bundle lists it under p2 now) carries its history in p1's copies, which
p2's own copies never include. So when the stack has key hosts of other pairs, every start (not restore: the
activate after it checks) also counts the copies of the TARGET'S KEYS (its wallet, as `qp-validator-ctl
status` lists it) held outside the pair, each filtered to those keys (`History.only`):

- the newest intact replica of every other pair's key host on the monitoring server (it receives replicas
  from all key hosts), converted on the target like the pair's own;
- the DB of every stopped and locked key host of another pair (a live one is skipped and reported: the
  key-ownership check already refuses a live holder of a target key).

Such a copy's refusal says where it is and why ("key moved from another pair") and points at the documented
recovery: an EIP-3076 export/import of that one key (docs/runbooks/activate.md, "A key moved between pairs"),
never `qpool restore` of the other pair's archive (it would load all of that pair's keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qpool import interchange, replicas
from qpool.errors import QpoolError
from qpool.inventory import HostRecord

if TYPE_CHECKING:
    from qpool.context import Context

RUNBOOK = "docs/runbooks/activate.md (\"The target lacks history\")"
MOVED_RUNBOOK = "docs/runbooks/activate.md (\"A key moved between pairs\", carrying the key's history)"
KEY_ROLES = ("primary", "backup")


@dataclass(frozen=True)
class Copy:
    """One copy of (part of) the pair's history, with a label that tells the operator where it is."""

    label: str
    history: interchange.History
    data: bytes = b""  # the EIP-3076 bytes, where the copy was read as such
    moved_from: str | None = None  # another pair holds this copy (filtered to the target's keys)

    @property
    def signed(self) -> bool:
        return any(self.history.attestations.get(k) or self.history.blocks.get(k) for k in self.history.pubkeys)


def recovery(ctx: Context, target: HostRecord, *, failover: bool = False) -> str:
    stack, pair = ctx.inventory.stack, target.pair
    if failover:  # the run holds the target's operation lock: close it first (it never started the target)
        return (f"close this run with `qpool failover --stack {stack} --pair {pair} --abandon`, recover the "
                f"history onto {target.name} (`qpool backup`, then `qpool restore --host {target.name}`), then "
                f"run the failover again; see {RUNBOOK}")
    return (f"recover it onto {target.name} first: `qpool backup --stack {stack} --pair {pair} --out DIR` (collects "
            f"every copy), then `qpool restore --stack {stack} --host {target.name} --archive ARCHIVE`, then the start "
            f"again; see {RUNBOOK}. Never --first-start for these keys")


def moved_recovery(ctx: Context, target: HostRecord, copy: Copy, *, failover: bool = False) -> str:
    """The documented recovery for a key moved between pairs: carry that key's history, not a restore."""
    stack = ctx.inventory.stack
    first = (f"close this run with `qpool failover --stack {stack} --pair {target.pair} --abandon`, then "
             if failover else "")
    return (f"{first}carry the moved key's history onto {target.name}: with the old holder in pair "
            f"{copy.moved_from} and {target.name} both stopped and locked, an EIP-3076 export of that one key "
            f"(`qp-validator-ctl export-slashing` on the old holder, only that key's entries) imported on "
            f"{target.name} (`qp-validator-ctl import-slashing`), then the start again; see {MOVED_RUNBOOK}. "
            f"Never --first-start for these keys, never `qpool restore` of a pair {copy.moved_from} archive")


def recovery_for(ctx: Context, target: HostRecord, copy: Copy, *, failover: bool = False) -> str:
    if copy.moved_from is not None:
        return moved_recovery(ctx, target, copy, failover=failover)
    return recovery(ctx, target, failover=failover)


def uncovered(copy: interchange.History, own: list[interchange.History]) -> list[str]:
    """Per key, what `copy` knows newer than the union of `own` (newest target epoch, newest block slot)."""
    problems = []
    for o in own:
        if o.pubkeys and o.genesis_validators_root != copy.genesis_validators_root:
            problems.append(f"genesis_validators_root differs ({copy.genesis_validators_root} vs "
                            f"{o.genesis_validators_root}): another chain")
    for key in sorted(copy.pubkeys):
        c_epoch = copy.max_target(key)
        o_epochs = [e for o in own if (e := o.max_target(key)) is not None]
        if c_epoch is not None and (not o_epochs or max(o_epochs) < c_epoch):
            problems.append(f"{key[:18]}...: newest target epoch {c_epoch} there, "
                            f"{max(o_epochs) if o_epochs else 'none'} on the target")
        c_blocks = copy.blocks.get(key, frozenset())
        o_blocks = [max(b) for o in own if (b := o.blocks.get(key))]
        if c_blocks and (not o_blocks or max(o_blocks) < max(c_blocks)):
            problems.append(f"{key[:18]}...: newest block slot {max(c_blocks)} there, "
                            f"{max(o_blocks) if o_blocks else 'none'} on the target")
    return problems


def gather(ctx: Context, target: HostRecord, *, peer_dbs: bool = True) -> list[Copy]:
    """Every readable copy of the target's pair's history, except the target's own DB."""
    from qpool.remote import Unreachable
    from qpool.signing import stopped_reasons

    pair = target.pair or ""
    hosts = ctx.inventory.pair_hosts(pair)
    copies: list[Copy] = []
    for host in hosts:
        try:
            st = ctx.ssh.status(host)
        except Unreachable as exc:
            ctx.report(f"      history copies on {host.name}: unreadable ({exc}); not counted")
            continue
        if host is not target and peer_dbs and st.get("db_present"):
            if stopped_reasons(st):
                ctx.report(f"      {host.name}'s DB is live (not stopped): not exported; the peer check refuses it")
            else:
                data, _ = ctx.ssh.export_bytes(host, "export-slashing")
                copies.append(Copy(f"{host.name}'s slashing-protection DB", interchange.parse(data, host.name)))
        if st.get("newest_backup"):
            rep = replicas.select_intact(ctx, host)
            if rep is not None:
                data, _ = ctx.ssh.export_bytes(host, "export-replica", rep["path"])
                copies.append(Copy(f"replica {rep['name']} on {host.name} ({rep['age_seconds']:.0f}s old)",
                                   interchange.parse(data, f"replica {rep['name']} on {host.name}")))
    # The target is stopped and locked at every call site: its validator binary reads the raw copies.
    copies += _monitoring_copies(ctx, hosts, target)
    return copies


def _monitoring_copies(ctx: Context, hosts: list[HostRecord], via: HostRecord) -> list[Copy]:
    """The newest intact replica of each of this pair's hosts on the monitoring server (other pairs' copies
    are not this pair's history), read as EIP-3076 on a key host of the pair."""
    mon = ctx.inventory.monitoring()
    copies: list[Copy] = []
    for _owner, name, data in _monitoring_newest(ctx, hosts, via):
        label = f"replica {name} on {mon.name if mon else 'the monitoring server'}"
        copies.append(Copy(label, interchange.parse(data, label), data))
    return copies


def _monitoring_newest(ctx: Context, hosts: list[HostRecord], via: HostRecord) -> list[tuple[str, str, bytes]]:
    """(owner, name, EIP-3076 bytes) of the newest intact replica of each of `hosts` on the monitoring server
    (a corrupt one is reported and the next older one tried), converted on `via`."""
    from qpool.backups import _convert_raw, _pull_raw, list_replicas
    from qpool.remote import Unreachable

    mon = ctx.inventory.monitoring()
    if mon is None or not hosts:
        return []
    try:
        listed = list_replicas(ctx, mon, [h.name for h in hosts])
    except Unreachable as exc:
        ctx.report(f"      history copies on {mon.name}: unreachable ({exc}); not counted")
        return []
    found: list[tuple[str, str, bytes]] = []
    done: set[str] = set()
    for entry in listed:
        name, sidecar = str(entry["name"]), entry.get("sha256")
        owner = name.split("--")[0]
        if owner in done:
            continue
        try:
            raw = _pull_raw(ctx, mon, name, sidecar)
        except QpoolError as exc:
            ctx.report(f"      WARNING: {exc}; trying the next older copy of {owner} on {mon.name}")
            continue
        done.add(owner)
        found.append((owner, name, _convert_raw(ctx, via, raw)))
    return found


def outside_copies(ctx: Context, target: HostRecord, target_status: dict[str, object]) -> list[Copy]:
    """Copies of the target's keys held by OTHER pairs (a key moved between pairs), each filtered to those
    keys: the newest intact replica of every other key host on the monitoring server, and the DB of every
    stopped and locked key host of another pair. Nothing is read when the stack has no other key host."""
    from qpool.key_ownership import loaded_keys
    from qpool.remote import Unreachable
    from qpool.signing import stopped_reasons

    others = sorted((h for h in ctx.inventory.hosts.values()
                     if h.role in KEY_ROLES and h.pair is not None and h.pair != target.pair), key=lambda h: h.name)
    if not others:
        return []
    keys = loaded_keys(target_status)  # type: ignore[arg-type]
    if keys is None:
        raise QpoolError(f"refusing: {target.name} cannot list the keys in its wallet, so the copies of its keys "
                         "held by other pairs cannot be checked; fix that first (nothing started)")
    if not keys:
        return []
    copies: list[Copy] = []
    for host in others:
        try:
            st = ctx.ssh.status(host)
        except Unreachable as exc:
            ctx.report(f"      history copies on {host.name} (pair {host.pair}): unreadable ({exc}); not counted")
            continue
        if not st.get("db_present"):
            continue
        reasons = stopped_reasons(st)
        if reasons:
            ctx.report(f"      {host.name} (pair {host.pair}) is live ({'; '.join(reasons)}): its DB is not read "
                       "(the key-ownership check refuses it if it holds a target key)")
            continue
        label = (f"the slashing-protection DB of {host.pair}'s host {host.name} (stopped; key moved from another "
                 "pair)")
        data, _ = ctx.ssh.export_bytes(host, "export-slashing")
        history = interchange.parse(data, label).only(keys)
        if history.pubkeys:
            copies.append(Copy(label, history, moved_from=host.pair))
    mon = ctx.inventory.monitoring()
    by_name = {h.name: h for h in others}
    for owner, name, data in _monitoring_newest(ctx, others, target):
        pair = by_name[owner].pair if owner in by_name else "another pair"
        label = (f"replica {name} of {pair}'s host {owner} on the monitoring server {mon.name if mon else ''}"
                 " (key moved from another pair)")
        history = interchange.parse(data, label).only(keys)
        if history.pubkeys:
            copies.append(Copy(label, history, moved_from=pair))
    return copies


def require_covered(ctx: Context, target: HostRecord, own: list[interchange.History], copies: list[Copy],
                    *, subject: str, fix: str | None = None, failover: bool = False) -> None:
    """Refuse (naming the copy and the recovery) unless `own` covers every copy."""
    for copy in copies:
        lost = uncovered(copy.history, own)
        if lost:
            raise QpoolError(f"refusing: {copy.label} holds newer slashing-protection history than {subject} "
                             f"({'; '.join(lost[:3])}); {fix or recovery_for(ctx, target, copy, failover=failover)}")
    outside = sum(1 for c in copies if c.moved_from is not None)
    ctx.report(f"      history covers every copy of the pair's history ({len(copies)} cop"
               f"{'y' if len(copies) == 1 else 'ies'} checked"
               f"{f', {outside} of them held by other pairs' if outside else ''})")


def check_before_start(ctx: Context, target: HostRecord, target_status: dict[str, object], *, first_start: bool,
                       archives: list[Copy] | None = None, peer_dbs: bool = True, failover: bool = False) -> None:
    """The activate/first-start/failover check (see the module docstring). Raises QpoolError to refuse.
    `failover`: called by a failover run (peer DBs are checked there already; the recovery text differs)."""
    copies = gather(ctx, target, peer_dbs=peer_dbs) + outside_copies(ctx, target, target_status)
    copies += list(archives or [])
    own: list[interchange.History] = []
    if target_status.get("db_present"):
        data, _ = ctx.ssh.export_bytes(target, "export-slashing")
        own.append(interchange.parse(data, f"export from {target.name}"))
    if first_start:
        mine = [Copy(f"{target.name}'s own DB", h) for h in own]
        existing = [c for c in copies + mine if c.signed]
        if existing:
            more = f" and {len(existing) - 1} other copy/copies" if len(existing) > 1 else ""
            first = next((c for c in existing if c.moved_from is not None), existing[0])
            raise QpoolError(f"--first-start refused: these keys have signed before ({first.label}{more} "
                             f"hold{'' if more else 's'} their history); {recovery_for(ctx, target, first)}")
        ctx.report("first start without slashing-protection history requested (--first-start): no copy of this "
                   "pair's history exists anywhere")
        return
    signed = [c for c in copies if c.signed]
    if not own:
        if signed:
            raise QpoolError(f"refusing: {target.name} has no slashing-protection history, but {signed[0].label} "
                             f"holds history of these keys; {recovery_for(ctx, target, signed[0], failover=failover)}")
        raise QpoolError(f"refusing: {target.name} has no slashing-protection history and no copy exists anywhere "
                         "(no peer DB, no replica on the pair's hosts or the monitoring server, no copy of its keys "
                         "in another pair); if this is the first start ever for these keys, re-run with "
                         "--first-start (logged)")
    require_covered(ctx, target, own, copies, subject=f"{target.name}'s own history", failover=failover)


def check_restore(ctx: Context, target: HostRecord, archive: interchange.History, created: object,
                  own: interchange.History | None) -> None:
    """`qpool restore`: the archive (with what the target already has) must cover every copy of the pair's
    history, so an old archive cannot put a host behind its own replicas, even when it has no history."""
    copies = gather(ctx, target)
    stack = ctx.inventory.stack
    require_covered(ctx, target, [archive] + ([own] if own is not None else []), copies,
                    subject=f"the archive (created {created}) and {target.name}'s own history",
                    fix=f"this archive is too old: take a fresh `qpool backup --stack {stack} --pair {target.pair}` "
                        f"(it collects that copy) and restore that one; nothing was changed ({RUNBOOK})")


def with_monitoring_copies(ctx: Context, target: HostRecord, source: HostRecord, data: bytes,
                           history: interchange.History) -> tuple[bytes, list[str]]:
    """Fenced path: the replica on the target, merged with the monitoring server's newest intact copy of the
    source when that one knows more (shipping to the standby may have failed while the monitoring server
    got it). Importing a union only ever makes slashing protection refuse more."""
    from qpool.backups import merge_interchanges

    newer = [c for c in _monitoring_copies(ctx, [source], target) if uncovered(c.history, [history])]
    if not newer:
        return data, []
    for copy in newer:
        ctx.report(f"      {copy.label} is newer than the replica on {target.name}: merged into the import")
    return merge_interchanges([data] + [c.data for c in newer]), [c.label for c in newer]


def archive_copies(paths: tuple[Path, ...] | list[Path], passphrase_file: Path | None) -> list[Copy]:
    """The operator's archives as copies of the pair's history (opened and verified before any SSH)."""
    from qpool.backups import MERGED_MEMBER, open_archive
    from qpool.keys.cli import _passphrase

    passphrase = _passphrase(passphrase_file, confirm=False)
    copies = []
    for path in paths:
        archive = open_archive(path.read_bytes(), passphrase)
        copies.append(Copy(f"archive {path.name} (created {archive.manifest.get('created')})", archive.history,
                           archive.member(MERGED_MEMBER)))
    return copies
