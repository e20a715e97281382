"""Event counters from ``<ns>_getLogs``, with a persisted cursor that survives restarts and reorgs.

Counting scheme (chosen over "count only up to head - reorg_depth" so events show without delay):

* The cursor is the highest block whose logs were read completely. It only moves forward, one
  fully read range (at most ``log_max_block_range`` blocks) at a time; a failed range stops the
  scan for this cycle and is retried from the same block next cycle.
* Every cycle (so also right after a start) the scan begins ``reorg_depth`` blocks below the
  cursor, so logs that appear in a replacement block after a reorg are picked up.
* To not count a log twice, the identities ``(blockNumber, transactionHash, logIndex)`` of counted
  logs in that rewind window are persisted with the cursor and the totals, in one atomically
  replaced file. A log is counted only if its identity is new.
* Limitation: a log counted from a block that is later reorged away stays counted (counters cannot
  go down). Reorgs deeper than ``reorg_depth`` can lose logs of the replacement blocks.

The state file is bound to the profile, the two event-emitting contracts and ``start_block``; if
any of them changes, the old file is set aside and counting restarts from ``start_block``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.abi import EventSpec
from exporter.addresses import Profile, address_from_rpc, format_address
from exporter.rpc import RpcClient, RpcError, RpcResponseError
from exporter.statefile import read_json, set_aside, write_json_atomic

log = logging.getLogger(__name__)

STATE_FILE = "events.json"
STATE_VERSION = 1

LogId = tuple[int, str, int]  # (blockNumber, transactionHash, logIndex)


@dataclass
class EventState:
    """What is persisted: cursor, counter totals and the identities counted in the rewind window."""

    cursor: int | None = None
    totals: dict[tuple[str, str], int] = field(default_factory=dict)
    mismatches: dict[tuple[str, str], int] = field(default_factory=dict)
    seen: set[LogId] = field(default_factory=set)

    def to_json(self, scope: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "scope": scope,
            "cursor": self.cursor,
            "totals": [[c, e, n] for (c, e), n in sorted(self.totals.items())],
            "mismatches": [[c, e, n] for (c, e), n in sorted(self.mismatches.items())],
            "seen": sorted([b, t, i] for b, t, i in self.seen),
        }

    @classmethod
    def from_json(cls, data: Any) -> EventState:
        """Parse a state file's content; raises ValueError if it is not what to_json wrote."""
        try:
            if data["version"] != STATE_VERSION:
                raise ValueError(f"unsupported state version {data['version']!r}")
            cursor = data["cursor"]
            if cursor is not None and (not isinstance(cursor, int) or cursor < 0):
                raise ValueError(f"bad cursor {cursor!r}")
            totals = {(str(c), str(e)): _nonneg(n) for c, e, n in data["totals"]}
            mismatches = {(str(c), str(e)): _nonneg(n) for c, e, n in data["mismatches"]}
            seen = {(_nonneg(b), str(t), _nonneg(i)) for b, t, i in data["seen"]}
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed state ({exc!r})") from None
        return cls(cursor=cursor, totals=totals, mismatches=mismatches, seen=seen)


def _nonneg(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True)
class ScanResult:
    ok: bool  # every planned range was read (or nothing was due); False if one failed or saving failed
    ranges_read: int
    logs_counted: int
    error: str | None = None


def _quantity(value: Any, what: str) -> int:
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RpcResponseError(f"log {what}: expected a 0x hex quantity, got {value!r:.80}")


