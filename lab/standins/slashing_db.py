"""The validator stand-in's slashing-protection database and its EIP-3076 interchange.

The real client keeps this in a bbolt file at ``<datadir>/validator.db`` under an exclusive file lock taken
with a 1 s timeout. The stand-in keeps it in SQLite at exactly that path and takes an exclusive ``flock`` on
the same file first, so the project's failover logic meets the same rule: one process per DB, and a second
one (validator, export or import) fails with the real message. Every check-and-record is one transaction.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from . import runtime

LOCK_MSG = "cannot obtain database lock, database may be in use by another process"
LOCK_TIMEOUT = 1.0
FORMAT_VERSION = "5"
_PUBKEY_RE = re.compile(r"^0x[0-9a-fA-F]{5184}$")
_ROOT_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS metadata(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attestations(
    pubkey TEXT NOT NULL, source_epoch INTEGER NOT NULL, target_epoch INTEGER NOT NULL, signing_root TEXT,
    PRIMARY KEY(pubkey, source_epoch, target_epoch));
CREATE TABLE IF NOT EXISTS blocks(
    pubkey TEXT NOT NULL, slot INTEGER NOT NULL, signing_root TEXT, PRIMARY KEY(pubkey, slot));
"""


class DbError(Exception):
    """Slashing-protection DB or interchange problem; the message is shown to the operator."""


class SlashingDB:
    """Locked handle on ``validator.db``; use as a context manager or call close()."""

    def __init__(self, datadir: Path, gvr: str) -> None:
        runtime.ensure_dir(datadir)
        self.path = datadir / "validator.db"
        self.existed = self.path.exists()
        self.gvr = gvr.lower()
        try:
            self._lock_fd: int | None = runtime.flock_exclusive(self.path, LOCK_TIMEOUT)
        except runtime.LockBusy:
            raise DbError(LOCK_MSG) from None
        self._mutex = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.executescript(_SCHEMA)
            self._check_gvr()
        except (sqlite3.Error, DbError) as exc:
            runtime.release_lock(self._lock_fd)
            if isinstance(exc, DbError):
                raise
            raise DbError(f"{self.path} is not a usable slashing-protection DB ({exc})") from None

    def _check_gvr(self) -> None:
        row = self._conn.execute("SELECT value FROM metadata WHERE key='genesis_validators_root'").fetchone()
        if row is None:
            self._conn.execute("INSERT INTO metadata VALUES('genesis_validators_root', ?)", (self.gvr,))
        elif row[0] != self.gvr:
            raise DbError(f"{self.path} belongs to another network (genesis validators root {row[0]}, this "
                          f"network {self.gvr}): use the right --datadir")

    def close(self) -> None:
        """Close SQLite, then drop the flock (in that order, so no writer outlives the lock)."""
        with self._mutex:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            runtime.release_lock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> SlashingDB:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- signing ------------------------------------------------------------------------------------
    def sign_attestation(self, pubkey: str, source: int, target: int, signing_root: str) -> str | None:
        """Check the new vote against history and record it in one transaction; return a refusal reason."""
        with self._mutex:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self._conn.execute(
                    "SELECT source_epoch, target_epoch FROM attestations WHERE pubkey=?", (pubkey,)).fetchall()
                reason = _slashable(rows, source, target)
                if reason is None:
                    self._conn.execute("INSERT INTO attestations VALUES(?,?,?,?)",
                                       (pubkey, source, target, signing_root))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return reason

    def last_target_epoch(self, pubkey: str) -> int | None:
        """Highest signed target epoch of a key (doppelganger skip rule), or None."""
        with self._mutex:
            row = self._conn.execute("SELECT MAX(target_epoch) FROM attestations WHERE pubkey=?",
                                     (pubkey,)).fetchone()
        return None if row is None else row[0]

    # ---- interchange ---------------------------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        """EIP-3076 interchange (format version 5) of everything in the DB."""
        with self._mutex:
            atts = self._conn.execute(
                "SELECT pubkey, source_epoch, target_epoch, signing_root FROM attestations "
                "ORDER BY pubkey, target_epoch, source_epoch").fetchall()
            blocks = self._conn.execute(
                "SELECT pubkey, slot, signing_root FROM blocks ORDER BY pubkey, slot").fetchall()
        data: dict[str, dict[str, Any]] = {}
        for pubkey, slot, root in blocks:
            entry = data.setdefault(pubkey, {"pubkey": pubkey, "signed_blocks": [], "signed_attestations": []})
            entry["signed_blocks"].append({"slot": str(slot), **({"signing_root": root} if root else {})})
        for pubkey, source, target, root in atts:
            entry = data.setdefault(pubkey, {"pubkey": pubkey, "signed_blocks": [], "signed_attestations": []})
            entry["signed_attestations"].append({"source_epoch": str(source), "target_epoch": str(target),
                                                 **({"signing_root": root} if root else {})})
        return {"metadata": {"interchange_format_version": FORMAT_VERSION, "genesis_validators_root": self.gvr},
                "data": [data[k] for k in sorted(data)]}

    def import_interchange(self, doc: Any) -> tuple[int, int]:
        """Validate a whole interchange document, then merge it (union) in one transaction.

        Returns (attestations added, blocks added). Existing records are never removed or lowered.
        """
        atts, blocks = _parse_interchange(doc, self.gvr)
        with self._mutex:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                before_a = self._conn.total_changes
                self._conn.executemany("INSERT OR IGNORE INTO attestations VALUES(?,?,?,?)", atts)
                added_a = self._conn.total_changes - before_a
                before_b = self._conn.total_changes
                self._conn.executemany("INSERT OR IGNORE INTO blocks VALUES(?,?,?)", blocks)
                added_b = self._conn.total_changes - before_b
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return added_a, added_b

    # ---- backup --------------------------------------------------------------------------------------
    def backup(self, out_dir: Path) -> Path:
        """Consistent copy via the SQLite backup API into ``out_dir/prysm_validatordb_<unix>.backup``."""
        runtime.ensure_dir(out_dir)
        dest = out_dir / f"prysm_validatordb_{int(time.time())}.backup"
        tmp = out_dir / f".{dest.name}.tmp"
        tmp.unlink(missing_ok=True)
        with self._mutex:
            target = sqlite3.connect(tmp)
            try:
                self._conn.backup(target)
            finally:
                target.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
        return dest


