"""A step journal for failovers: resumable after a crash or Ctrl-C at any step, one run at a time.

The journal lives on the operator's machine (one file per stack and pair) and is written atomically after
every step. An exclusive `flock` on it stops two `qpool` processes on one machine from driving the same
pair; the host-side operation lock stops two machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qpool.errors import QpoolError


def state_dir() -> Path:
    base = os.environ.get("QPOOL_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "quantapool")
    return Path(base)


@dataclass
class Journal:
    path: Path
    run_id: str
    stack: str
    pair: str
    source: str
    target: str
    started: float
    mode: str = "clean"  # clean | fenced
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    completed: bool = False
    aborted: str | None = None

    def done(self, step: str) -> bool:
        return bool(self.steps.get(step, {}).get("done"))

    def data(self, step: str) -> dict[str, Any]:
        return self.steps.get(step, {}).get("data", {})

    def mark(self, step: str, **data: Any) -> None:
        self.steps[step] = {"done": True, "at": time.time(), "data": data}
        self.save()

    def save(self) -> None:
        doc = {k: v for k, v in self.__dict__.items() if k != "path"}
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def journal_path(stack: str, pair: str, base: Path | None = None) -> Path:
    directory = (base or state_dir()) / "journal"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory / f"failover-{stack}-{pair}.json"


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    lock = path.with_suffix(".lock")
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise QpoolError(f"another qpool process on this machine is running a failover for this pair "
                             f"(lock {lock}); wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_journal(path: Path, *, stack: str, pair: str, source: str, target: str) -> tuple[Journal, bool]:
    """The unfinished run for this pair and direction, or a new one. Returns (journal, resumed)."""
    if path.exists():
        doc = json.loads(path.read_text())
        if not doc.get("completed") and not doc.get("aborted"):
            if (doc["source"], doc["target"]) != (source, target):
                raise QpoolError(f"an unfinished failover {doc['source']} -> {doc['target']} (run {doc['run_id']}) "
                                 f"exists in {path}; finish it first by re-running it")
            return Journal(path=path, **doc), True
    journal = Journal(path=path, run_id=uuid.uuid4().hex[:12], stack=stack, pair=pair, source=source,
                      target=target, started=time.time())
    journal.save()
    return journal, False


def last_journal(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
