"""The contract exporter's hash-locked wheels for the lab, downloaded once and served by the lab's mirror.

Why: lab hosts have no route to PyPI, yet the lab should run the exporter exactly as production installs
it (`pip install --require-hashes --only-binary=:all: -r requirements.lock` in qp-install-exporter). The
operator machine downloads the lock's wheels once, for the lab hosts' interpreter (Debian 12: CPython 3.11,
x86_64), into a cache directory named after the lock's sha256, so a changed lock gets a fresh download and
an unchanged one never touches the network again. pip checks every hash while downloading, and again on
the lab host while installing. The mirror serves the directory; its HTML listing is a valid `--find-links`
page (lab/overlay.py points the monitoring host's pip at it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cloud_init.exporter_deploy import LOCK_SRC
from lab.image import DEFAULT_CACHE_DIR, SUITE

#: The lab hosts' interpreter (lab/image.py builds Debian `SUITE`), as pip platform/ABI tags.
TARGET = {"bookworm": ("3.11", "cp311", ("manylinux_2_17_x86_64", "manylinux2014_x86_64"))}
COMPLETE = ".complete"


class WheelsError(Exception):
    """The wheels could not be downloaded; the message says what to do."""


def cache_dir(lock: Path = LOCK_SRC, root: Path = DEFAULT_CACHE_DIR) -> Path:
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    return root / f"exporter-wheels-{SUITE}-{digest}"


def download_command(lock: Path, dest: Path) -> list[str]:
    """`pip download` of exactly the lock's wheels (hash-checked, no dependency resolution beyond it)."""
    python_version, abi, platforms = TARGET[SUITE]
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
           "--require-hashes", "--only-binary=:all:", "--no-deps", "-r", str(lock), "-d", str(dest),
           "--python-version", python_version, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
           "--abi", "none"]
    for platform in (*platforms, "any"):
        cmd += ["--platform", platform]
    return cmd


def exporter_wheels(lock: Path = LOCK_SRC, root: Path = DEFAULT_CACHE_DIR) -> Path:
    """The cached wheel directory for ``lock``, downloading it on first use."""
    final = cache_dir(lock, root)
    if (final / COMPLETE).exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        proc = subprocess.run(download_command(lock, work), capture_output=True, text=True, timeout=900,
                              check=False)
        if proc.returncode != 0:
            raise WheelsError(f"pip download of {lock} failed (rc {proc.returncode}): "
                              f"{proc.stderr.strip()[-800:]}; the lab needs PyPI access once to fill {final}")
        (work / COMPLETE).write_text(hashlib.sha256(lock.read_bytes()).hexdigest() + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def publish(wheels: Path, mirror_root: Path) -> Path:
    """Copy the wheels under ``mirror_root/wheels`` (the mirror serves only its own directory)."""
    dest = mirror_root / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(wheels.glob("*.whl")):
        shutil.copy2(wheel, dest / wheel.name)
    return dest
