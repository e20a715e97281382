"""Which replicated slashing-protection copy to use: the newest one that passes its checksum.

Why: the fenced path (and the clean path's cross-check) read the newest replicated copy on the target. A
newest copy that fails its checksum (truncated while shipping, or rotted on disk) used to stop the
failover, and every re-run stopped the same way: the pair stayed without a signer until someone deleted
the file by hand. Now the target host (`qp-validator-ctl select-replica`) checks the copies newest first,
moves each one that fails into `<replica dir>/quarantine/` (kept for inspection, never used again) and
returns the newest intact one; qpool reports what was moved aside and which copy, of what age, is used.
The age bound and the source-host check apply to the copy actually used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qpool.inventory import HostRecord

if TYPE_CHECKING:
    from qpool.context import Context


def select_intact(ctx: Context, host: HostRecord) -> dict[str, Any] | None:
    """The newest intact replica on `host` (path, name, mtime, age_seconds, sha256, source, skipped), or
    None if it holds none; corrupt copies found on the way are reported (they were moved aside)."""
    doc = ctx.ssh.ctl(host, "select-replica", timeout=300)
    skipped = doc.get("skipped") or []
    for bad in skipped:
        ctx.report(f"      WARNING: replicated copy {bad['name']} on {host.name} {bad['reason']}: moved aside to "
                   f"{bad['moved_to']} (never used)")
    if not doc.get("path"):
        return None
    fallback = f", the newest intact one after {len(skipped)} corrupt" if skipped else ""
    ctx.report(f"      replicated copy {doc['name']} on {host.name} ({doc['age_seconds']:.0f}s old{fallback})")
    return doc


def one_line_cause(text: str) -> str:
    """A host's error in one line: the cause if named (disk full, permission, checksum), else the last
    meaningful line (a Python traceback's last line is its exception), never a multi-line fragment."""
    low = text.lower()
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith((" ", "\t", "Traceback", "During handling"))]
    last = lines[-1][:300] if lines else "no error output"
    if "disk full" in low or "no space left" in low or "disk is full" in low:
        return last if "disk full" in last.lower() else f"disk full ({last})"
    if "permission denied" in low and "permission denied" not in last.lower():
        return f"permission denied ({last})"
    return last
