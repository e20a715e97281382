"""An independent double-sign detector and slashing-history check for lab failover scenarios.

Why independent: qpool's own checks decide whether a validator may start; this module only looks at
what actually happened, from the hosts' disks, sharing no code with qpool or qp-validator-ctl. It reads
every key host's signing log (the stand-in validator appends each signature to it after recording it in
its slashing-protection DB) straight from the host's overlay on the operator side, so it works while a
host is hung, cut off the network or powered off (power-off leaves the overlay mounted).

Two questions, asked after every scenario:

* double signs: any two attestations of one pubkey with the same target epoch and different signing
  roots (double vote), or where one surrounds the other (surround vote); also the same (pubkey, target)
  signed by two different hosts (not slashable if the messages are identical, but proof that two
  signers ran for the same duty, which the safety model forbids).
* lost history: every attestation any host ever signed must be in the slashing-protection DB of the host
  that signs now (read read-only with sqlite3 from its disk). The only permitted exception is the fenced
  path, where the newest replicated backup can miss the dead primary's last votes; those must all target
  epochs *before* the epoch gate, and the new signer's first vote must target the gate epoch or later.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lab.hosts import LabHost

VALIDATOR_DIR = PurePosixPath("/var/lib/quantapool/validator")
SIGNING_LOG = VALIDATOR_DIR / "signing-log.jsonl"
VALIDATOR_DB = VALIDATOR_DIR / "validator.db"


@dataclass(frozen=True)
class Signed:
    """One attestation from a signing log (pubkeys normalised to lower case)."""

    host: str
    pubkey: str
    slot: int
    source_epoch: int
    target_epoch: int
    signing_root: str
    ts: str

    @property
    def vote(self) -> tuple[str, int, int]:
        return (self.pubkey, self.source_epoch, self.target_epoch)

    def short(self) -> str:
        return (f"{self.host} {self.pubkey[:12]}.. slot {self.slot} ({self.source_epoch},{self.target_epoch}) "
                f"{self.signing_root[:12]}.. at {self.ts}")


@dataclass
class Finding:
    kind: str  # double-vote | surround-vote | two-signers-same-duty
    first: Signed
    second: Signed

    def __str__(self) -> str:
        return f"{self.kind}: {self.first.short()} <-> {self.second.short()}"


@dataclass
class Report:
    """What the detector saw: all records, and the problems (empty lists mean safe)."""

    records: list[Signed] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def double_signs(self) -> int:
        return len(self.findings)


def guest_path(host: LabHost, path: PurePosixPath) -> Path:
    """Where a guest path lives on the operator side: a bind-mounted volume, else the host's overlay.

    The merged overlay stays mounted after a power-off; if it is not mounted (destroyed host) the upper
    layer still holds every file the guest wrote.
    """
    for src, mount_point in host.binds.items():
        mp = PurePosixPath(mount_point)
        if path == mp or mp in path.parents:
            return Path(src) / path.relative_to(mp)
    merged = host.merged / path.relative_to("/")
    if merged.exists() or host.merged.is_mount():
        return merged
    return host.upper / path.relative_to("/")


def read_signing_log(host: LabHost) -> list[Signed]:
    """All attestations this host's validator ever logged (a torn last line is ignored)."""
    path = guest_path(host, SIGNING_LOG)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line still being written when the host was killed
        if rec.get("duty") != "attestation":
            continue
        out.append(Signed(host=str(rec["host"]), pubkey=str(rec["pubkey"]).lower(), slot=int(rec["slot"]),
                          source_epoch=int(rec["source_epoch"]), target_epoch=int(rec["target_epoch"]),
                          signing_root=str(rec["signing_root"]).lower(), ts=str(rec["ts"])))
    return out


def find_double_signs(records: Iterable[Signed]) -> list[Finding]:
    """Slashable pairs (double and surround votes) and one duty signed on two hosts."""
    by_key: dict[str, list[Signed]] = defaultdict(list)
    for rec in records:
        by_key[rec.pubkey].append(rec)
    findings: list[Finding] = []
    for recs in by_key.values():
        recs.sort(key=lambda r: (r.target_epoch, r.source_epoch, r.host))
        for i, a in enumerate(recs):
            for b in recs[i + 1:]:
                if a.target_epoch == b.target_epoch:
                    if a.signing_root != b.signing_root:
                        findings.append(Finding("double-vote", a, b))
                    elif a.host != b.host:
                        findings.append(Finding("two-signers-same-duty", a, b))
                elif (a.source_epoch < b.source_epoch and a.target_epoch > b.target_epoch) or (
                        b.source_epoch < a.source_epoch and b.target_epoch > a.target_epoch):
                    findings.append(Finding("surround-vote", a, b))
    return findings


def scan(hosts: Iterable[LabHost]) -> Report:
    """Read every given host's signing log and look for double signs across all of them."""
    records = [rec for host in hosts for rec in read_signing_log(host)]
    return Report(records=records, findings=find_double_signs(records))


def read_db_votes(host: LabHost, attempts: int = 20) -> set[tuple[str, int, int]]:
    """(pubkey, source, target) of every attestation in the host's slashing-protection DB, read-only.

    The validator may be writing at the same moment; SQLite's own locking makes a read-only reader wait
    or fail with "database is locked", which is retried.
    """
    path = guest_path(host, VALIDATOR_DB)
    if not path.exists():
        return set()
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as conn:
                rows = conn.execute("SELECT pubkey, source_epoch, target_epoch FROM attestations").fetchall()
            return {(str(p).lower(), int(s), int(t)) for p, s, t in rows}
        except sqlite3.OperationalError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"cannot read {path} read-only: {last}")


@dataclass
class HistoryCheck:
    """History of every host's signing log versus the DB of the host that signs now."""

    signer: str
    checked: int
    lost: list[Signed]
    covered_by_gate: list[Signed]

    def __str__(self) -> str:
        return (f"history on {self.signer}: {self.checked} signed vote(s) checked, {len(self.lost)} lost, "
                f"{len(self.covered_by_gate)} absent but before the epoch gate")


def check_history(signer: LabHost, hosts: Iterable[LabHost], *, gate_epoch: int | None = None,
                  allowed: set[tuple[str, int, int]] | None = None) -> HistoryCheck:
    """The signer's DB must hold every vote any host logged (logs read first, then the DB).

    `gate_epoch`: the fenced path's epoch gate; votes missing from the DB that target an earlier epoch
    are reported as covered by the gate (the replicated backup was older than the fence), not as lost.
    `allowed`: votes already accepted as gate-covered by an earlier fenced failover.
    """
    records = [rec for host in hosts for rec in read_signing_log(host)]
    db = read_db_votes(signer)
    lost, covered = [], []
    for rec in records:
        if rec.vote in db:
            continue
        if (allowed and rec.vote in allowed) or (gate_epoch is not None and rec.target_epoch < gate_epoch):
            covered.append(rec)
        else:
            lost.append(rec)
    return HistoryCheck(signer=signer.name, checked=len(records), lost=lost, covered_by_gate=covered)