def _slashable(rows: list[tuple[int, int]], source: int, target: int) -> str | None:
    """EIP-3076-style refusal rules against the recorded (source, target) pairs of one key."""
    if source > target:
        return f"source epoch {source} is after target epoch {target}"
    for old_source, old_target in rows:
        if old_target >= target:
            return f"double vote: target epoch {old_target} >= {target} already signed"
        if source < old_source and target > old_target:
            return (f"surround vote: new ({source},{target}) surrounds signed ({old_source},{old_target})")
    if rows and source < min(r[0] for r in rows):
        return f"source epoch {source} is below the lowest signed source epoch"
    return None


def _epoch(value: Any, what: str) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise DbError(f"invalid {what} {value!r} in interchange file: expected a decimal string")


def _parse_interchange(doc: Any, gvr: str) -> tuple[list[tuple], list[tuple]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        raise DbError("interchange file has no 'metadata' object: not an EIP-3076 file")
    meta = doc["metadata"]
    version = meta.get("interchange_format_version")
    if version != FORMAT_VERSION:
        raise DbError(f"unsupported interchange_format_version {version!r}: only \"{FORMAT_VERSION}\" is supported")
    root = str(meta.get("genesis_validators_root", "")).lower()
    if root != gvr:
        raise DbError(f"genesis_validators_root {root or '<missing>'} of the interchange file does not match "
                      f"this network ({gvr}): the file is from another network")
    if not isinstance(doc.get("data"), list):
        raise DbError("interchange file has no 'data' list")
    atts: list[tuple] = []
    blocks: list[tuple] = []
    for entry in doc["data"]:
        if not isinstance(entry, dict) or not _PUBKEY_RE.match(str(entry.get("pubkey", ""))):
            raise DbError("interchange entry without a valid pubkey (0x + 5184 hex)")
        pubkey = entry["pubkey"].lower()
        for block in _records(entry, "signed_blocks"):
            blocks.append((pubkey, _epoch(block.get("slot"), "slot"), _root(block)))
        for att in _records(entry, "signed_attestations"):
            source = _epoch(att.get("source_epoch"), "source_epoch")
            target = _epoch(att.get("target_epoch"), "target_epoch")
            if source > target:
                raise DbError(f"attestation with source_epoch {source} > target_epoch {target} for {pubkey[:12]}..")
            atts.append((pubkey, source, target, _root(att)))
    return atts, blocks


def _records(entry: dict[str, Any], key: str) -> list[dict[str, Any]]:
    records = entry.get(key) or []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DbError(f"interchange '{key}' of {entry['pubkey'][:12]}.. must be a list of objects")
    return records


def _root(record: dict[str, Any]) -> str | None:
    root = record.get("signing_root")
    if root is None:
        return None
    if not isinstance(root, str) or not _ROOT_RE.match(root):
        raise DbError(f"invalid signing_root {root!r} in interchange file")
    return root.lower()
