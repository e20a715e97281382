"""Host configuration bundles: everything a stack-config edit can change on a running host.

Why: user-data runs once (first boot) and is in `ignore_changes`, so an edit that lives there never reaches
a host. A bundle is a plain, deterministic tar (files at their host paths + `.qp-bundle/manifest.json` +
`.qp-bundle/apply.py`, the applier) that one `remote.Command` streams to the host on stdin; its digest is
the step's trigger, so the step re-runs exactly when a file, a check or an action of the bundle changes.

The applier (cloud_init/files/qp_bundle_apply.py, stdlib only) stages the files, runs the bundle's checks on
the staged copies, and only then installs the changed files atomically and runs the on-change actions of
the changed paths. A failed check changes nothing and fails the step with one line. A bundle with
`firewall` set loads its ruleset with a host-side auto-revert that the later `<host>-firewall-confirm` step
disarms (see `FIREWALL_REVERT_SECONDS`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from cloud_init import HostFile

#: Inside the tar: the applier and the manifest (not host files; `qpool render` lists them apart).
META_DIR = ".qp-bundle"
APPLIER_SOURCE = Path(__file__).with_name("files") / "qp_bundle_apply.py"
#: Where the applier keeps per-bundle installed-manifests, pending firewall state and its own copy.
STATE_DIR = "/var/lib/quantapool/bundles"
APPLIER_ON_HOST = f"{STATE_DIR}/qp-bundle-apply.py"
#: Seconds a new firewall ruleset stays loaded without a confirm before the host restores the previous one.
#: Long enough for the bundle steps between apply and confirm (a few SSH round trips), short enough that
#: a lockout heals before anyone has to reach for the Hetzner console.
FIREWALL_REVERT_SECONDS = 90
#: The root-owned entry point of every configuration delivery (cloud_init/files/qp_apply.py): the deploy
#: identity's sudo lists it, never a shell. Installed by user-data, kept current by the base bundle.
APPLY_TOOL = "/usr/local/sbin/qp-apply"
APPLY_TOOL_SOURCE = Path(__file__).with_name("files") / "qp_apply.py"
#: The step that delivers a bundle: qp-apply extracts the base64 tar on stdin into a private staging dir
#: (0700, root, under /run), runs the bundle's applier there and always removes the staging dir. Nothing in
#: stdin is secret.
INSTALL_COMMAND = f"sudo {APPLY_TOOL} bundle"

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Check:
    """A shell command run on the staged bundle before anything is installed; non-zero refuses the bundle.

    `$STAGED` is the staging root: the staged copy of /etc/nftables.conf is "$STAGED/etc/nftables.conf".
    """

    name: str
    command: str


@dataclass(frozen=True)
class OnChange:
    """A shell command run after install when a path matching one of `paths` (fnmatch) changed or vanished."""

    paths: tuple[str, ...]
    command: str


@dataclass(frozen=True)
class Bundle:
    """One named set of host files with its checks and on-change actions (see the module docstring).

    `firewall`: path of an nftables ruleset (the bundle's only file) applied with auto-revert instead of
    on-change actions.
    """

    name: str
    files: tuple[HostFile, ...]
    checks: tuple[Check, ...] = ()
    on_change: tuple[OnChange, ...] = ()
    firewall: str | None = None
    revert_seconds: int = field(default=FIREWALL_REVERT_SECONDS)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"bundle name {self.name!r}: lowercase letters, digits and '-' only")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError(f"bundle {self.name}: a path appears twice")
        for f in self.files:
            if not f.path.startswith("/") or ".." in f.path.split("/") or f.path.startswith(f"/{META_DIR}"):
                raise ValueError(f"bundle {self.name}: unsafe path {f.path!r}")
            if len(f.mode) != 4 or not set(f.mode) <= set("01234567") or ":" not in f.owner:
                raise ValueError(f"bundle {self.name}: {f.path}: mode must be 4 octal digits, owner user:group")
        if self.firewall is not None and paths != [self.firewall]:
            raise ValueError(f"bundle {self.name}: a firewall bundle carries exactly its ruleset {self.firewall}")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(bundle: Bundle) -> dict:
    """What the applier needs; `digest` names the bundle's content (the firewall confirm step uses it)."""
    files = [{"path": f.path, "mode": f.mode, "owner": f.owner, "sha256": _sha(f.content.encode())}
             for f in sorted(bundle.files, key=lambda f: f.path)]
    body: dict = {
        "bundle": bundle.name,
        "files": files,
        "checks": [{"name": c.name, "command": c.command} for c in bundle.checks],
        "on_change": [{"paths": list(a.paths), "command": a.command} for a in bundle.on_change],
        "firewall": ({"path": bundle.firewall, "revert_seconds": bundle.revert_seconds}
                     if bundle.firewall else None),
    }
    body["digest"] = _sha(json.dumps(body, sort_keys=True).encode())
    return body


def bundle_digest(bundle: Bundle) -> str:
    return manifest(bundle)["digest"]


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 0, 0, 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def bundle_tar(bundle: Bundle) -> bytes:
    """Deterministic tar: sorted members, mtime 0, root-owned; same bundle, same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, f"{META_DIR}/apply.py", APPLIER_SOURCE.read_bytes(), 0o755)
        _add(tar, f"{META_DIR}/manifest.json",
             (json.dumps(manifest(bundle), indent=2, sort_keys=True) + "\n").encode(), 0o644)
        for f in sorted(bundle.files, key=lambda f: f.path):
            _add(tar, f.path.lstrip("/"), f.content.encode(), int(f.mode, 8))
    return buf.getvalue()


def bundle_tar_b64(bundle: Bundle) -> str:
    """The step's stdin."""
    return base64.b64encode(bundle_tar(bundle)).decode()


def confirm_command(bundle_name: str, digest: str) -> str:
    """The firewall confirm step: a new SSH connection proves the new ruleset lets the applier in."""
    return f"sudo {APPLY_TOOL} confirm {bundle_name} {digest}"


def is_bundle_member_meta(name: str) -> bool:
    """Tar members that are the bundle's machinery, not host files (for review and `qpool lab apply`)."""
    return name == META_DIR or name.startswith(META_DIR + "/")


__all__ = [
    "APPLY_TOOL",
    "FIREWALL_REVERT_SECONDS",
    "INSTALL_COMMAND",
    "Bundle",
    "Check",
    "OnChange",
    "bundle_digest",
    "bundle_tar",
    "bundle_tar_b64",
    "confirm_command",
    "is_bundle_member_meta",
    "manifest",
]
