"""`qpool backup` and `qpool restore`: a validator pair's keys and slashing history in one sealed archive.

Why an archive at all: the live replication (qp-slashing-backup.timer) keeps the *standby* and the
monitoring server current, but a lost pair (or a lost key host whose disk must be rebuilt) needs both the
keystores and the newest slashing-protection history on a machine the operator controls. A key without
its history is a slashing waiting to happen; history without the key is useless.

Backup never changes a host's signing state: a fresh export is taken only from a key host that is already
stopped and locked (and held under its operation lock while exporting, so `qpool activate`/`failover`
cannot start it meanwhile); a running signer is never stopped for a backup. Replicated DB copies (standby,
monitoring server) are pulled as well: their checksums are verified against the sidecar written at
shipping time, and they are converted to EIP-3076 on a key host (into a throw-away temp dir; the validator
binary lives only on key hosts), so every copy's newest target epoch per key is known.

Archive layout (all members sealed together with qpool.keys.seal: AES-256-GCM under scrypt, one tag over
everything, so any change to the file is detected before anything is used):

    manifest.json                          stack, pair, hosts, sources, sha256 per member, newest epochs
    keys/validator-keys.sealed             the `qpool keys seal` bundle, byte for byte (its own passphrase)
    slashing/slashing_protection.json      union of every source below (what restore imports)
    slashing/sources/<label>.json          each EIP-3076 export as received
    slashing/raw/<host>/<name>.db          raw replicated DB copies (manual recovery), sha256-verified

Restore puts keys and history onto a key host only while its validator is stopped and LOCKED, and never
lowers what the host already knows: an archive whose history is older (for any key) than the target's own
is refused. Restore never unlocks or starts anything; `qpool activate` does that, behind its own checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cloud_init.key_host import IMPORT_KEYS
from qpool import history_coverage, interchange, replicas
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.keys.atomic import write_atomic
from qpool.keys.errors import SealError
from qpool.keys.host_bundle import host_key_tars_b64
from qpool.keys.seal import MAGIC, MIN_KDF_N, check_member_name, seal_files, unseal_bytes
from qpool.operations import Context, stopped_reasons
from qpool.program import PROJECT_DIR
from qpool.remote import Refused, Unreachable, ctl_command

Report = Callable[[str], None]
Files = dict[str, tuple[int, bytes]]

FORMAT = "quantapool-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KEY_BUNDLE_MEMBER = "keys/validator-keys.sealed"
MERGED_MEMBER = "slashing/slashing_protection.json"
ARCHIVE_SUFFIX = ".qpbackup"


# -- the archive ----------------------------------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def summarize(history: interchange.History) -> dict[str, dict[str, int | None]]:
    """Per pubkey: newest attestation target epoch and newest block slot (what restore compares)."""
    out: dict[str, dict[str, int | None]] = {}
    for key in sorted(history.pubkeys):
        slots = history.blocks.get(key, frozenset())
        out[key] = {"newest_target_epoch": history.max_target(key), "newest_block_slot": max(slots) if slots else None}
    return out


def merge_interchanges(docs: list[bytes]) -> bytes:
    """Union of EIP-3076 documents of one chain: every attestation and block of every source, once.

    A union is always safe to import: slashing protection only ever refuses more with more history. Entries
    are keyed like the validator's DB ((pubkey, source, target) and (pubkey, slot)); the first source's
    signing root wins when two sources carry the same entry.
    """
    if not docs:
        raise QpoolError("no slashing-protection history to merge")
    root: str | None = None
    atts: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
    blocks: dict[str, dict[int, dict[str, Any]]] = {}
    for i, data in enumerate(docs):
        interchange.parse(data, f"source {i}")  # validates shape and version
        doc = json.loads(data)
        this_root = str(doc["metadata"]["genesis_validators_root"]).lower()
        if root is not None and this_root != root:
            raise QpoolError(f"slashing-protection sources disagree on genesis_validators_root ({root} vs "
                             f"{this_root}): they are not from the same chain; nothing was written")
        root = this_root
        for entry in doc["data"]:
            key = str(entry["pubkey"]).lower()
            for att in entry.get("signed_attestations", []):
                slot = (int(att["source_epoch"]), int(att["target_epoch"]))
                atts.setdefault(key, {}).setdefault(slot, {k: str(v) for k, v in att.items()})
            for blk in entry.get("signed_blocks", []):
                blocks.setdefault(key, {}).setdefault(int(blk["slot"]), {k: str(v) for k, v in blk.items()})
    data_out = []
    for key in sorted(set(atts) | set(blocks)):
        data_out.append({
            "pubkey": key,
            "signed_blocks": [blocks[key][s] for s in sorted(blocks.get(key, {}))],
            "signed_attestations": [atts[key][st] for st in sorted(atts.get(key, {}))],
        })
    merged = {"metadata": {"interchange_format_version": interchange.FORMAT_VERSION,
                           "genesis_validators_root": root}, "data": data_out}
    return json.dumps(merged, indent=1, sort_keys=True).encode() + b"\n"


def build_archive(manifest: dict[str, Any], members: Files, passphrase: str, *, kdf_n: int | None = None) -> bytes:
    """Seal members plus a manifest listing each member's sha256 and size (the manifest is added here)."""
    for name in members:
        check_member_name(name)
        if name == MANIFEST:
            raise QpoolError("a member may not be called manifest.json")
    doc = dict(manifest)
    doc["members"] = {name: {"sha256": _sha256(content), "size": len(content)}
                      for name, (_mode, content) in sorted(members.items())}
    files = {**members, MANIFEST: (0o600, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")}
    return seal_files(files, passphrase) if kdf_n is None else seal_files(files, passphrase, kdf_n=kdf_n)


@dataclass(frozen=True)
class Archive:
    """An opened, verified archive."""

    manifest: dict[str, Any]
    members: Files

    def member(self, name: str) -> bytes:
        return self.members[name][1]

    @property
    def history(self) -> interchange.History:
        return interchange.parse(self.member(MERGED_MEMBER), "archive slashing history")


def open_archive(blob: bytes, passphrase: str, *, min_kdf_n: int = MIN_KDF_N) -> Archive:
    """Decrypt (the AES-GCM tag covers the whole file) and check the manifest against every member."""
    files = unseal_bytes(blob, passphrase, min_kdf_n=min_kdf_n)
    if MANIFEST not in files:
        raise QpoolError("not a qpool backup archive (no manifest.json)")
    try:
        manifest = json.loads(files[MANIFEST][1])
        listed: dict[str, dict[str, Any]] = manifest["members"]
    except (ValueError, KeyError, TypeError):
        raise QpoolError("backup archive manifest is unreadable") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise QpoolError(f"not a {FORMAT} v{FORMAT_VERSION} archive (format {manifest.get('format')!r}, "
                         f"version {manifest.get('version')!r})")
    members = {name: entry for name, entry in files.items() if name != MANIFEST}
    if set(listed) != set(members):
        extra, missing = sorted(set(members) - set(listed)), sorted(set(listed) - set(members))
        raise QpoolError(f"backup archive does not match its manifest (unlisted: {extra}, missing: {missing}); "
                         "refusing to use it")
    for name, (_mode, content) in members.items():
        if _sha256(content) != listed[name].get("sha256"):
            raise QpoolError(f"backup archive member {name} fails its sha256 in the manifest; refusing to use it")
    for required in (KEY_BUNDLE_MEMBER, MERGED_MEMBER):
        if required not in members:
            raise QpoolError(f"backup archive has no {required}")
    return Archive(manifest, members)


# -- backup ---------------------------------------------------------------------------------------------

def key_bundle_from_stack(stack: str, runner: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run
                          ) -> bytes:
    """The sealed bundle from the stack config's `validatorKeys`, through the Pulumi CLI (which decrypts it).

    A real stack stores it as an encrypted Pulumi secret, which only the Pulumi CLI with the stack's secrets
    provider can read; without the CLI the operator passes `--key-bundle FILE` (the `qpool keys seal` output).
    """
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise QpoolError("validatorKeys is an encrypted Pulumi secret and the Pulumi CLI is not installed: pass "
                         "--key-bundle FILE (the file `qpool keys seal` wrote)")
    proc = runner([pulumi, "config", "get", "validatorKeys", "--stack", stack], capture_output=True, timeout=120,
                  cwd=PROJECT_DIR)
    if proc.returncode != 0:
        raise QpoolError(f"`pulumi config get validatorKeys --stack {stack}` failed "
                         f"({proc.stderr.decode(errors='replace').strip()[:200]}); pass --key-bundle FILE instead")
    try:
        return base64.b64decode(proc.stdout.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise QpoolError("validatorKeys in the stack config is not base64 of a sealed bundle") from None


def check_key_bundle(blob: bytes, where: str) -> None:
    """A sealed bundle can't be opened without its passphrase; check at least that it is one."""
    if not blob.startswith(MAGIC):
        raise QpoolError(f"{where} is not a `qpool keys seal` bundle (no QPSEAL header)")


@dataclass
class _Collected:
    sources: list[dict[str, Any]] = field(default_factory=list)
    members: Files = field(default_factory=dict)
    interchanges: list[bytes] = field(default_factory=list)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _safe_label(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _add_interchange(col: _Collected, data: bytes, label: str, info: dict[str, Any]) -> None:
    history = interchange.parse(data, label)
    member = f"slashing/sources/{_safe_label(label)}.json"
    col.members[member] = (0o600, data)
    col.interchanges.append(data)
    col.sources.append({**info, "member": member, "sha256": _sha256(data), "keys": summarize(history)})


def list_replicas(ctx: Context, host: HostRecord, owners: list[str]) -> list[dict[str, Any]]:
    """The replicated copies on `host` shipped by one of `owners` (this pair's hosts: the receiver keeps each
    sender's copies in that sender's own directory, and lists an owner's copies from there only), newest
    first: `qp-validator-ctl list-replicas` (name, owner, mtime, sidecar sha256).
    A copy of another pair is never this pair's history."""
    args: list[str] = ["list-replicas"]
    for owner in owners:
        args += ["--owner", owner]
    res = ctx.ssh.run(host, ctl_command(*args), timeout=60)
    try:
        doc = json.loads(res.stdout.decode() or "null")
        listed = doc["replicas"] if res.rc == 0 else None
    except (ValueError, KeyError, TypeError):
        listed = None
    if not isinstance(listed, list):
        why = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
        raise QpoolError(f"{host.name}: cannot list its replicated copies: {replicas.one_line_cause(why)}")
    return listed


def _newest_replica_on(ctx: Context, host: HostRecord, owners: list[str]) -> tuple[str, float, str | None] | None:
    """(name, mtime, sidecar sha256) of the newest replicated copy on `host` shipped by one of `owners`, or None."""
    listed = list_replicas(ctx, host, owners)
    if not listed:
        return None
    return str(listed[0]["name"]), float(listed[0]["mtime"]), listed[0].get("sha256")


def _pull_raw(ctx: Context, host: HostRecord, name: str, sidecar: str | None) -> bytes:
    res = ctx.ssh.run(host, ctl_command("read-replica", name), timeout=300)
    if res.rc != 0:
        why = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
        raise QpoolError(f"{host.name}: cannot read {name}: {replicas.one_line_cause(why)}")
    if sidecar is None or _sha256(res.stdout) != sidecar:
        raise QpoolError(f"{host.name}: replicated copy {name} does not match its sha256 sidecar "
                         f"({'missing' if sidecar is None else 'mismatch'}): corrupted copy; not backed up")
    return res.stdout


def _convert_raw(ctx: Context, via: HostRecord, db: bytes) -> bytes:
    """EIP-3076 of a raw DB copy, read by `via`'s validator binary (`qp-validator-ctl convert-replica`: the
    copy's sha256 is checked on arrival, the live DB is never touched)."""
    res = ctx.ssh.run(via, ctl_command("convert-replica", "--sha256", _sha256(db)), input=db, timeout=600)
    if res.rc != 0:
        why = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
        raise QpoolError(f"{via.name}: could not read a replicated DB copy ({why.strip()[-300:]})")
    return res.stdout


def collect(ctx: Context, pair: str, run_id: str) -> _Collected:
    """Pull every slashing-protection copy of `pair` that can be had without stopping anything."""
    say = ctx.report
    col = _Collected()
    converter: HostRecord | None = None
    for host in ctx.inventory.pair_hosts(pair):
        entry: dict[str, Any] = {"role": host.role, "private_ip": host.private_ip}
        col.hosts[host.name] = entry
        try:
            st = ctx.ssh.status(host)
        except Unreachable as exc:
            entry["state"] = "unreachable"
            col.warnings.append(f"{host.name} unreachable ({exc}): no export or replica from it")
            say(f"  {host.name}: unreachable, skipped")
            continue
        converter = converter or host
        reasons = stopped_reasons(st)
        entry["state"] = "stopped and locked" if not reasons else "running or unlocked"
        if reasons:
            say(f"  {host.name}: not stopped ({'; '.join(reasons)}): no fresh export (a backup never stops a "
                "validator)")
        elif not st.get("db_present"):
            say(f"  {host.name}: stopped, no slashing-protection DB of its own")
        else:
            try:
                ctx.ssh.ctl(host, "oplock", "acquire", "--run-id", run_id, "--owner", "qpool backup")
            except Refused as exc:
                col.warnings.append(f"{host.name}: busy with another operation, no fresh export ({exc})")
                say(f"  {host.name}: busy ({exc}), no fresh export")
            else:
                try:
                    data, _sha = ctx.ssh.export_bytes(host, "export-slashing")
                finally:
                    try:
                        ctx.ssh.ctl(host, "oplock", "release", "--run-id", run_id)
                    except QpoolError as exc:
                        say(f"  warning: could not release the operation lock on {host.name}: {exc}")
                _add_interchange(col, data, f"export-{host.name}",
                                 {"kind": "export", "host": host.name, "taken": ctx.clock()})
                say(f"  {host.name}: fresh export of its stopped validator's history")
        # The newest copy that passes its checksum (a corrupt newer one is moved aside and reported).
        replica = replicas.select_intact(ctx, host) if st.get("newest_backup") else None
        if replica:
            data, _sha = ctx.ssh.export_bytes(host, "export-replica", replica["path"])
            name = PurePosixPath(replica["path"]).name
            _add_interchange(col, data, f"replica-{host.name}-{name}",
                             {"kind": "replica", "host": host.name, "copy": name, "copy_sha256": replica.get("sha256"),
                              "copy_mtime": replica.get("mtime")})
            say(f"  {host.name}: replicated copy {name} ({replica.get('age_seconds', 0):.0f}s old)")
    mon = ctx.inventory.monitoring()
    if mon is not None:
        col.hosts[mon.name] = {"role": mon.role, "private_ip": mon.private_ip}
        try:
            newest = _newest_replica_on(ctx, mon, [h.name for h in ctx.inventory.pair_hosts(pair)])
        except Unreachable as exc:
            col.hosts[mon.name]["state"] = "unreachable"
            col.warnings.append(f"{mon.name} unreachable ({exc}): no replica from the monitoring server")
            newest = None
        else:
            col.hosts[mon.name]["state"] = "reachable"
        if newest is not None:
            name, mtime, sidecar = newest
            raw = _pull_raw(ctx, mon, name, sidecar)
            col.members[f"slashing/raw/{mon.name}/{name}"] = (0o600, raw)
            if converter is None:
                col.warnings.append(f"no key host reachable to read {mon.name}'s copy {name}: kept raw only")
            else:
                data = _convert_raw(ctx, converter, raw)
                _add_interchange(col, data, f"replica-{mon.name}-{name}",
                                 {"kind": "replica", "host": mon.name, "copy": name, "copy_sha256": sidecar,
                                  "copy_mtime": mtime, "read_on": converter.name})
            say(f"  {mon.name}: replicated copy {name} ({ctx.clock() - mtime:.0f}s old)")
    return col


def backup(ctx: Context, pair: str, out_dir: Path, passphrase: str, key_bundle: bytes, *,
           key_bundle_source: str, kdf_n: int | None = None) -> Path:
    """Write one archive for `pair` into `out_dir` (0600, atomic, never overwriting); return its path."""
    stack = ctx.inventory.stack
    ctx.inventory.pair_hosts(pair)  # unknown pair: clear error before any SSH
    check_key_bundle(key_bundle, key_bundle_source)
    now = ctx.clock()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    run_id = f"backup-{int(now)}"
    ctx.report(f"backup: stack {stack}, pair {pair}")
    col = collect(ctx, pair, run_id)
    if not col.interchanges:
        raise QpoolError(f"no slashing-protection history of pair {pair} could be read (no stopped key host with a "
                         "DB, no replicated copy): nothing written. An archive without history would let a "
                         "restored key sign without protection.")
    merged = merge_interchanges(col.interchanges)
    history = interchange.parse(merged, "merged history")
    members: Files = {**col.members, KEY_BUNDLE_MEMBER: (0o600, key_bundle), MERGED_MEMBER: (0o600, merged)}
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "stack": stack, "pair": pair, "hosts": col.hosts,
        "genesis_validators_root": history.genesis_validators_root,
        "keys": summarize(history),
        "sources": col.sources,
        "key_bundle": {"member": KEY_BUNDLE_MEMBER, "source": key_bundle_source, "sha256": _sha256(key_bundle)},
        "warnings": col.warnings,
    }
    blob = build_archive(manifest, members, passphrase, kdf_n=kdf_n)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = out_dir / f"qpool-backup-{stack}-{pair}-{stamp}{ARCHIVE_SUFFIX}"
    if dest.exists() or dest.is_symlink():
        raise QpoolError(f"{dest} already exists; refusing to overwrite a backup")
    write_atomic(dest, blob, 0o600)
    for warning in col.warnings:
        ctx.report(f"warning: {warning}")
    ctx.report(f"wrote {dest} ({len(blob)} bytes): {len(history.pubkeys)} key(s), "
               f"{len(col.sources)} history source(s)")
    return dest


# -- restore --------------------------------------------------------------------------------------------

def older_than_target(archive: interchange.History, target: interchange.History) -> list[str]:
    """Keys for which the archive knows less recent signing than the target host: restoring it is refused."""
    problems = []
    for key in sorted(target.pubkeys):
        t_epoch, a_epoch = target.max_target(key), archive.max_target(key)
        if t_epoch is not None and (a_epoch is None or a_epoch < t_epoch):
            problems.append(f"{key[:18]}...: archive's newest target epoch {a_epoch} < target's {t_epoch}")
        t_blocks, a_blocks = target.blocks.get(key, frozenset()), archive.blocks.get(key, frozenset())
        if t_blocks and (not a_blocks or max(a_blocks) < max(t_blocks)):
            problems.append(f"{key[:18]}...: archive's newest block slot "
                            f"{max(a_blocks) if a_blocks else None} < target's {max(t_blocks)}")
    return problems


def _require_locked(ctx: Context, host: HostRecord, when: str) -> None:
    reasons = stopped_reasons(ctx.ssh.status(host))
    if reasons:
        raise QpoolError(f"refusing to restore {when}: {host.name}'s validator is active or unlocked "
                         f"({'; '.join(reasons)}); restore only onto a stopped, LOCKED host")


def restore(ctx: Context, host_name: str, archive: Archive, keys_passphrase: str) -> dict[str, Any]:
    """Keys then history onto `host_name` while its validator stays stopped and locked; verify; start nothing."""
    say = ctx.report
    stack = ctx.inventory.stack
    manifest = archive.manifest
    if manifest.get("stack") != stack:
        raise QpoolError(f"archive is for stack {manifest.get('stack')!r}, not {stack!r}")
    host = ctx.inventory.hosts.get(host_name)
    if host is None:
        raise QpoolError(f"stack {stack} has no host {host_name!r}; hosts: {', '.join(sorted(ctx.inventory.hosts))}")
    if host.role not in ("primary", "backup"):
        raise QpoolError(f"{host_name} is a {host.role} host; keys are restored only onto a key host")
    if host.pair != manifest.get("pair"):
        raise QpoolError(f"archive holds pair {manifest.get('pair')!r}, but {host_name} belongs to pair {host.pair!r}")
    history = archive.history
    # Open the key bundle before touching the host: a wrong passphrase must change nothing.
    try:
        bundle_b64 = base64.b64encode(archive.member(KEY_BUNDLE_MEMBER)).decode()
        # The stack-wide bundle holds each pair's own keys: restore only this host's pair's.
        key_tar = base64.b64decode(host_key_tars_b64(bundle_b64, keys_passphrase, ctx.inventory.pairs())[host.pair])
    except SealError as exc:
        raise QpoolError(f"cannot open the key bundle inside the archive: {exc} (pass --keys-passphrase-file "
                         "if it differs from the archive's passphrase)") from None
    run_id = f"restore-{int(ctx.clock())}"
    say(f"restore: archive of {manifest.get('created')} (pair {manifest.get('pair')}) onto {host.name}")
    ctx.ssh.ctl(host, "oplock", "acquire", "--run-id", run_id, "--owner", "qpool restore")
    try:
        st = ctx.ssh.status(host)
        reasons = stopped_reasons(st)
        if reasons:
            raise QpoolError(f"refusing to restore: {host.name}'s validator is active or unlocked "
                             f"({'; '.join(reasons)}); restore only onto a stopped, LOCKED host")
        target_history: interchange.History | None = None
        if st.get("db_present"):
            data, _sha = ctx.ssh.export_bytes(host, "export-slashing")
            target_history = interchange.parse(data, f"{host.name}'s own history")
        if target_history is not None and target_history.pubkeys:
            if target_history.genesis_validators_root != history.genesis_validators_root:
                raise QpoolError(f"refusing: {host.name} is on another chain (genesis_validators_root "
                                 f"{target_history.genesis_validators_root}) than the archive "
                                 f"({history.genesis_validators_root})")
            problems = older_than_target(history, target_history)
            if problems:
                raise QpoolError(f"refusing: the archive's slashing history is older than what {host.name} already "
                                 "has; use a newer backup (nothing was changed): " + "; ".join(problems))
            say(f"  {host.name} already has history for {len(target_history.pubkeys)} key(s); the archive is as "
                "new or newer for every one")
        else:
            say(f"  {host.name} has no slashing-protection history of its own")
        # The archive must cover every copy of the pair's history anywhere (peer DB, replicas on both hosts
        # and the monitoring server): an old archive must not put the host behind its own replicas.
        history_coverage.check_restore(ctx, host, history, manifest.get("created"), target_history)
        # Keys, exactly as the bootstrap streams them (qp-import-keys refuses unless locked and stopped).
        res = ctx.ssh.run(host, shlex.join(["sudo", IMPORT_KEYS]), input=key_tar, timeout=600)
        if res.rc != 0:
            raise QpoolError(f"{host.name}: key import refused or failed: "
                             f"{res.stderr.decode(errors='replace').strip()[-400:]}")
        lines = res.stdout.decode(errors="replace").strip().splitlines()
        say(f"  keys: {lines[-1] if lines else 'imported'}")
        merged = archive.member(MERGED_MEMBER)
        sha = _sha256(merged)
        ctx.ssh.ctl(host, "import-slashing", "--sha256", sha, input=merged, timeout=600)
        back, _ = ctx.ssh.export_bytes(host, "export-slashing")
        lost = interchange.missing(history, interchange.parse(back, f"re-export on {host.name}"))
        if lost:
            raise QpoolError(f"{host.name}: history after the import is missing entries: " + "; ".join(lost))
        _require_locked(ctx, host, "(final check)")
        say(f"  history: imported {len(history.pubkeys)} key(s), sha256 {sha[:16]}..., verified by re-export")
    finally:
        try:
            ctx.ssh.ctl(host, "oplock", "release", "--run-id", run_id)
        except QpoolError as exc:
            say(f"warning: could not release the operation lock on {host.name}: {exc}")
    say(f"done: {host.name} holds the keys and history, validator still LOCKED; start it only with "
        "`qpool activate` (or `qpool failover`)")
    return {"host": host.name, "keys": sorted(history.pubkeys), "sha256": sha, "summary": summarize(history)}
