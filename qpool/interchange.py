"""EIP-3076 slashing-protection interchange: parse, validate, and check that no history is lost."""

from __future__ import annotations

import json
from dataclasses import dataclass

from qpool.errors import QpoolError

FORMAT_VERSION = "5"


@dataclass(frozen=True)
class History:
    genesis_validators_root: str
    attestations: dict[str, frozenset[tuple[int, int]]]  # pubkey -> {(source, target)}
    blocks: dict[str, frozenset[int]]  # pubkey -> {slot}

    @property
    def pubkeys(self) -> frozenset[str]:
        return frozenset(self.attestations) | frozenset(self.blocks)

    def only(self, pubkeys: set[str] | frozenset[str] | list[str]) -> History:
        """The entries of the given keys only (case and a leading 0x ignored): a copy held by another pair is
        only the target's history for the keys the target holds (a key moved between pairs)."""
        wanted = {_bare(k) for k in pubkeys}
        return History(self.genesis_validators_root,
                       {k: v for k, v in self.attestations.items() if _bare(k) in wanted},
                       {k: v for k, v in self.blocks.items() if _bare(k) in wanted})

    def max_target(self, pubkey: str) -> int | None:
        targets = [t for _s, t in self.attestations.get(pubkey, ())]
        return max(targets) if targets else None


def _bare(key: str) -> str:
    return key.lower().removeprefix("0x")


def parse(data: bytes, where: str) -> History:
    try:
        doc = json.loads(data)
        meta = doc["metadata"]
        if str(meta["interchange_format_version"]) != FORMAT_VERSION:
            raise QpoolError(f"{where}: interchange format {meta['interchange_format_version']!r}, expected "
                             f"{FORMAT_VERSION!r}")
        root = str(meta["genesis_validators_root"])
        attestations: dict[str, set[tuple[int, int]]] = {}
        blocks: dict[str, set[int]] = {}
        for entry in doc["data"]:
            key = str(entry["pubkey"]).lower()
            attestations.setdefault(key, set()).update(
                (int(a["source_epoch"]), int(a["target_epoch"])) for a in entry.get("signed_attestations", []))
            blocks.setdefault(key, set()).update(int(b["slot"]) for b in entry.get("signed_blocks", []))
    except (ValueError, KeyError, TypeError) as exc:
        raise QpoolError(f"{where}: not a valid EIP-3076 interchange ({exc.__class__.__name__}: {exc})") from None
    return History(root, {k: frozenset(v) for k, v in attestations.items()},
                   {k: frozenset(v) for k, v in blocks.items()})


def missing(expected: History, actual: History) -> list[str]:
    """What `expected` holds that `actual` does not: must be empty after an import (history ⊇)."""
    problems = []
    if expected.genesis_validators_root != actual.genesis_validators_root:
        problems.append(f"genesis_validators_root differs ({expected.genesis_validators_root} vs "
                        f"{actual.genesis_validators_root})")
    for key in expected.pubkeys:
        lost_att = expected.attestations.get(key, frozenset()) - actual.attestations.get(key, frozenset())
        lost_blk = expected.blocks.get(key, frozenset()) - actual.blocks.get(key, frozenset())
        if lost_att or lost_blk:
            problems.append(f"{key[:18]}...: {len(lost_att)} attestation(s) and {len(lost_blk)} block(s) missing")
    return problems


def regressions(older: History, newer: History) -> list[str]:
    """A fresh export must dominate an older copy of the same DB: every key kept, no target going back."""
    problems = []
    for key in older.pubkeys:
        if key not in newer.pubkeys:
            problems.append(f"{key[:18]}... is in the replicated backup but missing from the export")
            continue
        old, new = older.max_target(key), newer.max_target(key)
        if old is not None and (new is None or new < old):
            problems.append(f"{key[:18]}...: export's newest target {new} is older than the backup's {old}")
    return problems
