"""One cgroup per lab host, so the hosts' systemds never share a cgroup tree.

With ``--keep-unit --register=no`` systemd-nspawn runs the container in its caller's cgroup; two
hosts started from one process then collide (intermittent ``status=219/CGROUP``). Each host's launcher
therefore first moves itself into a fresh directory below its caller's cgroup in each hierarchy that
systemd uses (the named ``systemd`` v1 hierarchy and the ``unified`` v2 one; on a pure v2 machine the
v2 root). Nesting below the caller, rather than at the hierarchy root, keeps the hosts inside whatever
resource accounting the caller runs under. Removing the directory also tells us the host is fully gone.

Where PID 1 is systemd (a CI runner, a workstation) systemd owns the tree: the launcher runs under
``systemd-run --scope -p Delegate=yes`` instead, and the host's cgroup is ``system.slice/NAME.scope``.
That path follows lab-hosts.md but is not exercised on the lab machines here (PID 1 is not systemd).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from lab.net import LabError

CGROUP_ROOT = Path("/sys/fs/cgroup")


def hierarchies() -> list[tuple[Path, str]]:
    """(mount point, our own path in it) for each hierarchy systemd manages on this machine."""
    own = _own_paths()
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        return [(CGROUP_ROOT, own.get("", "/"))]
    found = []
    for mount, key in ((CGROUP_ROOT / "systemd", "name=systemd"), (CGROUP_ROOT / "unified", "")):
        if (mount / "cgroup.procs").exists() and key in own:
            found.append((mount, own[key]))
    if not found:
        raise LabError(f"no systemd cgroup hierarchy under {CGROUP_ROOT}; lab hosts need cgroup v1 "
                       "name=systemd or cgroup v2 mounted")
    return found


def _own_paths() -> dict[str, str]:
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        for key in controllers.split(",") if controllers else [""]:
            paths[key] = path
    return paths


def systemd_is_pid1() -> bool:
    return Path("/run/systemd/system").is_dir()


def launcher_prefix(name: str) -> list[str]:
    """Command prefix that gives the launcher its own delegated cgroup when systemd manages cgroups."""
    if not systemd_is_pid1():
        return []
    return ["systemd-run", "--quiet", "--scope", "--collect", f"--unit={name}", "-p", "Delegate=yes", "--"]


def host_dirs(name: str) -> list[Path]:
    """Where the cgroup directories called ``name`` live for this process."""
    if systemd_is_pid1():
        return [mount / "system.slice" / f"{name}.scope" for mount, _own in hierarchies()]
    return [mount / own.lstrip("/") / name for mount, own in hierarchies()]


def unit_name(dir_name: str) -> str:
    """The host's cgroup name from a directory name (``.scope`` added by systemd stripped)."""
    return dir_name.removesuffix(".scope")


def create(name: str) -> list[Path]:
    """Create the host's cgroup directories; return the ``cgroup.procs`` files its launcher joins.

    Under systemd, returns nothing: systemd-run creates the scope (see launcher_prefix()).
    """
    if systemd_is_pid1():
        return []
    procs = []
    for d in host_dirs(name):
        d.mkdir(exist_ok=True)
        procs.append(d / "cgroup.procs")
    return procs


def pids(dirs: list[Path]) -> set[int]:
    """Every process in the given cgroup trees (the host's launcher, nspawn and the whole container)."""
    found: set[int] = set()
    for d in dirs:
        if not d.is_dir():
            continue
        for root, _subdirs, _files in os.walk(d):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, OSError):
                found.update(int(p) for p in Path(root, "cgroup.procs").read_text().split())
    return found


def kill_all(dirs: list[Path], timeout: float = 10.0) -> None:
    """SIGKILL everything in the trees until they are empty (bounded; processes may be forking)."""
    deadline = time.monotonic() + timeout
    while True:
        left = pids(dirs)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"cgroup {dirs[0].name}: processes {sorted(left)[:5]} survive SIGKILL; "
                           "check for processes stuck in D state")
        time.sleep(0.05)


def remove(dirs: list[Path], timeout: float = 10.0) -> None:
    """Kill what is left and remove the trees bottom-up (cgroupfs allows rmdir only on empty dirs)."""
    kill_all(dirs, timeout=timeout)
    deadline = time.monotonic() + timeout
    for d in dirs:
        while d.is_dir():
            busy = None
            for root, _subdirs, _files in os.walk(d, topdown=False):
                try:
                    os.rmdir(root)
                except FileNotFoundError:
                    pass
                except OSError as exc:  # EBUSY while the kernel finishes reaping exited processes
                    busy = exc
            if busy is None:
                break
            if time.monotonic() > deadline:
                raise LabError(f"cgroup {d}: cannot remove ({busy}); retry reap() later")
            kill_all([d], timeout=timeout)
            time.sleep(0.05)


def find_dirs(prefix: str, max_depth: int = 4) -> list[Path]:
    """Cgroup directories whose name starts with ``prefix`` anywhere near the hierarchies' roots.

    Used by the reaper: a crashed run may have run in a different cgroup than the current process.
    Does not descend into matching directories (their subtrees belong to the container).
    """
    found: list[Path] = []
    mounts = [CGROUP_ROOT] if (CGROUP_ROOT / "cgroup.controllers").exists() else [
        CGROUP_ROOT / "systemd", CGROUP_ROOT / "unified"]
    for mount in mounts:
        if not (mount / "cgroup.procs").exists():
            continue
        level = [mount]
        for _ in range(max_depth):
            nxt = []
            for d in level:
                with contextlib.suppress(OSError):
                    for child in d.iterdir():
                        if not child.is_dir():
                            continue
                        (found if child.name.startswith(prefix) else nxt).append(child)
            level = nxt
    return found
