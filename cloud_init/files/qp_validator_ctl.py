#!/usr/bin/python3
"""qp-validator-ctl: the host side of `qpool status/activate/failover` (installed on every key host).

Why a host-side tool: every check and every state change that decides whether this host may sign runs
here, next to systemd, the process table and the slashing-protection DB, with one JSON answer per call.
The operator's `qpool` decides *whether* a host may sign (it sees both hosts); this tool makes sure each
step really happened on this host (stopped means stopped, imported means imported) and refuses any step
whose local preconditions do not hold.

Stdlib only (Debian's python3). Exit codes: 0 done/ok, 1 refused or failed (JSON says why), 2 usage.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

CONFIG_PATH = Path(os.environ.get("QP_CTL_CONFIG", "/etc/quantapool/validator-ctl.json"))
UNIT = "qp-validator.service"
#: The oneshot the backup timer starts (cloud_init/host_tools.py installs both).
BACKUP_UNIT = "qp-slashing-backup.service"
#: A runtime drop-in that fails every start of the unit until `activate` removes it or the host reboots
#: (and every boot re-arms the lock). `systemctl mask --runtime` cannot do this: the unit lives in /etc,
#: which outranks /run for unit files — but drop-ins from /run are always merged.
RUNTIME_BLOCK = Path(os.environ.get("QP_CTL_RUNTIME_BLOCK",
                                    "/run/systemd/system/qp-validator.service.d/50-qpool-blocked.conf"))
ACTIVATED_BY = Path(os.environ.get("QP_CTL_ACTIVATED_BY", "/run/quantapool/activated-by.json"))


class Refused(Exception):
    """A precondition does not hold: nothing was changed."""


def load_config() -> dict[str, Any]:
    return json.loads(CONFIG_PATH.read_text())


CFG: dict[str, Any] = {}


def cfg(key: str) -> Any:
    return CFG[key]


# -- observations ---------------------------------------------------------------------------------------

def run(argv: list[str], *, input: bytes | None = None, timeout: float = 60, check: bool = False,
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=input, capture_output=True, timeout=timeout, check=check)


def systemctl_show(unit: str = UNIT) -> dict[str, str]:
    out = run(["systemctl", "show", unit, "--property=ActiveState,SubState,UnitFileState,LoadState,MainPID"])
    props = {}
    for line in out.stdout.decode().splitlines():
        key, _, value = line.partition("=")
        props[key] = value
    return props


def validator_pids() -> list[int]:
    """Every process running the validator binary, whatever started it (systemd or a stray shell)."""
    binary = os.path.realpath(cfg("validator_bin"))
    names = {os.path.basename(cfg("validator_bin")), os.path.basename(binary)}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            exe = os.path.realpath(entry / "exe") if (entry / "exe").exists() else ""
        except OSError:
            continue
        argv0 = cmdline[0].decode(errors="replace") if cmdline and cmdline[0] else ""
        args = [a.decode(errors="replace") for a in cmdline[1:3] if a]
        # A stand-in (zipapp under python3) shows the binary as argv[1]; a real client as argv[0]/exe.
        candidates = {argv0, exe, *args}
        if any(c and (os.path.realpath(c) == binary or os.path.basename(c) in names) for c in candidates):
            if _one_shot_subcommand([a.decode(errors="replace") for a in cmdline], binary, names):
                continue  # a one-shot export/import/accounts command is not a signer
            pids.append(int(entry.name))
    return sorted(pids)


def _one_shot_subcommand(argv: list[str], binary: str, names: set[str]) -> bool:
    """True only when the first word after the validator binary is a one-shot subcommand."""
    for i, word in enumerate(argv):
        if word and (os.path.realpath(word) == binary or os.path.basename(word) in names):
            rest = [w for w in argv[i + 1:] if w]
            return bool(rest) and rest[0] in ("slashing-protection-history", "accounts")
    return False


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_json(url: str, timeout: float = 3.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http URLs from our own config
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


def rpc(method: str, timeout: float = 3.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
    req = urllib.request.Request(cfg("execution_rpc"), data=body,  # noqa: S310 - http URL from our config
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback URL from config
            return json.loads(resp.read()).get("result")
    except (OSError, ValueError):
        return None


#: Received copies live in `<replica_dir>/from/<sender>/`, one directory per allowed sender (made by `setup`,
#: which also moves copies of the old flat layout there): the directory a copy is in is the sender whose key
#: wrote it, and retention is per directory. A copy is a candidate only as `<sender>--*.db` in its sender's dir.
FROM_DIR = "from"


def _valid_host_name(name: str) -> str:
    if not isinstance(name, str) or not _HOST_NAME.match(name):
        raise Refused(f"not a host name: {str(name)[:80]!r}")
    return name


def sender_dir(sender: str) -> Path:
    """The directory of `sender`'s received copies (the name is validated: never a path, never `..`)."""
    return Path(cfg("replica_dir")) / FROM_DIR / _valid_host_name(sender)


def _sender_copies(sender: str) -> list[Path]:
    """`sender`'s copies, only while it is one of this host's configured senders (a directory left by a former
    sender, or made by any other means, is never read)."""
    directory = sender_dir(sender)
    if sender not in CFG.get("backup_senders", {}) or not directory.is_dir() or directory.is_symlink():
        return []
    return [p for p in directory.glob(f"{sender}--*.db") if p.is_file() and not p.is_symlink()]


def replica_files() -> list[Path]:
    """Replicated copies shipped by this host's configured senders, each read from its sender's own
    directory; anything else (another host's name, the old flat directory, a stray file) is never a candidate."""
    return [p for sender in sorted(CFG.get("backup_senders", {})) for p in _sender_copies(sender)]


def _source(replica: Path) -> str:
    """The sender a copy is attributed to: the directory it was received into (= the key that wrote it)."""
    return replica.parent.name


