"""The stand-ins' "attestation gossip": what every beacon node of one lab network has seen validators sign.

Why: a real beacon node answers `POST /zond/v1/validator/liveness/{epoch}` from its head state's epoch
participation, i.e. from attestations of ANY validator on the network (gossiped and included in blocks), not
only from its own validator client. qpool's chain-side check before a start (qpool/chain_liveness.py) asks
exactly that question ("did any of these keys vote in the last two epochs, wherever it runs?"), so the
stand-in beacon must see the votes of other hosts too. There is no P2P network between stand-ins; instead
every validator stand-in appends each attestation it signs to `<QP_STANDIN_GOSSIP_DIR>/<hostname>.jsonl`
(world-readable), and every beacon stand-in reads all `*.jsonl` files of that directory. The lab binds one
shared directory of the operator machine into every key host (lab/overlay.py, lab/deploy.py); a test can add
an outsider's file there (a signer that is not a host of the stack). Unset: no gossip (own votes are not
seen either: a lone stand-in reports every key not live).

The validator registry is deterministic and needs no deposits: every well-formed 2592-byte public key is a
validator whose index is derived from its hash (REGISTRY_SIZE indices; a collision can only make a key look
live, the safe direction for a liveness check).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from . import chain

ENV_GOSSIP_DIR = "QP_STANDIN_GOSSIP_DIR"
PUBKEY_BYTES = 2592
#: Number of validators in the stand-in registry (indices 0 .. REGISTRY_SIZE - 1).
REGISTRY_SIZE = 1 << 20


def gossip_dir() -> Path | None:
    raw = chain.env(ENV_GOSSIP_DIR).strip()
    return Path(raw) if raw else None


def validator_index(pubkey: str) -> int:
    """The stand-in registry's index of a public key (0x-hex, any case)."""
    raw = bytes.fromhex(pubkey.lower().removeprefix("0x"))
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") % REGISTRY_SIZE


def publish(line: str, hostname: str) -> str | None:
    """Append one signing-log line to this host's gossip file; the error text if that failed (best effort:
    the vote is already recorded in the slashing-protection DB and the local signing log)."""
    directory = gossip_dir()
    if directory is None:
        return None
    path = directory / f"{hostname}.jsonl"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.fchmod(fd, 0o644)  # readable by every beacon user, whatever the unit's UMask
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def seen_votes(max_slot: int | None = None) -> list[dict[str, Any]]:
    """Every attestation any validator published (a torn last line is skipped); only slots <= max_slot
    (a vote is in the chain only once the head has reached its slot)."""
    directory = gossip_dir()
    if directory is None:
        return []
    out: list[dict[str, Any]] = []
    try:
        files = sorted(directory.glob("*.jsonl"))
    except OSError:
        return []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            try:
                rec = json.loads(line)
                if rec.get("duty") != "attestation":
                    continue
                vote = {"pubkey": str(rec["pubkey"]).lower(), "slot": int(rec["slot"]),
                        "target_epoch": int(rec["target_epoch"]), "host": str(rec.get("host"))}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if max_slot is None or vote["slot"] <= max_slot:
                out.append(vote)
    return out
