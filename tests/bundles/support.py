"""Run a bundle's applier against a temporary root, with stand-in nft/systemctl/systemd-run on PATH.

The stand-ins log every call (one line each) to calls.log; `nft -c/-f` fail when the file contains the
word BROKEN, so a test can make a check or a load fail. `nft list ruleset` prints the file
`kernel.nft` in the fake root: what the "kernel" currently holds (`nft -f FILE` replaces it).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cloud_init.bundles import META_DIR, Bundle, bundle_tar

FAKE_NFT = r"""#!/bin/sh
echo "nft $*" >> "$QP_FAKE_LOG"
if [ "$1" = list ]; then cat "$QP_FAKE_KERNEL" 2>/dev/null; exit 0; fi
check=0
if [ "$1" = -c ]; then check=1; shift; fi
[ "$1" = -f ] || exit 2
if grep -q BROKEN "$2"; then echo "$2:1:1-6: Error: syntax error" >&2; exit 1; fi
[ $check = 1 ] && exit 0
grep -v '^flush ruleset$' "$2" > "$QP_FAKE_KERNEL"
exit 0
"""
FAKE_LOGGER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$QP_FAKE_LOG"
[ -n "$QP_FAKE_FAIL" ] && case "$*" in *"$QP_FAKE_FAIL"*) echo "failed: $*" >&2; exit 1;; esac
exit 0
"""


@dataclass
class FakeHost:
    root: Path
    bin: Path
    log: Path
    kernel: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "QP_BUNDLE_ROOT": str(self.root), "PATH": f"{self.bin}:{os.environ['PATH']}",
                "QP_FAKE_LOG": str(self.log), "QP_FAKE_KERNEL": str(self.kernel), **extra}

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def file(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def stage(self, bundle: Bundle, where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(bundle_tar(bundle))) as tar:
            tar.extractall(where, filter="data")
        return where

    def applier(self, args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
        """Run the applier copy the host keeps (as the revert timer and the confirm step do)."""
        path = self.root / "var/lib/quantapool/bundles/qp-bundle-apply.py"
        return subprocess.run(["python3", str(path), *args], capture_output=True, text=True, timeout=60,
                              env=self.env(**extra))

    def apply(self, bundle: Bundle, **extra: str) -> subprocess.CompletedProcess[str]:
        n = len(list(self.root.parent.glob("staged-*")))
        staged = self.stage(bundle, self.root.parent / f"staged-{n}")
        return subprocess.run(["python3", str(staged / META_DIR / "apply.py"), "apply", str(staged)],
                              capture_output=True, text=True, timeout=60, env=self.env(**extra))


def fake_host(tmp_path: Path) -> FakeHost:
    root, fake_bin = tmp_path / "root", tmp_path / "bin"
    root.mkdir()
    fake_bin.mkdir()
    (fake_bin / "nft").write_text(FAKE_NFT)
    for name in ("systemctl", "systemd-run", "sshd"):
        (fake_bin / name).write_text(FAKE_LOGGER)
    for p in fake_bin.iterdir():
        p.chmod(0o755)
    return FakeHost(root, fake_bin, tmp_path / "calls.log", tmp_path / "kernel.nft")