def newest_backup() -> dict[str, Any] | None:
    files = sorted(replica_files(), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    newest = files[-1]
    sha_file = newest.with_suffix(newest.suffix + ".sha256")
    return {"path": str(newest), "mtime": newest.stat().st_mtime,
            "age_seconds": max(0.0, time.time() - newest.stat().st_mtime),
            "sha256": sha_file.read_text().split()[0] if sha_file.exists() else None,
            "source": _source(newest)}


QUARANTINE = "quarantine"


def _replica_fault(replica: Path) -> str | None:
    """Why a replicated copy cannot be trusted (missing/mismatching checksum, unreadable), or None if intact."""
    sha_file = replica.with_suffix(replica.suffix + ".sha256")
    try:
        expected = sha_file.read_text().split()[0] if sha_file.exists() else None
        if expected is None:
            return "no checksum file"
        actual = hashlib.sha256(replica.read_bytes()).hexdigest()
    except (OSError, IndexError) as exc:
        return f"unreadable ({_oserror_cause(exc) if isinstance(exc, OSError) else 'empty checksum file'})"
    if actual != expected:
        return f"fails its checksum (sha256 {actual[:12]}..., expected {expected[:12]}...; truncated or corrupted)"
    return None


def select_replica() -> dict[str, Any]:
    """The newest replicated copy that passes its checksum. Newer copies that fail it are moved aside into
    their sender's <replica_dir>/from/<sender>/quarantine/ (kept for inspection, never used, never chosen
    again) and reported: a corrupt newest file must not stop a failover, nor send it to an older file silently."""
    files = sorted(replica_files(), key=lambda p: p.stat().st_mtime, reverse=True)
    skipped = []
    for replica in files:
        fault = _replica_fault(replica)
        if fault is None:
            mtime = replica.stat().st_mtime
            sha = replica.with_suffix(replica.suffix + ".sha256").read_text().split()[0]
            return {"path": str(replica), "name": replica.name, "mtime": mtime,
                    "age_seconds": max(0.0, time.time() - mtime), "sha256": sha,
                    "source": _source(replica), "skipped": skipped}
        aside = replica.parent / QUARANTINE
        aside.mkdir(mode=0o750, exist_ok=True)
        for member in (replica, replica.with_suffix(replica.suffix + ".sha256")):
            if member.exists():
                os.replace(member, aside / member.name)
        skipped.append({"name": replica.name, "reason": fault, "moved_to": str(aside / replica.name),
                        "age_seconds": max(0.0, time.time() - replica.stat().st_mtime)
                        if replica.exists() else None})
    return {"path": None, "skipped": skipped}


WALLET_CACHE = Path(os.environ.get("QP_CTL_WALLET_CACHE", "/run/quantapool/wallet-pubkeys.json"))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LISTED = re.compile(r"\[validating public key\]\s+(0x[0-9a-fA-F]+)")


def parse_accounts_list(text: str) -> list[str]:
    """Public keys from `validator accounts list` (qrysm colours it unconditionally: strip the escapes)."""
    return [key.lower() for key in _LISTED.findall(_ANSI.sub("", text))]


def wallet_pubkeys() -> dict[str, Any]:
    """The public keys loaded in this host's wallet (what its validator would sign with), as the client itself
    lists them. Cached under /run by the wallet file's sha256, so `status` decrypts the wallet only after it
    changed. {"pubkeys": [...]} or {"pubkeys": None, "error": "..."} (unknown is never "none")."""
    wallet = Path(cfg("wallet_dir")) / "direct" / "accounts" / "all-accounts.keystore.json"
    try:
        digest = hashlib.sha256(wallet.read_bytes()).hexdigest()
    except FileNotFoundError:
        return {"pubkeys": []}
    except OSError as exc:
        return {"pubkeys": None, "error": f"wallet unreadable: {_oserror_cause(exc)}"}
    cached = _read_json(WALLET_CACHE)
    if isinstance(cached, dict) and cached.get("sha256") == digest and isinstance(cached.get("pubkeys"), list):
        return {"pubkeys": cached["pubkeys"]}
    try:
        proc = _as_validator([cfg("validator_bin"), "accounts", "list", f"--wallet-dir={cfg('wallet_dir')}",
                              f"--wallet-password-file={cfg('wallet_password_file')}", "--accept-terms-of-use"],
                             timeout=120)
    except (KeyError, OSError, subprocess.TimeoutExpired) as exc:
        return {"pubkeys": None, "error": f"accounts list failed: {exc}"}
    if proc.returncode != 0:
        return {"pubkeys": None, "error": _client_cause("accounts list", proc.stderr, cfg("wallet_dir"))}
    keys = parse_accounts_list(proc.stdout.decode(errors="replace"))
    with contextlib.suppress(OSError):
        WALLET_CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = WALLET_CACHE.with_name(f".{WALLET_CACHE.name}.tmp")
        tmp.write_text(json.dumps({"sha256": digest, "pubkeys": keys}))
        os.replace(tmp, WALLET_CACHE)
    return {"pubkeys": keys}


def chain_clock() -> dict[str, Any] | None:
    """genesis time and slot/epoch lengths from the local beacon node (the chain's own clock)."""
    prefix = cfg("beacon_rest")
    code, genesis = http_json(f"{prefix}/beacon/genesis")
    code2, spec = http_json(f"{prefix}/config/spec")
    if code != 200 or code2 != 200 or not genesis or not spec:
        return None
    try:
        return {"genesis_time": int(genesis["data"]["genesis_time"]),
                "seconds_per_slot": float(spec["data"]["SECONDS_PER_SLOT"]),
                "slots_per_epoch": int(spec["data"]["SLOTS_PER_EPOCH"])}
    except (KeyError, TypeError, ValueError):
        return None


#: Dilithium public keys are 2592 bytes (5186 characters as 0x-hex): 8 per URL keep the request line ~42 kB.
LIVENESS_BATCH = 8


def http_post_json(url: str, payload: Any, timeout: float = 5.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",  # noqa: S310 - our config
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback URL from config
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


def _beacon_said(code: int, doc: Any) -> str:
    message = doc.get("message") if isinstance(doc, dict) else None
    return f"HTTP {code}" + (f": {' '.join(str(message).split())[:160]}" if message else "") if code else \
        "no answer"


def chain_liveness(pubkeys: list[str] | None, head_slot: Any, clock: dict[str, Any] | None) -> dict[str, Any]:
    """Did any of this host's wallet keys vote in the head epoch or the one before, as the local beacon node
    sees the chain (qrysm: GET /beacon/states/head/validators?id=<pubkey> for the indices, then POST
    /validator/liveness/{epoch} with ["<index>", ...] for the current and the previous epoch, from the head
    state's participation: votes of ANY host, not only this one). qpool refuses a start while a key voted and
    no host of the stack recorded that vote (qpool/chain_liveness.py). Unknown is explicit, never "not live":
    {"known": False, "error": "..."}."""
    if pubkeys is None:
        return {"known": False, "error": "the wallet's keys cannot be listed"}
    try:
        spe = int((clock or {})["slots_per_epoch"])
        head_epoch = int(head_slot) // spe
    except (KeyError, TypeError, ValueError):
        return {"known": False, "error": "the beacon node does not report its head slot and chain clock"}
    epochs = [e for e in (head_epoch - 1, head_epoch) if e >= 0]
    indices: dict[str, str] = {}
    rest = cfg("beacon_rest")
    for i in range(0, len(pubkeys), LIVENESS_BATCH):
        query = urllib.parse.urlencode([("id", k) for k in pubkeys[i:i + LIVENESS_BATCH]])
        code, doc = http_json(f"{rest}/beacon/states/head/validators?{query}", timeout=5.0)
        try:
            if code != 200:
                raise ValueError
            for entry in doc["data"]:
                indices[str(entry["validator"]["pubkey"]).lower()] = str(entry["index"])
        except (KeyError, TypeError, ValueError):
            return {"known": False, "error": f"validator index lookup: beacon node answered {_beacon_said(code, doc)}"}
    live: dict[str, list[int]] = {}
    for epoch in epochs if indices else []:
        code, doc = http_post_json(f"{rest}/validator/liveness/{epoch}", sorted(set(indices.values())))
        try:
            if code != 200:
                raise ValueError
            answer = {str(d["index"]): bool(d["is_live"]) for d in doc["data"]}
        except (KeyError, TypeError, ValueError):
            return {"known": False, "error": f"liveness of epoch {epoch}: beacon node answered "
                                             f"{_beacon_said(code, doc)}"}
        if set(answer) != set(indices.values()):
            return {"known": False, "error": f"liveness of epoch {epoch}: the answer does not cover every index"}
        for key, index in indices.items():
            if answer[index]:
                live.setdefault(key, []).append(epoch)
    return {"known": True, "head_epoch": head_epoch, "epochs": epochs, "keys": len(pubkeys),
            "not_on_chain": len([k for k in pubkeys if k not in indices]), "live": live}


def status() -> dict[str, Any]:
    lock = Path(cfg("lock_file"))
    unit = systemctl_show()
    sync_code, syncing = http_json(f"{cfg('beacon_rest')}/node/syncing")
    eth_syncing = rpc(f"{cfg('rpc_namespace')}_syncing")
    eth_block = rpc(f"{cfg('rpc_namespace')}_blockNumber")
    db = Path(cfg("validator_datadir")) / "validator.db"
    st = {
        "host": socket.gethostname(),
        "role": Path(cfg("role_file")).read_text().strip() if Path(cfg("role_file")).exists() else None,
        "locked": lock.exists(),
        "lock_reason": lock.read_text().splitlines()[0] if lock.exists() and lock.read_text() else None,
        "unit": {"active": unit.get("ActiveState"), "sub": unit.get("SubState"),
                 "file_state": unit.get("UnitFileState"), "load": unit.get("LoadState"),
                 "main_pid": int(unit.get("MainPID") or 0)},
        "processes": validator_pids(),
        "metrics_port_open": port_open(cfg("metrics_host"), int(cfg("metrics_port"))),
        "db_present": db.exists() and db.stat().st_size > 0,
        "newest_backup": newest_backup(),
        "beacon": {"reachable": sync_code == 200,
                   "syncing": (syncing or {}).get("data", {}).get("is_syncing") if sync_code == 200 else None,
                   "head_slot": (syncing or {}).get("data", {}).get("head_slot") if sync_code == 200 else None,
                   "current_slot": _beacon_current_slot(syncing) if sync_code == 200 else None},
        "execution": {"reachable": eth_block is not None, "syncing": bool(eth_syncing) if eth_block else None,
                      "block": int(eth_block, 16) if isinstance(eth_block, str) else None},
        "chain_clock": chain_clock(),
        "wallet": wallet_pubkeys() if "wallet_dir" in CFG else {"pubkeys": None, "error": "no wallet configured"},
        "oplock": read_oplock(),
        "activated_by": _read_json(ACTIVATED_BY),
        "runtime_blocked": RUNTIME_BLOCK.exists(),
        # a validator binary/unit installed by the `clients` bundle that the running validator does not use yet
        "restart_pending": (_read_json(Path(CFG["restart_pending_file"])) if CFG.get("restart_pending_file")
                            else None),
        "time": time.time(),
    }
    st["liveness"] = (chain_liveness(st["wallet"].get("pubkeys"), st["beacon"]["head_slot"], st["chain_clock"])
                      if sync_code == 200 else
                      {"known": False, "error": "the beacon node's REST API does not answer"})
    # The operator decides on the codes; the text is for people reading the JSON.
    st["not_stopped"] = not_stopped_codes(st)
    st["not_stopped_reasons"] = stopped_reasons(st)
    return st


def _beacon_current_slot(syncing: Any) -> int | None:
    """The beacon node's slot clock: head slot + sync distance (the slot its own clock says has begun)."""
    try:
        data = syncing["data"]
        return int(data["head_slot"]) + int(data["sync_distance"])
    except (KeyError, TypeError, ValueError):
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


#: Reason codes: decisions (here and in qpool, whose qpool/signing.py holds the same values) use these,
#: never the wording. tests/failover/test_signing_codes.py checks both sides agree on every combination.
NOT_STOPPED_UNIT = "unit-not-stopped"
NOT_STOPPED_PROCESSES = "validator-processes"
NOT_STOPPED_METRICS_PORT = "metrics-port-answers"
NOT_STOPPED_UNLOCKED = "lock-file-absent"


def not_stopped_codes(st: dict[str, Any]) -> list[str]:
    """Independent checks; each one alone is enough to say "not stopped" (empty: stopped and locked)."""
    codes = []
    if st["unit"]["active"] not in ("inactive", "failed"):
        codes.append(NOT_STOPPED_UNIT)
    if st["processes"]:
        codes.append(NOT_STOPPED_PROCESSES)
    if st["metrics_port_open"]:
        codes.append(NOT_STOPPED_METRICS_PORT)
    if not st["locked"]:
        codes.append(NOT_STOPPED_UNLOCKED)
    return codes


def _reason_text(code: str, st: dict[str, Any]) -> str:
    return {
        NOT_STOPPED_UNIT: lambda: f"unit {UNIT} is {st['unit']['active']}",
        NOT_STOPPED_PROCESSES: lambda: f"validator processes running: {st['processes']}",
        NOT_STOPPED_METRICS_PORT: lambda: f"validator metrics port {cfg('metrics_port')} answers",
        NOT_STOPPED_UNLOCKED: lambda: f"lock file {cfg('lock_file')} is absent",
    }[code]()


def stopped_reasons(st: dict[str, Any]) -> list[str]:
    """The same checks as text, for people: nothing decides on these words."""
    return [_reason_text(code, st) for code in not_stopped_codes(st)]


# -- fencing witness: is a peer host alive on the private network? -------------------------------------

def probe_port(address: str, port: int, timeout: float) -> str:
    """One TCP connect from this host: "open" or "refused" (something at that address answered: its kernel
    runs), or "timeout"/"unreachable"/"error: ..." (no answer at all, as from a powered-off machine)."""
    import errno

    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
            return "unreachable"
        return f"error: {exc.strerror or exc}"


#: Port outcomes that prove a running machine at the probed address.
ANSWERED = ("open", "refused")


def probe_peer(address: str, ports: list[int], timeout: float, rounds: int) -> dict[str, Any]:
    """The fencing witness run ON THE TARGET: several rounds of TCP connects to a peer's private address.

    Why from here: the operator's SSH failing says only that the operator cannot reach the peer; the peer
    shares this host's private network, so an answer here means it is up whatever the Hetzner API says.
    Any answer in any round counts ("alive"); "silent" needs every probe of every round unanswered.
    """
    results: list[dict[str, str]] = []
    for i in range(max(1, rounds)):
        if i:
            time.sleep(1.0)
        results.append({str(port): probe_port(address, port, timeout) for port in ports})
    answered = sorted({f"{port}: {outcome}" for r in results for port, outcome in r.items() if outcome in ANSWERED})
    return {"address": address, "ports": ports, "rounds": results,
            "verdict": "alive" if answered else "silent", "answered": answered}


# -- the operation lock: serialises qpool runs that target this host -------------------------------------

def oplock_dir() -> Path:
    return Path(cfg("oplock_dir"))


def read_oplock() -> dict[str, Any] | None:
    if not oplock_dir().is_dir():
        return None
    owner = _read_json(oplock_dir() / "owner.json")
    # A lock dir without a readable owner (a run died between mkdir and write) is still a lock.
    return owner if isinstance(owner, dict) else {"run_id": None, "owner": "unknown (incomplete lock)"}


def oplock_acquire(run_id: str, owner: str) -> dict[str, Any]:
    directory = oplock_dir()
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError as exc:
        held = read_oplock() or {}
        if held.get("run_id") == run_id:
            return held  # the same (resumed) run
        raise Refused(f"another qpool operation holds this host: run {held.get('run_id')} by {held.get('owner')} "
                      f"since {held.get('since')}; wait for it, or release it with `qpool release-oplock` if it "
                      "died") from exc
    info = {"run_id": run_id, "owner": owner, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = directory / ".owner.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, directory / "owner.json")
    return info


def oplock_release(run_id: str, force: bool = False) -> None:
    held = read_oplock()
    if force:
        shutil.rmtree(oplock_dir(), ignore_errors=True)
        return
    if held is None:
        return
    if held.get("run_id") != run_id:
        raise Refused(f"the operation lock belongs to run {held.get('run_id')}, not {run_id}")
    shutil.rmtree(oplock_dir(), ignore_errors=True)


def require_oplock(run_id: str) -> None:
    held = read_oplock()
    if not held or held.get("run_id") != run_id:
        raise Refused(f"run {run_id} does not hold the operation lock on this host (held: {held})")


# -- state changes --------------------------------------------------------------------------------------

def arm_lock(reason: str) -> None:
    lock = Path(cfg("lock_file"))
    lock.parent.mkdir(parents=True, exist_ok=True)
    tmp = lock.with_name(".VALIDATOR_LOCKED.tmp")
    tmp.write_text(f"reason: {reason}\ntimestamp: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    os.replace(tmp, lock)


def wait_until(predicate: Any, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _publish_state() -> None:
    """Alert rules key "the active host" off the lock metric: refresh it at every lock change, not just by timer."""
    with contextlib.suppress(OSError, KeyError):
        write_state_metrics()


def stop(reason: str, timeout: float) -> dict[str, Any]:
    """Lock first (so no restart can slip in), stop gracefully, then force; mask for this boot; verify."""
    arm_lock(reason)
    _publish_state()
    run(["systemctl", "stop", "--no-block", UNIT])
    graceful = wait_until(lambda: not validator_pids() and systemctl_show()["ActiveState"] != "active",
                          timeout)
    forced = False
    if not graceful:
        forced = True
        run(["systemctl", "kill", "--signal=SIGKILL", UNIT])
        for pid in validator_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        wait_until(lambda: not validator_pids(), 10)
    run(["systemctl", "disable", UNIT])
    block_starts()
    ACTIVATED_BY.unlink(missing_ok=True)
    _publish_state()
    st = status()
    reasons = stopped_reasons(st)
    if not st["runtime_blocked"]:
        reasons.append(f"runtime start block {RUNTIME_BLOCK} could not be written")
    result = {"stopped": not reasons, "graceful": graceful, "forced": forced, "reasons": reasons, "status": st}
    if reasons:
        raise Refused("validator did not stop: " + "; ".join(reasons))
    return result


def block_starts() -> None:
    RUNTIME_BLOCK.parent.mkdir(parents=True, exist_ok=True)
    RUNTIME_BLOCK.write_text("[Unit]\n# Written by qp-validator-ctl stop (qpool): no start until qpool activates this "
                             "host or it reboots (the boot re-arms the lock).\n"
                             "AssertPathExists=/nonexistent/qpool-blocked-this-validator\n")
    run(["systemctl", "daemon-reload"])


def current_epoch() -> int | None:
    """The epoch by this host's clock AND by the beacon node's slot clock: the earlier of the two (a gate
    counts as passed only when both clocks have passed it); None if the chain clock is unknown."""
    clock = chain_clock()
    if clock is None:
        return None
    epoch_seconds = clock["seconds_per_slot"] * clock["slots_per_epoch"]
    epoch = int((time.time() - clock["genesis_time"]) // epoch_seconds)
    code, syncing = http_json(f"{cfg('beacon_rest')}/node/syncing")
    slot = _beacon_current_slot(syncing) if code == 200 else None
    if slot is not None:
        epoch = min(epoch, slot // clock["slots_per_epoch"])
    return epoch


def activate(run_id: str, first_start: bool, timeout: float, not_before_epoch: int | None) -> dict[str, Any]:
    """Unlock and start this host's validator. qpool calls this only after verifying every peer."""
    require_oplock(run_id)
    st = status()
    if st["processes"] or st["unit"]["active"] == "active":
        raise Refused("a validator is already running on this host")
    if not st["db_present"] and not first_start:
        raise Refused("no slashing-protection DB on this host; a first-ever start needs --first-start")
    if not_before_epoch is not None:
        # The fenced path's epoch gate, enforced on this host's own (chrony-synced) clock as well.
        epoch = current_epoch()
        if epoch is None or epoch < not_before_epoch:
            raise Refused(f"epoch gate: current epoch {epoch} is before {not_before_epoch}; nothing changed")
    RUNTIME_BLOCK.unlink(missing_ok=True)
    run(["systemctl", "daemon-reload"])
    Path(cfg("lock_file")).unlink(missing_ok=True)
    ACTIVATED_BY.parent.mkdir(parents=True, exist_ok=True)
    ACTIVATED_BY.write_text(json.dumps({"run_id": run_id, "time": time.time()}))
    try:
        started = run(["systemctl", "start", UNIT], timeout=timeout)
        detail = started.stderr.decode(errors="replace").strip()[:300]
        ok = wait_until(lambda: systemctl_show()["ActiveState"] == "active" and bool(validator_pids())
                        and port_open(cfg("metrics_host"), int(cfg("metrics_port"))), timeout)
    except subprocess.TimeoutExpired:
        ok, detail = False, f"systemctl start did not return within {timeout:.0f}s"
    _publish_state()
    if not ok:
        # Leave it stopped and locked: a half-started signer is worse than none.
        try:
            stop("activation failed verification", 30)
            outcome = "stopped and re-locked"
        except Refused as exc:
            outcome = f"AND COULD NOT BE STOPPED: {exc}"
        raise Refused(f"validator did not come up within {timeout:.0f}s ({detail}); {outcome}")
    return {"running": True, "first_backup": queue_first_backup(), "status": status()}


def queue_first_backup() -> str:
    """Queue a backup run now rather than at the timer's next tick (up to BACKUP_INTERVAL away): a new signer
    should have a shipped copy of its history at once, and until it has one SlashingProtectionBackupTooOld is
    (rightly) pending. --no-block: the validator already runs; a slow or failed backup must neither delay nor
    fail the start, the timer retries and the alert reports a lasting failure."""
    try:
        proc = run(["systemctl", "start", "--no-block", BACKUP_UNIT], timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not queued ({exc}); the timer takes the next one"
    if proc.returncode != 0:
        return f"not queued ({_last_line(proc.stderr.decode(errors='replace'))}); the timer takes the next one"
    return "queued"


def _oserror_cause(exc: OSError) -> str:
    """One line naming the cause class (disk full, permission, ...) of an OS error."""
    import errno

    kind = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
            errno.EIO: "I/O error"}.get(exc.errno or 0, errno.errorcode.get(exc.errno or 0, "OS error"))
    where = f" on {exc.filename}" if exc.filename else ""
    return f"{kind}{where} ({exc.strerror or exc})"


def _free_bytes(path: str) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _client_cause(what: str, stderr: bytes, path: str) -> str:
    """One line for a failed validator-client command: the cause (disk full, permission, checksum) if the
    output names one, else its last meaningful line, never a multi-line traceback fragment."""
    text = stderr.decode(errors="replace")
    low = text.lower()
    free = _free_bytes(path)
    space = f"{free} bytes free on the file system of {path}" if free is not None else f"{path}"
    if ("no space left" in low or "disk is full" in low or "enospc" in low or "disk quota" in low
            or (free is not None and free < 1024 * 1024)):
        return f"{what} failed: disk full ({space}); free space there and re-run (nothing was started)"
    if "permission denied" in low or "eacces" in low or "operation not permitted" in low:
        return f"{what} failed: permission denied under {path} ({_last_line(text)})"
    if "checksum" in low or "sha256" in low:
        return f"{what} failed: checksum error ({_last_line(text)})"
    return f"{what} failed: {_last_line(text) or 'no error output'}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", "\t", "Traceback"))]
    return lines[-1][:300] if lines else ""


def _as_validator(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    user = cfg("validator_user")
    pwd.getpwnam(user)
    return run(["runuser", "-u", user, "--", *argv], timeout=timeout)


def _require_stopped_and_locked() -> None:
    reasons = stopped_reasons(status())
    if reasons:
        raise Refused("the validator must be stopped and locked first: " + "; ".join(reasons))


def _export(datadir: str) -> bytes:
    user = cfg("validator_user")
    with tempfile.TemporaryDirectory(prefix="qp-export-") as tmp:
        shutil.chown(tmp, user=user)
        proc = _as_validator([cfg("validator_bin"), "slashing-protection-history", "export", f"--datadir={datadir}",
                              f"--slashing-protection-export-dir={tmp}", "--accept-terms-of-use"])
        out = Path(tmp) / "slashing_protection.json"
        if proc.returncode != 0 or not out.exists():
            raise Refused(_client_cause("export", proc.stderr, datadir))
        return out.read_bytes()


def export_slashing() -> bytes:
    _require_stopped_and_locked()
    return _export(cfg("validator_datadir"))


def export_replica(path: str) -> bytes:
    """Export the interchange from a replicated DB copy (the primary is unreachable and fenced)."""
    replica = Path(path)
    if replica not in replica_files():  # only a candidate: in its sender's directory, a configured sender
        raise Refused(f"{path} is not a replicated backup in {cfg('replica_dir')}/{FROM_DIR}/<sender>")
    fault = _replica_fault(replica)
    if fault is not None:
        raise Refused(f"replicated backup {replica.name}: {fault}; it cannot be trusted")
    user = cfg("validator_user")
    with tempfile.TemporaryDirectory(prefix="qp-replica-") as tmp:
        shutil.copyfile(replica, Path(tmp) / "validator.db")
        shutil.chown(tmp, user=user)
        shutil.chown(Path(tmp) / "validator.db", user=user)
        return _export(tmp)


# -- reads for the deploy identity (its sudo reaches only qp-* tools: no `sudo sh -c`, no `sudo cat`) --------

_HOST_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_REPLICA_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}--[0-9A-Za-z:._-]{1,80}\.db$")


def list_replicas(owners: list[str]) -> dict[str, Any]:
    """Replicated copies shipped by `owners`, read from each owner's own directory (a copy there was written
    with that owner's key: another host's files are never listed for it), newest first, each with its
    sidecar sha256 (None when missing)."""
    for owner in owners:
        _valid_host_name(owner)
    found = []
    for owner in owners:
        for path in _sender_copies(owner):
            sha_file = path.with_suffix(path.suffix + ".sha256")
            try:
                sidecar = sha_file.read_text().split()[0] if sha_file.is_file() else None
            except (OSError, IndexError):
                sidecar = None
            found.append({"name": path.name, "owner": owner, "mtime": path.stat().st_mtime, "sha256": sidecar})
    found.sort(key=lambda r: r["mtime"], reverse=True)
    return {"replica_dir": str(Path(cfg("replica_dir")) / FROM_DIR), "replicas": found}


def read_replica(name: str) -> bytes:
    """The raw bytes of one replicated copy (a name, never a path): `<owner>--<stamp>.db` is read from
    <owner>'s own directory only."""
    refused = Refused(f"{name[:120]!r} is not a replicated copy in {cfg('replica_dir')}/{FROM_DIR}/<sender>")
    if not _REPLICA_NAME.match(name) or "/" in name or ".." in name:
        raise refused
    owner = name.split("--", 1)[0]
    path = sender_dir(owner) / name
    if (owner not in CFG.get("backup_senders", {}) or path.parent.is_symlink() or path.is_symlink()
            or not path.is_file()):
        raise refused
    return path.read_bytes()


def convert_replica(data: bytes, expected_sha256: str) -> bytes:
    """EIP-3076 interchange of a raw slashing-protection DB copy sent on stdin (e.g. the monitoring server's
    replica, which has no validator binary), read by this host's validator binary in a private temp dir;
    the live DB is never touched."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise Refused(f"checksum mismatch on arrival: got {actual}, expected {expected_sha256}")
    user = cfg("validator_user")
    with tempfile.TemporaryDirectory(prefix="qp-convert-") as tmp:
        (Path(tmp) / "validator.db").write_bytes(data)
        shutil.chown(tmp, user=user)
        shutil.chown(Path(tmp) / "validator.db", user=user)
        return _export(tmp)


def prometheus_samples(host: str, window: int) -> dict[str, Any]:
    """This (monitoring) host's clock and the raw `up` samples of `host`'s validator target over the last
    `window` seconds, from the local Prometheus (a fencing witness: qpool.witnesses)."""
    if not _HOST_NAME.match(host) or not 1 <= window <= 86400:
        raise Refused("usage: prometheus-samples --host NAME --window SECONDS (1..86400)")
    query = f'up{{job="{cfg("prometheus_validator_job")}",host="{host}"}}[{window}s]'
    now = time.time()
    url = f"{cfg('prometheus_url')}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback URL from config
            doc = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        raise Refused(f"Prometheus did not answer: {exc}") from None
    return {"now": now, "response": doc}


def send_alert(run_id: str, summary: str) -> dict[str, Any]:
    """One `QpoolFailoverCompleted` info alert to the local Alertmanager (its configured receivers)."""
    body = json.dumps([{"labels": {"alertname": "QpoolFailoverCompleted", "severity": "warning",
                                   "run_id": run_id[:120]},
                        "annotations": {"summary": summary[:2000]}}]).encode()
    req = urllib.request.Request(f"{cfg('alertmanager_url')}/api/v2/alerts", data=body, method="POST",  # noqa: S310
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback URL from config
            return {"sent": True, "status": resp.status}
    except (OSError, ValueError) as exc:
        raise Refused(f"Alertmanager refused the alert: {exc}") from None


def import_slashing(data: bytes, expected_sha256: str) -> dict[str, Any]:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise Refused(f"slashing-protection file checksum mismatch: got {actual}, expected {expected_sha256}; "
                      "nothing imported")
    try:
        doc = json.loads(data)
        assert doc["metadata"]["interchange_format_version"] == "5"
        assert isinstance(doc["data"], list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise Refused("slashing-protection file is not an EIP-3076 interchange (version 5); nothing imported") from None
    _require_stopped_and_locked()
    user = cfg("validator_user")
    with tempfile.TemporaryDirectory(prefix="qp-import-") as tmp:
        path = Path(tmp) / "slashing_protection.json"
        path.write_bytes(data)
        shutil.chown(tmp, user=user)
        shutil.chown(path, user=user)
        proc = _as_validator([cfg("validator_bin"), "slashing-protection-history", "import",
                              f"--datadir={cfg('validator_datadir')}", f"--slashing-protection-json-file={path}",
                              "--accept-terms-of-use"])
        if proc.returncode != 0:
            raise Refused(_client_cause("import", proc.stderr, cfg("validator_datadir")))
    return {"imported": True, "sha256": actual, "keys": len(doc["data"])}


# -- live slashing-protection backups -------------------------------------------------------------------

def write_textfile(name: str, lines: list[str]) -> None:
    """Atomically replace one node-exporter textfile (a half-written file would be scraped as garbage)."""
    directory = Path(cfg("textfile_dir"))
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.prom.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, directory / f"{name}.prom")


def write_state_metrics() -> dict[str, Any]:
    """Lock and unit state for the alert rules (which host is meant to sign, and whether it does); also
    prunes leftover local webhook copies (every 15 s, so nothing accumulates between backups)."""
    prune_local_copies()
    locked = Path(cfg("lock_file")).exists()
    active = systemctl_show()["ActiveState"] == "active"
    write_textfile("quantapool_validator_state", [
        "# HELP quantapool_validator_locked 1 while /etc/quantapool/VALIDATOR_LOCKED exists (this host may not sign).",
        "# TYPE quantapool_validator_locked gauge",
        f"quantapool_validator_locked {int(locked)}",
        "# HELP quantapool_validator_unit_active 1 while qp-validator.service is active.",
        "# TYPE quantapool_validator_unit_active gauge",
        f"quantapool_validator_unit_active {int(active)}",
    ])
    return {"locked": locked, "active": active}


def prune(directory: Path, keep: int) -> None:
    """Keep the newest `keep` copies of one directory: a sender's own (each sender has its own directory and
    retention: a flood from one host cannot push out another host's copies)."""
    files = sorted((p for p in directory.glob("*.db") if p.is_file()), key=lambda p: p.stat().st_mtime)
    for old in files[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_suffix(old.suffix + ".sha256").unlink(missing_ok=True)


#: Local webhook copies older than this are leftovers (a failed run): take_backup reads its copy within
#: seconds, then deletes it. The replicas on the receivers are the retention, not these files.
LOCAL_COPY_MAX_AGE = 600.0


def prune_local_copies(max_age: float = LOCAL_COPY_MAX_AGE) -> list[str]:
    """Delete webhook copies left in db_backup_dir (each is a full DB; nothing else may fill the volume)."""
    directory = Path(CFG.get("db_backup_dir") or "/nonexistent")
    removed = []
    if directory.is_dir():
        now = time.time()
        for old in directory.iterdir():
            with contextlib.suppress(OSError):
                if old.is_file() and not old.is_symlink() and now - old.stat().st_mtime > max_age:
                    old.unlink()
                    removed.append(old.name)
    return removed


def take_backup() -> dict[str, Any]:
    """On the signing host: consistent copy via the validator's webhook, checksum, keep N, ship to peers."""
    prune_local_copies()
    if systemctl_show()["ActiveState"] != "active":
        write_state_metrics()
        return {"skipped": "validator not active on this host"}
    out_dir = Path(cfg("db_backup_dir"))
    before = {p.name for p in out_dir.glob("*")} if out_dir.is_dir() else set()
    url = f"http://{cfg('metrics_host')}:{cfg('metrics_port')}/db/backup"
    req = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        if resp.status != 200:
            raise Refused(f"/db/backup answered {resp.status}")
    new = sorted((p for p in out_dir.glob("*") if p.is_file() and p.name not in before),
                 key=lambda p: p.stat().st_mtime)
    if not new:
        raise Refused(f"/db/backup wrote nothing into {out_dir}")
    copy = new[-1]
    data = copy.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{socket.gethostname()}--{stamp}.db"
    copy.unlink()
    shipped, failed = [], []
    for target in cfg("backup_targets"):
        # Receivers' host keys are pinned by the program (ship_known_hosts, from the keys it generated for every
        # host): an unknown or different key is refused, never learnt.
        proc = run(["ssh", "-i", cfg("ship_key"), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                    "-o", f"UserKnownHostsFile={cfg('ship_known_hosts')}", "-o", "ConnectTimeout=10",
                    f"qp-backup@{target}", name, digest], input=data, timeout=120)
        (shipped if proc.returncode == 0 else failed).append(target)
    write_textfile("quantapool_slashing_backup", [
        "# HELP quantapool_slashing_protection_backup_timestamp_seconds Time of the newest slashing-protection "
        "backup taken and shipped to every target.",
        "# TYPE quantapool_slashing_protection_backup_timestamp_seconds gauge",
        *([f"quantapool_slashing_protection_backup_timestamp_seconds {time.time():.0f}"] if not failed else
          _previous_backup_timestamp()),
        "# HELP quantapool_slashing_protection_backup_targets_failed Targets the last backup could not reach.",
        "# TYPE quantapool_slashing_protection_backup_targets_failed gauge",
        f"quantapool_slashing_protection_backup_targets_failed {len(failed)}",
    ])
    write_state_metrics()
    if failed:
        raise Refused(f"backup {name} not delivered to {failed}")
    return {"backup": name, "sha256": digest, "shipped": shipped}


def _previous_backup_timestamp() -> list[str]:
    path = Path(cfg("textfile_dir")) / "quantapool_slashing_backup.prom"
    try:
        return [ln for ln in path.read_text().splitlines()
                if ln.startswith("quantapool_slashing_protection_backup_timestamp_seconds ")]
    except OSError:
        return []


#: A sender's host name as it appears in an authorized_keys forced command and in a stored file's name.
_SENDER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def authenticated_sender(forced: str | None, ssh_connection: str) -> str:
    """The sending host's name: the one the forced command of the authorized_keys line that authenticated it
    names (one line, one key per sender: `setup`), and only when sshd saw the connection come from that
    sender's configured private address (`from=` admits the same address). Never from the sender's own
    words: a key host must not be able to write files named after another host, or another pair."""
    senders = cfg("backup_senders")
    known = ", ".join(sorted(senders)) or "none"
    if not forced:
        raise Refused("backup refused: no sender in the forced command (authorized_keys older than per-host "
                      "shipping keys: run `qp-validator-ctl setup`)")
    if forced not in senders:
        raise Refused(f"backup from {forced[:80]!r} refused: not one of this host's senders ({known})")
    address = ssh_connection.split()[0] if ssh_connection.split() else ""
    if address != senders[forced]["address"]:
        raise Refused(f"backup with {forced}'s key from {address or 'an unknown address'} refused: {forced} ships "
                      f"from {senders[forced]['address']}")
    return str(forced)


def receive_backup(forced: str | None, claimed: str, expected: str, data: bytes,
                   ssh_connection: str) -> dict[str, Any]:
    """Forced command of the `qp-backup` user: store a shipped copy only if its checksum holds, named after the
    AUTHENTICATED sender (`<sender>--<receiver's UTC time>.db`) in that sender's own directory (made by `setup`
    for the allowed senders only), with that directory's retention. `forced`
    is the sender named by the forced command of the key that authenticated, `claimed` the sender's name for
    the copy: a claim for another host is refused."""
    sender = authenticated_sender(forced, ssh_connection)
    if not claimed.startswith(f"{sender}--"):
        raise Refused(f"{sender} shipped a copy named {claimed[:80]!r}: a host may only ship its own history; "
                      "discarded")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise Refused(f"checksum mismatch for {claimed[:80]}: got {actual}, expected {expected}; discarded")
    directory = sender_dir(sender)
    if not directory.is_dir() or directory.is_symlink():
        raise Refused(f"no replica directory for {sender} on this host (older than per-sender directories: "
                      "run `qp-validator-ctl setup`)")
    now = time.time()
    name = f"{sender}--{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}{int(now * 1e6) % 1000000:06d}Z.db"
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(data)
    (directory / f"{name}.sha256").write_text(f"{actual}  {name}\n")
    os.replace(tmp, directory / name)
    prune(directory, int(cfg("backup_keep")))
    return {"stored": name, "sender": sender}


_PUBLIC_KEY = re.compile(r"^ssh-ed25519 [A-Za-z0-9+/]+={0,2}$")
_ADDRESS = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")


def authorized_keys(ctl: str, senders: dict[str, dict[str, str]]) -> str:
    """The `qp-backup` user's authorized_keys: one line per allowed sender, its own public shipping key,
    accepted only from its private address and only for `receive-backup <that sender>`. No sender, no line:
    nobody can ship here (never a wildcard)."""
    lines = []
    for name in sorted(senders):
        address, key = senders[name]["address"], " ".join(str(senders[name]["public_key"]).split()[:2])
        if not (_SENDER_NAME.match(name) and _ADDRESS.match(address) and _PUBLIC_KEY.match(key)):
            raise Refused(f"backup sender {name[:80]!r} has a malformed name, address or key in the config")
        lines.append(f'restrict,from="{address}",command="{ctl} receive-backup {name}" {key}\n')
    return "".join(lines)


def prepare_replica_dirs(root_uid: int, backup_uid: int, backup_gid: int) -> dict[str, Any]:
    """`<replica_dir>` and `<replica_dir>/from/` owned by root (group qp-backup may only traverse them: the
    receiver cannot create, rename or replace a sender's directory), one `from/<sender>/` per allowed sender
    owned by qp-backup, 0700 (the receiver writes there as qp-backup). Copies of the old flat layout
    (`<replica_dir>/<sender>--*.db` + sidecar) are moved into their sender's directory, sidecar first (a copy
    is never visible there without its checksum); nothing is deleted, a name already there is left in place.
    Copies of hosts that are no longer senders stay where they are (never candidates)."""
    base = Path(cfg("replica_dir"))
    base.mkdir(parents=True, exist_ok=True, mode=0o750)
    senders_root = base / FROM_DIR
    senders_root.mkdir(exist_ok=True, mode=0o750)
    for path in (base, senders_root):
        if path.is_symlink():
            raise Refused(f"{path} is a symlink: refusing to lay out replicas through it")
        os.chown(path, root_uid, backup_gid)
        path.chmod(0o750)
    senders = sorted(cfg("backup_senders"))
    for sender in senders:
        directory = sender_dir(sender)
        directory.mkdir(exist_ok=True, mode=0o700)
        if directory.is_symlink():
            raise Refused(f"{directory} is a symlink: refusing to store replicas through it")
        os.chown(directory, backup_uid, backup_gid)
        directory.chmod(0o700)
    moved, left = [], []
    for copy in sorted(base.glob("*--*.db")):
        owner = copy.name.split("--", 1)[0]
        if owner not in senders or not copy.is_file() or copy.is_symlink():
            continue
        dest = sender_dir(owner) / copy.name
        if dest.exists():
            left.append(copy.name)
            continue
        sidecar = copy.with_suffix(copy.suffix + ".sha256")
        if sidecar.is_file() and not sidecar.is_symlink():
            os.replace(sidecar, dest.with_suffix(dest.suffix + ".sha256"))
        os.replace(copy, dest)  # keeps its mtime: the copy's age and its place in retention are unchanged
        moved.append(copy.name)
    return {"replica_senders": senders, "replicas_migrated": moved, "replicas_left_in_place": left}


def setup() -> dict[str, Any]:
    """Idempotent: the backup-receiving user with its forced command, one replica directory per allowed sender
    (flat copies of the old layout moved there: prepare_replica_dirs), the timers."""
    user = "qp-backup"
    try:
        pwd.getpwnam(user)
    except KeyError:
        run(["useradd", "--system", "--create-home", "--home-dir", f"/var/lib/{user}", "--shell", "/bin/sh", user],
            check=True)
    entry = pwd.getpwnam(user)
    ssh_dir = Path(entry.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    tmp = ssh_dir / ".authorized_keys.tmp"
    tmp.write_text(authorized_keys(os.path.realpath(sys.argv[0]), cfg("backup_senders")))
    for path in (ssh_dir, tmp):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    tmp.chmod(0o600)
    os.replace(tmp, keys)  # a concurrent login sees the old lines or the new ones, never half a file
    layout = prepare_replica_dirs(0, entry.pw_uid, entry.pw_gid)
    run(["systemctl", "daemon-reload"], check=True)
    for timer in cfg("timers"):
        run(["systemctl", "enable", "--now", timer], check=True)
    for unit in CFG.get("units_enabled", []):  # started by what wants them (the relay: with the validator)
        run(["systemctl", "enable", unit], check=True)
    return {"setup": True, "timers": cfg("timers"), "units_enabled": CFG.get("units_enabled", []), **layout}


# -- the validator's metrics, relayed without its /db/backup webhook ---------------------------------------

def metrics_relay(listen: str, port: int, upstream: str) -> None:
    """Run the relay until stopped (see relay_server)."""
    relay_server(listen, port, upstream).serve_forever()


def relay_server(listen: str, port: int, upstream: str) -> Any:
    """Serve GET /metrics on the private address by relaying the validator's own listener on loopback.

    Why: qrysm serves `/db/backup` (--enable-db-backup-webhook) on the SAME listener as `/metrics`
    (validator/node/node.go registerPrometheusService), with no authentication; each call writes a full DB
    copy. A firewall cannot tell the two paths apart (nftables does not parse HTTP, and pipelined requests
    defeat payload matching), so the validator listens on 127.0.0.1 only and this relay, started and stopped
    with it (BindsTo=), lets the monitoring host scrape /metrics and nothing else: every other path is 404,
    every other method 405. An upstream that does not answer is a 503, so Prometheus sees `up == 0`.
    """
    import http.server

    class Relay(http.server.BaseHTTPRequestHandler):
        server_version = "qp-metrics-relay"

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            self.close_connection = True
            if self.path.split("?", 1)[0] != "/metrics":
                self._send(404, b"only /metrics is served here\n")
                return
            try:
                with urllib.request.urlopen(upstream, timeout=10) as resp:  # noqa: S310 - loopback URL from config
                    body, ctype = resp.read(), resp.headers.get("Content-Type", "text/plain; version=0.0.4")
            except (OSError, ValueError) as exc:
                self._send(503, f"validator metrics unavailable: {exc}\n".encode())
                return
            self._send(200, body, ctype)

        def do_HEAD(self) -> None:
            self.do_GET()

        def _refuse(self) -> None:
            self.close_connection = True
            self._send(405, b"method not allowed\n")

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

        def log_message(self, *_args: Any) -> None:
            pass  # one line per scrape would flood the journal

    server = http.server.ThreadingHTTPServer((listen, port), Relay)
    server.daemon_threads = True
    return server


# -- CLI ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qp-validator-ctl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status")
    p = sub.add_parser("stop")
    p.add_argument("--reason", required=True)
    p.add_argument("--timeout", type=float, default=60)
    p = sub.add_parser("activate")
    p.add_argument("--run-id", required=True)
    p.add_argument("--first-start", action="store_true")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--not-before-epoch", type=int, default=None)
    sub.add_parser("export-slashing")
    p = sub.add_parser("export-replica")
    p.add_argument("path")
    sub.add_parser("select-replica")
    sub.add_parser("metrics-relay")
    p = sub.add_parser("probe-peer")
    p.add_argument("address")
    p.add_argument("--port", type=int, action="append", required=True)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("import-slashing")
    p.add_argument("--sha256", required=True)
    sub.add_parser("setup")
    sub.add_parser("write-metrics")
    sub.add_parser("backup")
    p = sub.add_parser("receive-backup")
    # Set by the authorized_keys line's forced command (one per sender key), never by the sender.
    p.add_argument("sender", nargs="?", default=None)
    p = sub.add_parser("list-replicas")
    p.add_argument("--owner", action="append", required=True)
    p = sub.add_parser("read-replica")
    p.add_argument("name")
    p = sub.add_parser("convert-replica")
    p.add_argument("--sha256", required=True)
    p = sub.add_parser("prometheus-samples")
    p.add_argument("--host", required=True)
    p.add_argument("--window", type=int, required=True)
    p = sub.add_parser("alert")
    p.add_argument("--run-id", required=True)
    p.add_argument("--summary", required=True)
    p = sub.add_parser("oplock")
    p.add_argument("action", choices=["acquire", "release", "force-release", "show"])
    p.add_argument("--run-id", default="")
    p.add_argument("--owner", default="")
    args = parser.parse_args(argv)

    global CFG
    CFG = load_config()
    try:
        if args.cmd == "status":
            result: Any = status()
        elif args.cmd == "stop":
            result = stop(args.reason, args.timeout)
        elif args.cmd == "activate":
            result = activate(args.run_id, args.first_start, args.timeout, args.not_before_epoch)
        elif args.cmd in ("export-slashing", "export-replica"):
            data = export_slashing() if args.cmd == "export-slashing" else export_replica(args.path)
            sys.stderr.write(f"sha256={hashlib.sha256(data).hexdigest()}\n")
            sys.stdout.buffer.write(data)
            return 0
        elif args.cmd in ("read-replica", "convert-replica"):
            data = (read_replica(args.name) if args.cmd == "read-replica"
                    else convert_replica(sys.stdin.buffer.read(), args.sha256))
            sys.stderr.write(f"sha256={hashlib.sha256(data).hexdigest()}\n")
            sys.stdout.buffer.write(data)
            return 0
        elif args.cmd == "list-replicas":
            result = list_replicas(args.owner)
        elif args.cmd == "prometheus-samples":
            result = prometheus_samples(args.host, args.window)
        elif args.cmd == "alert":
            result = send_alert(args.run_id, args.summary)
        elif args.cmd == "select-replica":
            result = select_replica()
        elif args.cmd == "metrics-relay":
            metrics_relay(cfg("metrics_relay_listen"), int(cfg("metrics_port")),
                          f"http://{cfg('metrics_host')}:{cfg('metrics_port')}/metrics")
            return 0
        elif args.cmd == "probe-peer":
            result = probe_peer(args.address, args.port, args.timeout, args.rounds)
        elif args.cmd == "import-slashing":
            result = import_slashing(sys.stdin.buffer.read(), args.sha256)
        elif args.cmd == "setup":
            result = setup()
        elif args.cmd == "write-metrics":
            result = write_state_metrics()
        elif args.cmd == "backup":
            result = take_backup()
        elif args.cmd == "receive-backup":
            # Forced command: the sender's arguments arrive in SSH_ORIGINAL_COMMAND ("<name> <sha256>").
            words = os.environ.get("SSH_ORIGINAL_COMMAND", "").split()
            if len(words) != 2:
                raise Refused("usage over SSH: <name> <sha256> with the file on stdin")
            result = receive_backup(args.sender, words[0], words[1], sys.stdin.buffer.read(),
                                    os.environ.get("SSH_CONNECTION", ""))
        elif args.action == "acquire":
            result = oplock_acquire(args.run_id, args.owner)
        elif args.action in ("release", "force-release"):
            oplock_release(args.run_id, force=args.action == "force-release")
            result = {"released": True}
        else:
            result = read_oplock()
    except Refused as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    except OSError as exc:  # disk full, permission, ...: the cause in one line, not a traceback
        print(json.dumps({"error": f"{args.cmd}: {_oserror_cause(exc)}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
