"""The lab's base image: a Debian 12 rootfs prepared to look like a pristine cloud image.

Lab hosts have no route out, so everything the roles' cloud-init would ``apt install`` is baked in
(with the apt lists kept, so ``apt-get install -y <installed package>`` succeeds offline). Services
those packages enable at install time are disabled again: on the lab, as in production, the roles'
cloud-init enables what it needs, and an image that starts prometheus by itself would hide a missing
``enable`` in the user-data. Images are cached by a key over everything that shapes them, built in a
temp dir, renamed into place atomically and guarded by an flock, so parallel runs share one build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lab.net import LabError, run

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "cloud-init", "iproute2", "sudo",
    "procps", "netbase", "ca-certificates", "usr-is-merged", "iputils-ping", "less",
)
# What the roles' cloud-init installs; tests and benchmarks use exactly this list so the cache is shared.
LAB_ROLE_PACKAGES = (
    "nftables", "chrony", "unattended-upgrades", "prometheus-node-exporter", "prometheus",
    "prometheus-alertmanager", "curl", "jq", "python3-venv", "sqlite3", "ca-certificates",
)
# Bump whenever _prepare() or the build recipe changes: it is part of the cache key.
PREP_VERSION = 1
DEFAULT_CACHE_DIR = Path("/var/cache/quantapool-lab")
BUILD_TIMEOUT = 1200.0
LOCK_TIMEOUT = 1500.0
_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_UNITS_BEFORE = "units-before.txt"
_UNITS_AFTER = "units-after.txt"


def image_key(extra_packages: Sequence[str] = ()) -> str:
    """Cache key over the suite, mirrors, package lists and prep recipe version."""
    spec = {"suite": SUITE, "mirrors": MIRRORS, "base": sorted(BASE_PACKAGES),
            "extra": sorted(set(extra_packages)), "prep": PREP_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build_base_image(cache_dir: Path = DEFAULT_CACHE_DIR, extra_packages: Sequence[str] = (),
                     log: Callable[[str], None] | None = None) -> Path:
    """Return the path of a ready rootfs with ``extra_packages`` installed, building it if needed.

    ``log`` (optional) receives progress while building: package counts every second (see qpool.progress).
    """
    from qpool.progress import progress_of

    progress = progress_of(log or (lambda _msg: None))
    for pkg in extra_packages:
        if not _PACKAGE_RE.fullmatch(pkg):
            raise LabError(f"build_base_image: {pkg!r} is not a Debian package name")
    if shutil.which("mmdebstrap") is None:
        raise LabError("build_base_image: mmdebstrap not installed; apt-get install mmdebstrap")
    key = image_key(extra_packages)
    final = cache_dir / f"{SUITE}-{key}"
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".lock"):
        if final.is_dir():  # another process built it while we waited
            return final
        for stale in cache_dir.glob(f".tmp-{SUITE}-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{SUITE}-{key}-", dir=cache_dir))
        try:
            rootfs = work / "rootfs"
            def tick(installed: int, downloaded: int) -> None:
                progress.update("image", f"building the Debian {SUITE} base image (mmdebstrap, cached afterwards): "
                                "packages installed", current=installed, total=max(installed, downloaded) or None)

            _mmdebstrap(rootfs, work, sorted(set(extra_packages) - set(BASE_PACKAGES)), tick)
            progress.update("image", "preparing the image (pristine cloud-image state)")
            _prepare(rootfs, work)
            (cache_dir / f"{SUITE}-{key}.json").write_text(json.dumps({
                "suite": SUITE, "base": BASE_PACKAGES, "extra": list(extra_packages),
                "prep_version": PREP_VERSION, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, indent=1))
            rootfs.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive flock, waiting (bounded) for a concurrent build to finish."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"build_base_image: {path} held by another build for "
                                   f"{LOCK_TIMEOUT:g}s; check for a stuck mmdebstrap") from None
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)


def _package_counts(rootfs: Path) -> tuple[int, int]:
    """(installed, downloaded) packages in a rootfs being bootstrapped: dpkg's status file and apt's cache."""
    try:
        installed = (rootfs / "var/lib/dpkg/status").read_text(errors="replace").count(
            "Status: install ok installed")
    except OSError:
        installed = 0
    try:
        downloaded = sum(1 for _ in (rootfs / "var/cache/apt/archives").glob("*.deb"))
    except OSError:
        downloaded = 0
    return installed, downloaded


def _mmdebstrap(rootfs: Path, work: Path, extra: list[str],
                tick: Callable[[int, int], None] | None = None) -> None:
    """Bootstrap minbase, then install the extra packages in a second step.

    The second step sits between two snapshots of the enabled units, so _prepare() can disable
    exactly what the extra packages enabled.
    """
    hook = work / "customize.sh"
    snapshot = f'find "$1/etc/systemd/system" -type l | sed "s|^$1||" | sort > {work}/'
    lines = ["#!/bin/sh", "set -eu", snapshot + _UNITS_BEFORE]
    if extra:
        lines.append('chroot "$1" env -u APT_CONFIG DEBIAN_FRONTEND=noninteractive apt-get install -y '
                     "--no-install-recommends " + " ".join(extra))
    lines.append(snapshot + _UNITS_AFTER)
    hook.write_text("\n".join(lines) + "\n")
    hook.chmod(0o755)
    argv = ["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
            "--include=" + ",".join(BASE_PACKAGES), "--skip=cleanup/apt/lists",
            f"--customize-hook={hook}", SUITE, str(rootfs), *MIRRORS]
    stderr_path = work / "mmdebstrap.stderr"
    with open(stderr_path, "wb") as stderr:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        except FileNotFoundError as exc:
            raise LabError("build_base_image: mmdebstrap not installed; apt-get install mmdebstrap") from exc
        deadline = time.monotonic() + BUILD_TIMEOUT
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise LabError(f"build_base_image: mmdebstrap timed out after {BUILD_TIMEOUT:g}s")
            if tick is not None:
                tick(*_package_counts(rootfs))
            time.sleep(1.0)
    if proc.returncode != 0:
        tail = stderr_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise LabError(f"build_base_image: mmdebstrap failed (exit {proc.returncode}); is deb.debian.org "
                       f"reachable and the package list valid? {' | '.join(tail)}")


NETWORKD_DROPIN = """\
# Lab: IPv4 only, no RA/link-local (otherwise systemd-networkd-wait-online adds ~13 s to boot).
[Network]
IPv6AcceptRA=no
LinkLocalAddressing=no
"""


def _prepare(rootfs: Path, work: Path) -> None:
    """Make the rootfs look like a pristine cloud image (the prep list in lab-hosts.md)."""
    etc = rootfs / "etc"
    (etc / "machine-id").write_text("")
    with contextlib.suppress(FileNotFoundError):
        (rootfs / "var/lib/dbus/machine-id").unlink()
    (etc / "hostname").write_text("localhost\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("# lab host: no DNS, no route out\n")
    for key in etc.glob("ssh/ssh_host_*"):  # cloud-init generates unique keys per instance
        key.unlink()
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    (etc / "cloud/cloud.cfg.d/99-lab.cfg").write_text("datasource_list: [ NoCloud, None ]\n")
    (etc / "default/locale").write_text("LANG=C.UTF-8\n")
    dropin = etc / "systemd/network/10-cloud-init-eth0.network.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "10-lab.conf").write_text(NETWORKD_DROPIN)
    (rootfs / "var/log/journal").mkdir(exist_ok=True)  # persistent journal: inspectable after power-off
    run(["systemctl", f"--root={rootfs}", "enable", "systemd-networkd.service"])
    _disable_units_enabled_by_extras(rootfs, work)


def _disable_units_enabled_by_extras(rootfs: Path, work: Path) -> None:
    before = set((work / _UNITS_BEFORE).read_text().split())
    after = set((work / _UNITS_AFTER).read_text().split())
    units = sorted({Path(link).name for link in after - before
                    if Path(link).parent.name.endswith((".wants", ".requires"))})
    if units:
        run(["systemctl", f"--root={rootfs}", "disable", *units])
    still = [u for u in units if run(["systemctl", f"--root={rootfs}", "is-enabled", u],
                                     check=False).stdout.decode().strip() not in ("disabled", "")]
    if still:
        raise LabError(f"build_base_image: units {still} stay enabled after disable; fix _prepare()")


def enabled_units(rootfs: Path) -> set[str]:
    """Units with an install symlink in the image (what systemd would start at boot)."""
    base = rootfs / "etc/systemd/system"
    return {p.name for p in base.glob("*.wants/*")} | {p.name for p in base.glob("*.requires/*")}