class EventScanner:
    """Reads the pool's logs in bounded ranges and keeps persisted counters per (contract, event)."""

    def __init__(
        self,
        rpc: RpcClient,
        profile: Profile,
        contracts: Mapping[str, bytes],
        specs: tuple[EventSpec, ...],
        state_dir: Path,
        max_block_range: int,
        max_ranges_per_cycle: int,
        reorg_depth: int,
        start_block: int,
    ) -> None:
        self.rpc = rpc  # the collector re-points it at each cycle's endpoint
        self._profile = profile
        self._specs = specs
        self._by_key: dict[tuple[bytes, bytes], EventSpec] = {
            (contracts[s.contract], s.topic0): s for s in specs
        }
        self._addresses = sorted({format_address(contracts[s.contract], profile) for s in specs})
        self._topics = ["0x" + s.topic0.hex() for s in specs]
        self._path = state_dir / STATE_FILE
        self._max_range = max_block_range
        self._max_ranges = max_ranges_per_cycle
        self._reorg_depth = reorg_depth
        self._start_block = start_block
        self._scope = {
            "profile": profile.name,
            "addresses": self._addresses,
            "start_block": start_block,
        }
        self._lock = threading.Lock()
        self.state = self._load()

    # -- persistence ---------------------------------------------------------------------------

    def _load(self) -> EventState:
        try:
            data = read_json(self._path)
        except ValueError as exc:
            log.error("%s", exc)
            set_aside(self._path, "corrupt")
            return EventState()
        if data is None:
            return EventState()
        if not isinstance(data, dict) or data.get("scope") != self._scope:
            set_aside(self._path, "superseded")
            return EventState()
        try:
            return EventState.from_json(data)
        except ValueError as exc:
            log.error("%s: %s", self._path, exc)
            set_aside(self._path, "corrupt")
            return EventState()

    def _save(self) -> None:
        with self._lock:
            data = self.state.to_json(self._scope)
        write_json_atomic(self._path, data)

    # -- exposure ------------------------------------------------------------------------------

    def totals(self) -> dict[tuple[str, str], int]:
        """Counter values for every known event (0 for events not seen yet: a true count)."""
        with self._lock:
            base = {(s.contract, s.name): 0 for s in self._specs}
            base.update(self.state.totals)
            return base

    def mismatches(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.state.mismatches)

    @property
    def cursor(self) -> int | None:
        with self._lock:
            return self.state.cursor

    # -- scanning ------------------------------------------------------------------------------

    def scan(self, head: int) -> ScanResult:
        """Read logs from the rewind point up to ``head``, at most max_ranges_per_cycle ranges."""
        cursor = self.cursor
        start = self._start_block if cursor is None else max(self._start_block, cursor + 1 - self._reorg_depth)
        ranges = counted = 0
        while start <= head and ranges < self._max_ranges:
            end = min(head, start + self._max_range - 1)
            try:
                logs = self.rpc.get_logs(self._addresses, self._topics, start, end)
                parsed = [self._parse_log(entry, start, end) for entry in logs]
            except RpcError as exc:
                log.warning("logs %d..%d not read, cursor stays at %s: %s", start, end, self.cursor, exc)
                return ScanResult(False, ranges, counted, str(exc))
            counted += self._apply(parsed, end)
            ranges += 1
            try:
                self._save()
            except OSError as exc:
                log.error("cannot save event state to %s: %s", self._path, exc)
                return ScanResult(False, ranges, counted, f"saving state: {exc}")
            start = end + 1
        return ScanResult(True, ranges, counted)

    def _parse_log(self, entry: Any, start: int, end: int) -> tuple[LogId, EventSpec, int] | None:
        """(identity, spec, topic count) of a log, None for a log that is not ours; raise if malformed."""
        if not isinstance(entry, dict):
            raise RpcResponseError(f"log entry is not an object: {entry!r:.80}")
        if entry.get("removed") is True:
            return None
        topics = entry.get("topics")
        if not isinstance(topics, list) or not topics or not all(isinstance(t, str) for t in topics):
            raise RpcResponseError(f"log topics malformed: {topics!r:.80}")
        address = address_from_rpc(entry.get("address"), self._profile)
        if address is None:
            raise RpcResponseError(f"log address malformed: {entry.get('address')!r:.80}")
        block = _quantity(entry.get("blockNumber"), "blockNumber")
        index = _quantity(entry.get("logIndex"), "logIndex")
        tx_hash = entry.get("transactionHash")
        if not isinstance(tx_hash, str) or not tx_hash.startswith("0x"):
            raise RpcResponseError(f"log transactionHash malformed: {tx_hash!r:.80}")
        if not start <= block <= end:
            raise RpcResponseError(f"log in block {block} outside the requested range {start}..{end}")
        try:
            topic0 = bytes.fromhex(topics[0].removeprefix("0x"))
        except ValueError:
            raise RpcResponseError(f"log topic malformed: {topics[0]!r:.80}") from None
        spec = self._by_key.get((address, topic0))
        if spec is None:
            return None  # the node ignored part of the filter; not an event we count
        return (block, tx_hash.lower(), index), spec, len(topics)

    def _apply(self, parsed: list[tuple[LogId, EventSpec, int] | None], end: int) -> int:
        counted = 0
        with self._lock:
            state = self.state
            for item in parsed:
                if item is None:
                    continue
                log_id, spec, topic_count = item
                if log_id in state.seen:
                    continue
                state.seen.add(log_id)
                key = (spec.contract, spec.name)
                state.totals[key] = state.totals.get(key, 0) + 1
                counted += 1
                if topic_count != spec.topic_count:
                    state.mismatches[key] = state.mismatches.get(key, 0) + 1
                    log.warning(
                        "%s log has %d topics, ABI says %d: check the event signature",
                        spec.signature, topic_count, spec.topic_count,
                    )
            if state.cursor is None or end > state.cursor:
                state.cursor = end
            floor = state.cursor - self._reorg_depth
            state.seen = {item for item in state.seen if item[0] > floor}
        return counted
