#!/usr/bin/env python3
"""QuantaPool bundle applier: carried inside every configuration bundle (stdlib only, Debian 12 python3).

Why it travels with the bundle: the host needs no tool installed beforehand to take a config change, and
the logic that decides what to touch is reviewed in the same tar as the files it installs.

    apply STAGED            stage -> check -> install changed files atomically -> on-change actions
    confirm BUNDLE DIGEST   keep a pending firewall ruleset (only the pending digest can be confirmed)
    revert BUNDLE DIGEST    restore the previous firewall ruleset and file (run by the host's revert timer)

STAGED is the directory the bundle tar was extracted into: the bundle's files at their host paths plus
`.qp-bundle/manifest.json`. QP_BUNDLE_ROOT (default "/") is where files are installed and state is kept;
tests point it at a temporary directory. A failed check changes nothing and prints one line naming the
bundle and the check, exit 1.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys

META_DIR = ".qp-bundle"
STATE_DIR = "var/lib/quantapool/bundles"
APPLIER_COPY = "qp-bundle-apply.py"
REVERT_UNIT = "qp-firewall-revert"


class BundleError(Exception):
    """One clear line for the operator; the step fails with it."""


def root() -> str:
    return os.environ.get("QP_BUNDLE_ROOT", "/")


def on_host(path: str) -> str:
    """A host path under the install root (the root is "/" on a real host)."""
    return os.path.join(root(), path.lstrip("/"))


def state_dir() -> str:
    return on_host(STATE_DIR)


def sha256_file(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def is_root_user() -> bool:
    return os.geteuid() == 0


def ids(owner: str) -> tuple[int, int]:
    user, _, group = owner.partition(":")
    return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid


def current_state(path: str) -> tuple[str | None, int | None, str | None]:
    """(sha256, mode, owner) of an installed file; owner only when running as root (tests run as anyone)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None, None
    owner = None
    if is_root_user():
        try:
            owner = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
        except KeyError:
            owner = f"{st.st_uid}:{st.st_gid}"
    return sha256_file(path), st.st_mode & 0o7777, owner


def differs(entry: dict, dest: str) -> bool:
    digest, mode, owner = current_state(dest)
    if digest != entry["sha256"] or mode != int(entry["mode"], 8):
        return True
    return is_root_user() and owner != entry["owner"]


