"""Remove what crashed lab runs left behind, without touching labs that are still alive.

A lab run that dies (SIGKILL, OOM, a killed CI job) leaves nspawn processes, overlay mounts, veths,
netns, cgroup dirs, nft tables and a bridge. They all carry the ``qp-`` prefix; live labs publish
the names they own (lab.net.Claims), so anything prefixed and unclaimed is a leftover.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

from lab import cgroups
from lab.net import (
    CLAIMS_DIR,
    NETNS_DIR,
    PREFIX,
    _lock_is_held,
    delete_link,
    delete_netns,
    forward_rules_tagged,
    link_names,
    live_claimed_names,
    run,
)

PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")


def reap(prefix: str = PREFIX) -> list[str]:
    """Remove unclaimed lab leftovers carrying ``prefix``; return what was removed (for logging)."""
    if not prefix.startswith(PREFIX):
        raise ValueError(f"reap: prefix {prefix!r} must start with {PREFIX!r} (never reap others' objects)")
    claimed = live_claimed_names()
    removed: list[str] = []

    def stale(name: str) -> bool:
        return name.startswith(prefix) and name not in claimed

    # 1. Processes first: the launchers (so nothing relaunches), then the containers' inits, then
    #    whatever is left in the hosts' cgroups.
    for pid, netns in _launchers_and_nspawns():
        if stale(netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                removed.append(f"process {pid} ({netns})")
    stale_cgroups = [d for d in cgroups.find_dirs(prefix) if stale(cgroups.unit_name(d.name))]
    for pid in _container_inits(stale_cgroups):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if stale_cgroups:
        cgroups.kill_all(stale_cgroups)
    # 2. Mounts: overlays are mounted with the host's short name as their source.
    for source, target in _overlay_mounts():
        if stale(source):
            _umount(target)
            removed.append(f"mount {target}")
    # 3. Links (a veth's peer inside a netns goes with it) and namespaces.
    for name in link_names():
        if stale(name):
            delete_link(name)
            removed.append(f"link {name}")
    if NETNS_DIR.is_dir():
        for ns in NETNS_DIR.iterdir():
            if stale(ns.name):
                delete_netns(ns.name)
                removed.append(f"netns {ns.name}")
    # 4. Firewall: partition tables and the accept rules for bridged forwarding.
    for table in _bridge_tables():
        if stale(table):
            run(["nft", "delete", "table", "bridge", table], check=False)
            removed.append(f"nft table bridge {table}")
    for family, table, chain, handle, bridge in forward_rules_tagged():
        if stale(bridge):
            run(["nft", "delete", "rule", family, table, chain, "handle", str(handle)], check=False)
            removed.append(f"nft rule {family} {table} {chain} ({bridge})")
    # 5. Cgroup dirs and nspawn's per-machine state.
    if stale_cgroups:
        cgroups.remove(stale_cgroups)
        removed.extend(f"cgroup {d}" for d in stale_cgroups)
    if PROPAGATE_DIR.is_dir():
        for d in PROPAGATE_DIR.iterdir():
            if stale(d.name):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"nspawn state {d.name}")
    # 6. Claims files of dead labs.
    if CLAIMS_DIR.is_dir():
        for lock_path in CLAIMS_DIR.glob(f"{prefix}*.lock"):
            if not _lock_is_held(lock_path):
                for p in (lock_path, lock_path.with_suffix(".json")):
                    p.unlink(missing_ok=True)
    return removed


def _cmdline(pid: str) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    return []


def _launchers_and_nspawns() -> list[tuple[int, str]]:
    """(pid, netns name) of lab launchers and nspawn processes, found by their netns argument."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        for arg in _cmdline(pid):
            m = re.match(r"--network-namespace-path=/run/netns/(\S+)$", arg)
            if m:
                found.append((int(pid), m.group(1)))
                break
    return found


def _container_inits(dirs: list[Path]) -> list[int]:
    """Processes in the given cgroups that are PID 1 of their own PID namespace."""
    inits = []
    for pid in cgroups.pids(dirs):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:") and len(line.split()) >= 3 and line.split()[-1] == "1":
                    inits.append(pid)
    return inits


def _overlay_mounts() -> list[tuple[str, str]]:
    """(source, mount point) of overlay mounts in our mount namespace."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) >= 2 and fields[0] == "overlay":
            target = left.split()[4].encode().decode("unicode_escape")
            mounts.append((fields[1], target))
    return mounts


def _umount(target: str) -> None:
    for _ in range(20):
        if run(["umount", target], check=False).returncode == 0:
            return
        time.sleep(0.2)
    run(["umount", "-l", target], check=False)


def _bridge_tables() -> list[str]:
    proc = run(["nft", "-j", "list", "tables", "bridge"], check=False)
    if proc.returncode != 0:
        return []
    return [item["table"]["name"] for item in json.loads(proc.stdout or b"{}").get("nftables", [])
            if "table" in item]
