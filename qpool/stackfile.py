"""Record the pair's active host in the stack config, so the next `pulumi up` agrees with reality.

The stack file is edited round-trip (comments and order preserved) with ruamel.yaml; when the Pulumi CLI is
present, `pulumi config set --path` is used instead so an encrypted or remote config stays authoritative.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from core.config import NAMESPACE
from qpool.errors import QpoolError


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def read_active(path: Path, pair: str) -> str:
    doc = _yaml().load(path.read_text())
    for entry in doc["config"][f"{NAMESPACE}:validatorPairs"]:
        if entry["name"] == pair:
            return str(entry.get("active", "primary"))
    raise QpoolError(f"{path}: no validator pair named {pair!r}")


def write_active(path: Path, pair: str, role: str, *, stack: str, use_pulumi: bool | None = None) -> str:
    """Set validatorPairs[<pair>].active; returns how it was written ("pulumi" or "file")."""
    if role not in ("primary", "backup"):
        raise QpoolError(f"active must be primary or backup, not {role!r}")
    yaml = _yaml()
    doc = yaml.load(path.read_text())
    pairs = doc["config"][f"{NAMESPACE}:validatorPairs"]
    index = next((i for i, entry in enumerate(pairs) if entry["name"] == pair), None)
    if index is None:
        raise QpoolError(f"{path}: no validator pair named {pair!r}")
    if use_pulumi is None:
        use_pulumi = shutil.which("pulumi") is not None and not os.environ.get("QPOOL_NO_PULUMI_CLI")
    if use_pulumi:
        proc = subprocess.run(["pulumi", "config", "set", "--path", f"validatorPairs[{index}].active", role,
                               "-s", stack], capture_output=True, timeout=120, cwd=path.parent)
        if proc.returncode != 0:
            raise QpoolError(f"`pulumi config set` failed: {proc.stderr.decode(errors='replace').strip()[:300]}; "
                             f"set validatorPairs[{index}].active to {role} by hand")
        return "pulumi"
    pairs[index]["active"] = role
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        yaml.dump(doc, fh)
    os.replace(tmp, path)
    return "file"