def install_atomic(src: str, dest: str, mode: str, owner: str) -> None:
    """Write temp file next to dest, set mode/owner, fsync, rename: readers see old or new, never half."""
    os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
    tmp = f"{dest}.qp-new.{os.getpid()}"
    try:
        with open(src, "rb") as s, open(tmp, "wb") as d:
            shutil.copyfileobj(s, d)
            d.flush()
            os.fchmod(d.fileno(), int(mode, 8))
            if is_root_user():
                uid, gid = ids(owner)
                os.fchown(d.fileno(), uid, gid)
            os.fsync(d.fileno())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text_atomic(path: str, text: str, mode: int = 0o600) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.qp-new.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run(command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit {proc.returncode}"


def installed_manifest_path(name: str) -> str:
    return os.path.join(state_dir(), f"{name}.json")


def load_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def bundle_lock(name: str):
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)
    with open(os.path.join(state_dir(), f".{name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# -- apply ---------------------------------------------------------------------------------------------
def run_checks(manifest: dict, staged: str) -> None:
    env = {"STAGED": staged, "QP_BUNDLE_ROOT": root()}
    for check in manifest.get("checks", []):
        proc = run(check["command"], env)
        if proc.returncode != 0:
            raise BundleError(f"bundle {manifest['bundle']}: check {check['name']!r} failed, nothing changed: "
                              f"{last_line(proc)}")


def check_owners(manifest: dict) -> None:
    """Every owner must exist before the first file is installed (else nothing would be half-applied)."""
    if not is_root_user():
        return
    for entry in manifest["files"]:
        try:
            ids(entry["owner"])
        except KeyError:
            raise BundleError(f"bundle {manifest['bundle']}: owner {entry['owner']} of {entry['path']} does not "
                              "exist on this host, nothing changed") from None


def actions_for(manifest: dict, changed: list[str]) -> list[dict]:
    return [a for a in manifest.get("on_change", [])
            if any(fnmatch.fnmatchcase(p, pat) for p in changed for pat in a["paths"])]


def keep_applier_copy(staged: str) -> None:
    """The revert timer and the confirm step need the applier after the staging dir is gone."""
    src = os.path.join(staged, META_DIR, "apply.py")
    dest = os.path.join(state_dir(), APPLIER_COPY)
    if sha256_file(src) != sha256_file(dest):
        install_atomic(src, dest, "0700", "root:root")


def apply(staged: str) -> int:
    manifest = load_json(os.path.join(staged, META_DIR, "manifest.json"))
    if manifest is None:
        raise BundleError(f"{staged}: no {META_DIR}/manifest.json: not a QuantaPool bundle")
    name = manifest["bundle"]
    with bundle_lock(name):
        for entry in manifest["files"]:
            if sha256_file(os.path.join(staged, entry["path"].lstrip("/"))) != entry["sha256"]:
                raise BundleError(f"bundle {name}: staged {entry['path']} does not match the manifest")
        run_checks(manifest, staged)
        check_owners(manifest)
        keep_applier_copy(staged)
        previous = load_json(installed_manifest_path(name)) or {"files": {}}
        changed = [e["path"] for e in manifest["files"] if differs(e, on_host(e["path"]))]
        new_paths = {e["path"] for e in manifest["files"]}
        removed = sorted(p for p in previous["files"] if p not in new_paths)
        if manifest.get("firewall"):
            return apply_firewall(manifest, staged, previous, changed, removed)
        for entry in manifest["files"]:
            if entry["path"] in changed:
                install_atomic(os.path.join(staged, entry["path"].lstrip("/")), on_host(entry["path"]),
                               entry["mode"], entry["owner"])
        for path in removed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(on_host(path))
        record_installed(manifest)
        touched = sorted([*changed, *removed])
        failed = []
        for action in actions_for(manifest, touched):
            proc = run(action["command"])
            if proc.returncode != 0:
                failed.append(f"{action['command']!r}: {last_line(proc)}")
        report(name, changed, removed)
        if failed:
            raise BundleError(f"bundle {name}: files installed but an on-change action failed: {failed[0]}")
    return 0


def record_installed(manifest: dict) -> None:
    files = {e["path"]: {k: e[k] for k in ("sha256", "mode", "owner")} for e in manifest["files"]}
    write_text_atomic(installed_manifest_path(manifest["bundle"]),
                      json.dumps({"bundle": manifest["bundle"], "digest": manifest["digest"], "files": files},
                                 indent=2, sort_keys=True) + "\n")


def report(name: str, changed: list[str], removed: list[str]) -> None:
    if not changed and not removed:
        print(f"bundle {name}: no change")
        return
    for path in changed:
        print(f"bundle {name}: changed {path}")
    for path in removed:
        print(f"bundle {name}: removed {path}")


# -- firewall: apply with auto-revert, confirm, revert --------------------------------------------------
def pending_dir(name: str) -> str:
    return os.path.join(state_dir(), f"{name}.pending")


def apply_firewall(manifest: dict, staged: str, previous: dict, changed: list[str], removed: list[str]) -> int:
    """Load the new ruleset atomically and arm the host-side revert; the confirm step disarms it.

    The running ruleset and the file are saved once per unconfirmed series: a second apply while one is
    pending keeps the older (last confirmed) copies, so a revert always returns to a confirmed state.
    """
    name, fw = manifest["bundle"], manifest["firewall"]
    path, window = fw["path"], int(fw["revert_seconds"])
    pend = pending_dir(name)
    if not changed and not os.path.isdir(pend):
        record_installed(manifest)
        report(name, changed, [])
        return 0
    if not os.path.isdir(pend):
        saved = run("nft list ruleset")
        if saved.returncode != 0:
            raise BundleError(f"bundle {name}: cannot save the running ruleset, nothing changed: {last_line(saved)}")
        work = pend + ".new"
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work, mode=0o700)
        write_text_atomic(os.path.join(work, "previous.nft"), "flush ruleset\n" + saved.stdout)
        meta: dict = {"path": path, "existed": os.path.exists(on_host(path))}
        if meta["existed"]:
            st = os.stat(on_host(path))
            meta.update(mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid)
            shutil.copyfile(on_host(path), os.path.join(work, "previous.conf"))
        meta["installed_manifest"] = load_json(installed_manifest_path(name))
        write_text_atomic(os.path.join(work, "previous.json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(work, pend)
    entry = next(e for e in manifest["files"] if e["path"] == path)
    install_atomic(os.path.join(staged, path.lstrip("/")), on_host(path), entry["mode"], entry["owner"])
    loaded = run(f"nft -f {sh_quote(on_host(path))}")
    if loaded.returncode != 0:
        restore(name)
        raise BundleError(f"bundle {name}: nft -f failed, previous ruleset restored: {last_line(loaded)}")
    write_text_atomic(os.path.join(pend, "digest"), manifest["digest"] + "\n")
    record_installed(manifest)
    arm = arm_revert(name, manifest["digest"], window)
    if arm.returncode != 0:
        restore(name)
        raise BundleError(f"bundle {name}: cannot arm the revert timer, previous ruleset restored: {last_line(arm)}")
    report(name, changed, [])
    print(f"bundle {name}: ruleset {manifest['digest'][:12]} loaded; the host reverts it in {window} s "
          "unless the confirm step connects")
    return 0


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def arm_revert(name: str, digest: str, window: int) -> subprocess.CompletedProcess[str]:
    applier = os.path.join(state_dir(), APPLIER_COPY)
    run(f"systemctl stop {REVERT_UNIT}.timer {REVERT_UNIT}.service")  # re-arm: one timer per host
    run(f"systemctl reset-failed {REVERT_UNIT}.timer {REVERT_UNIT}.service")
    return run(f"systemd-run --quiet --collect --unit={REVERT_UNIT} --on-active={window}s "
               f"--timer-property=AccuracySec=1s --property=Type=oneshot "
               f"/usr/bin/python3 {sh_quote(applier)} revert {sh_quote(name)} {sh_quote(digest)}")


def restore(name: str) -> None:
    """Previous ruleset into the kernel, previous file and installed-manifest back; pending state cleared."""
    pend = pending_dir(name)
    meta = load_json(os.path.join(pend, "previous.json")) or {}
    path = meta.get("path")
    if path:
        dest = on_host(path)
        if meta.get("existed"):
            tmp = f"{dest}.qp-new.{os.getpid()}"
            shutil.copyfile(os.path.join(pend, "previous.conf"), tmp)
            os.chmod(tmp, meta["mode"])
            if is_root_user():
                os.chown(tmp, meta["uid"], meta["gid"])
            os.replace(tmp, dest)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)
    nft = run(f"nft -f {sh_quote(os.path.join(pend, 'previous.nft'))}")
    if nft.returncode != 0 and path and meta.get("existed"):
        run(f"nft -f {sh_quote(on_host(path))}")  # the saved listing did not load: the restored file
    prev_manifest = meta.get("installed_manifest")
    if prev_manifest:
        write_text_atomic(installed_manifest_path(name), json.dumps(prev_manifest, indent=2, sort_keys=True) + "\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(installed_manifest_path(name))
    shutil.rmtree(pend, ignore_errors=True)


def pending_digest(name: str) -> str | None:
    try:
        with open(os.path.join(pending_dir(name), "digest")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def confirm(name: str, digest: str) -> int:
    with bundle_lock(name):
        pending = pending_digest(name)
        if pending is None:
            installed = (load_json(installed_manifest_path(name)) or {}).get("digest")
            if installed == digest:
                print(f"bundle {name}: {digest[:12]} already confirmed")
                return 0
            raise BundleError(f"bundle {name}: {digest[:12]} is not pending (the host reverted it, or it was "
                              f"never applied); installed: {(installed or 'none')[:12]}")
        if pending != digest:
            raise BundleError(f"bundle {name}: pending is {pending[:12]}, not {digest[:12]}; not confirmed")
        run(f"systemctl stop {REVERT_UNIT}.timer")
        shutil.rmtree(pending_dir(name), ignore_errors=True)
    print(f"bundle {name}: {digest[:12]} confirmed")
    return 0


def revert(name: str, digest: str) -> int:
    with bundle_lock(name):
        pending = pending_digest(name)
        if pending != digest:
            print(f"bundle {name}: nothing to revert for {digest[:12]} (pending: {pending or 'none'})")
            return 0
        restore(name)
    print(f"bundle {name}: {digest[:12]} not confirmed in time: previous ruleset restored", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[0] == "apply":
            return apply(os.path.abspath(argv[1]))
        if len(argv) == 3 and argv[0] == "confirm":
            return confirm(argv[1], argv[2])
        if len(argv) == 3 and argv[0] == "revert":
            return revert(argv[1], argv[2])
        print("usage: apply STAGED | confirm BUNDLE DIGEST | revert BUNDLE DIGEST", file=sys.stderr)
        return 2
    except BundleError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:  # one line, not a traceback: the step's error is what the operator reads
        print(f"qp-bundle-apply {' '.join(argv[:2])}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
