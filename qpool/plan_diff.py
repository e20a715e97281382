"""Pulumi's diff of two program runs, shared by `qpool plan --diff` (offline, a PR against main) and
`qpool lab apply` (the lab against its last applied run), so the preview and the lab agree by construction.

Both sides are *records*: per resource its type, name, host, a digest per input (never the value), the
options that decide the diff (ignore_changes, replaceOnChanges, protect) and, for a Command whose stdin is a
non-secret base64 tar (a host configuration bundle), a digest per file. The rules are the providers':
pulumi-command replaces a Command when its `triggers` change and updates it otherwise; hcloud replaces a
server on a location/image/user-data/SSH-key change and resizes it (a power cycle) on a server-type change;
inputs in ignore_changes are not applied and are reported as deferred.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any

from qpool.program import ProgramRun, RecordedResource
from qpool.review import HOST_COMPONENT_TYPES, host_of

COMMAND = "command:remote:Command"
SERVER = "hcloud:index/server:Server"
VOLUME = "hcloud:index/volume:Volume"

#: hcloud server inputs whose change makes the provider replace the server (ForceNew in terraform-provider-hcloud).
SERVER_REPLACE_KEYS = frozenset({"location", "datacenter", "image", "userData", "sshKeys"})
#: hcloud server inputs changed in place by powering the server off (a resize).
SERVER_POWER_CYCLE_KEYS = frozenset({"serverType"})
#: Other resources whose input change is a replacement (ForceNew); everything else updates in place.
REPLACE_KEYS_BY_TYPE = {
    VOLUME: frozenset({"location"}),
    "random:index/randomBytes:RandomBytes": None,  # None: every input
    "random:index/randomPassword:RandomPassword": None,
    "tls:index/privateKey:PrivateKey": None,
}


def _root_key(path: str) -> str:
    """`triggers[*]` / `networks[0].ip` -> the top-level input the option names."""
    for sep in (".", "["):
        path = path.split(sep, 1)[0]
    return path


def bundle_files(stdin: Any) -> dict[str, bytes] | None:
    """The files of a non-secret base64-tar stdin (a host configuration bundle), else None."""
    if not isinstance(stdin, str) or len(stdin) < 100:
        return None
    try:
        raw = base64.b64decode(stdin, validate=True)
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    except (ValueError, binascii.Error, tarfile.TarError):
        return None
    return _named_manifest(members)


def _named_manifest(members: dict[str, bytes]) -> dict[str, bytes]:
    """Every bundle carries `.qp-bundle/manifest.json`: key it by bundle name so a host's bundles differ."""
    from cloud_init.bundles import META_DIR

    raw = members.pop(f"{META_DIR}/manifest.json", None)
    if raw is not None:
        try:
            name = json.loads(raw)["bundle"]
        except (ValueError, KeyError, TypeError):
            name = "unknown"
        members[f"{META_DIR}/{name}.manifest.json"] = raw
    return members


def base_record(run: ProgramRun, r: RecordedResource, digest: Any, inputs: dict[str, Any],
                include_files: bool = True) -> dict[str, Any]:
    """The record of one resource, ``inputs`` digested with ``digest`` (a keyed digest in the lab)."""
    rec: dict[str, Any] = {
        "type": r.type, "name": r.name, "parent": r.parent, "host": host_of(run, r),
        "inputs": {k: digest(v) for k, v in inputs.items() if not k.startswith("__")},
        "ignore_changes": sorted({_root_key(k) for k in r.options.get("ignoreChanges", [])}),
        "replace_on_changes": sorted({_root_key(k) for k in r.options.get("replaceOnChanges", [])}),
        "delete_before_replace": bool(r.options.get("deleteBeforeReplace")),
        "protect": bool(r.options.get("protect")),
    }
    if r.type == SERVER:
        rec["server"] = inputs.get("name")
    if r.type == COMMAND and include_files and not r.input_is_secret("stdin"):
        files = bundle_files(inputs.get("stdin"))
        if files is not None:
            rec["files"] = {path: hashlib.sha256(content).hexdigest() for path, content in files.items()}
    return rec


def plain_digest(value: Any) -> str:
    """Digest of a display value (secrets already `[secret]`), for offline plans."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


# -- the plan -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    op: str  # create | update | replace | delete | same
    type: str
    name: str
    host: str | None
    keys: tuple[str, ...] = ()  # changed inputs (not ignored)
    deferred: tuple[str, ...] = ()  # changed inputs held back by ignore_changes
    files: tuple[str, ...] = ()  # "+path" / "~path" / "-path" of a bundle
    power_cycle: bool = False

    @property
    def step(self) -> str:
        return self.name.removeprefix(f"{self.host}-") if self.host else self.name


@dataclass
class Plan:
    changes: list[Change]  # to carry out, in order (deletes last, in reverse)
    deferred: list[Change]  # unchanged except for ignored inputs
    refusals: list[str]
    unchanged: int

    def count(self, op: str) -> int:
        return sum(1 for c in self.changes if c.op == op)

    @property
    def summary(self) -> str:
        return (f"{self.count('create')} to create, {self.count('update')} to update, "
                f"{self.count('replace')} to replace, {self.count('delete')} to delete, {self.unchanged} unchanged")

    @property
    def empty(self) -> bool:
        return not self.changes


def _file_changes(old: dict[str, str] | None, new: dict[str, str] | None) -> tuple[str, ...]:
    if old is None and new is None:
        return ()
    old = {p: d for p, d in (old or {}).items() if not _is_bundle_manifest(p)}
    new = {p: d for p, d in (new or {}).items() if not _is_bundle_manifest(p)}
    out = [f"+{p}" for p in sorted(set(new) - set(old))]
    out += [f"~{p}" for p in sorted(set(new) & set(old)) if new[p] != old[p]]
    out += [f"-{p}" for p in sorted(set(old) - set(new))]
    return tuple(out)


def diff(old_records: list[dict[str, Any]], new_records: list[dict[str, Any]]) -> Plan:
    """Pulumi's diff of two runs' records: per resource create/update/replace/delete, refusals first-class."""
    old = {(r["type"], r["name"]): r for r in old_records}
    new_keys = {(r["type"], r["name"]) for r in new_records}
    changes: list[Change] = []
    deferred: list[Change] = []
    refusals: list[str] = []
    unchanged = 0
    for n in new_records:
        o = old.get((n["type"], n["name"]))
        if o is None:
            changes.append(Change("create", n["type"], n["name"], n["host"],
                                  files=_file_changes(None, n.get("files"))))
            continue
        ignored = set(n["ignore_changes"])
        changed = sorted(k for k in set(o["inputs"]) | set(n["inputs"]) if o["inputs"].get(k) != n["inputs"].get(k))
        held = tuple(k for k in changed if k in ignored)
        keys = tuple(k for k in changed if k not in ignored)
        if not keys:
            unchanged += 1
            if held:
                deferred.append(Change("same", n["type"], n["name"], n["host"], deferred=held))
            continue
        op, power_cycle = "update", False
        if n["type"] == COMMAND:
            if "triggers" in keys or set(keys) & set(n["replace_on_changes"]):
                op = "replace"
        elif n["type"] == SERVER:
            if set(keys) & SERVER_REPLACE_KEYS or set(keys) & set(n["replace_on_changes"]):
                op = "replace"
                refusals.append(f"{n['name']}: changing {', '.join(sorted(set(keys) & SERVER_REPLACE_KEYS))} "
                                "replaces the server (a new disk: chain data and slashing history lost); refused, "
                                "nothing was applied; revert that change or replace the host deliberately")
            power_cycle = bool(set(keys) & SERVER_POWER_CYCLE_KEYS)
        elif n["type"] in REPLACE_KEYS_BY_TYPE:
            force = REPLACE_KEYS_BY_TYPE[n["type"]]
            if force is None or set(keys) & force:
                op = "replace"
        if op == "replace" and (o.get("protect") or n.get("protect")):
            refusals.append(f"{n['name']}: protected resource would be replaced ({', '.join(keys)}); refused, "
                            "nothing was applied")
        changes.append(Change(op, n["type"], n["name"], n["host"], keys=keys, deferred=held,
                              files=_file_changes(o.get("files"), n.get("files")), power_cycle=power_cycle))
    for o in reversed(old_records):
        if (o["type"], o["name"]) not in new_keys:
            if o.get("protect"):
                refusals.append(f"{o['name']}: protected resource would be deleted; refused, nothing was applied")
            changes.append(Change("delete", o["type"], o["name"], o["host"],
                                  files=_file_changes(o.get("files"), None)))
    return Plan(changes=changes, deferred=deferred, refusals=refusals, unchanged=unchanged)


SYMBOL = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}


def format_plan(plan: Plan, stack: str) -> list[str]:
    """`pulumi preview`-like lines: one per change, bundle files under their step, then the counts."""
    lines = [f"Previewing update ({stack}):"]
    for c in plan.changes:
        detail = f" [{', '.join(c.keys)}]" if c.keys else ""
        if c.power_cycle:
            detail += " (power cycle: Hetzner resizes a powered-off server)"
        lines.append(f"  {SYMBOL[c.op]:<2} {c.type:<42} {c.name:<48} {c.op}{detail}")
        lines.extend(f"       {f}" for f in c.files)
    for c in plan.deferred:
        lines.append(f"  =  {c.type:<42} {c.name:<48} deferred: {', '.join(c.deferred)} changed but in "
                     "ignore_changes (not applied to the running server)")
    for c in plan.changes:
        if c.deferred:
            lines.append(f"     {c.name}: deferred {', '.join(c.deferred)} (ignore_changes)")
    lines.append("Resources:")
    lines.append(f"    {plan.summary}")
    lines.extend(f"error: {r}" for r in plan.refusals)
    return lines




# -- `qpool plan --diff OLD.json`: a PR's offline preview against a plan saved from main -------------------

def records_of_run(run: ProgramRun) -> list[dict[str, Any]]:
    """Records of a mocked run from its display inputs (secrets are `[secret]`: their changes are not seen)."""
    return [base_record(run, r, plain_digest, r.display_inputs()) for r in run.resources]


def _host_in_plan(by_name: dict[str, dict[str, Any]], name: str) -> str | None:
    seen: set[str] = set()
    current: dict[str, Any] | None = by_name.get(name)
    while current is not None and current["name"] not in seen:
        if current["type"] in HOST_COMPONENT_TYPES:
            return str(current["name"])
        seen.add(current["name"])
        current = by_name.get(current.get("parent") or "")
    return None


def records_of_plan_json(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Records of a `qpool plan --json` document (what a PR is compared with)."""
    by_name = {r["name"]: r for r in doc["resources"]}
    out = []
    for r in doc["resources"]:
        inputs = {k: v for k, v in r.get("inputs", {}).items() if not k.startswith("__")}
        rec: dict[str, Any] = {"type": r["type"], "name": r["name"], "parent": r.get("parent"),
                               "host": _host_in_plan(by_name, r["name"]),
                               "inputs": {k: plain_digest(v) for k, v in inputs.items()},
                               "ignore_changes": [], "replace_on_changes": [], "delete_before_replace": False,
                               "protect": False}
        if r["type"] == SERVER:
            rec["server"] = inputs.get("name")
        if r["type"] == COMMAND:
            files = bundle_files(inputs.get("stdin"))
            if files is not None:
                rec["files"] = {p: hashlib.sha256(c).hexdigest() for p, c in files.items()}
        out.append(rec)
    return out


HostFiles = dict[str, dict[str, tuple[str, bytes]]]


def _host_files_of_plan(resources: list[tuple[str, str | None, dict[str, Any]]]) -> HostFiles:
    """host -> path -> (what delivers it, content) for bundles and user-data: (type, host, display inputs)."""
    files: HostFiles = {}
    # user-data first: a bundle's copy of the same path (e.g. /etc/nftables.conf) is what the host ends with
    for type_, host, inputs in sorted(resources, key=lambda r: r[0] != SERVER):
        if type_ == SERVER and isinstance(inputs.get("userData"), str):
            files.setdefault(str(inputs.get("name")), {}).update(_user_data_files(inputs["userData"]))
        elif type_ == COMMAND and host is not None:
            for path, content in (bundle_files(inputs.get("stdin")) or {}).items():
                if _is_bundle_manifest(path):
                    continue  # digests of the files listed anyway: noise in a review
                files.setdefault(host, {})[path] = (f"step {inputs.get('__name', '')}".strip(), content)
    return files


#: Where a bundle keeps its own metadata (cloud_init/bundles.py META_DIR): the manifest only repeats the files'
#: digests; the applier itself is shown like any file.
BUNDLE_META_DIR = ".qp-bundle/"


def _is_bundle_manifest(path: str) -> bool:
    return path.startswith(BUNDLE_META_DIR) and path.endswith("manifest.json")


def _user_data_files(user_data: str) -> dict[str, tuple[str, bytes]]:
    """User-data as reviewable files: each write_files entry decoded, plus the rest of the cloud-config."""
    import yaml

    from qpool.review import _decode_write_file

    origin = "user-data, first boot only"
    if not user_data.startswith("#cloud-config"):
        return {"user-data": (origin, user_data.encode())}
    doc = yaml.safe_load(user_data) or {}
    out = {f"{entry['path'].lstrip('/')}": (origin, _decode_write_file(entry))
           for entry in doc.pop("write_files", None) or []}
    out["user-data (cloud-config without write_files)"] = (origin, yaml.safe_dump(doc, sort_keys=False).encode())
    return out


def _unified(path: str, old: bytes, new: bytes, limit: int = 200) -> list[str]:
    import difflib

    try:
        a, b = old.decode().splitlines(), new.decode().splitlines()
    except UnicodeDecodeError:
        before, after = hashlib.sha256(old).hexdigest()[:12], hashlib.sha256(new).hexdigest()[:12]
        return [f"      binary: sha256 {before} -> {after}"]
    lines = list(difflib.unified_diff(a, b, f"a/{path}", f"b/{path}", lineterm="", n=2))
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more diff lines)"]
    return [f"      {line}" for line in lines]


def host_file_changes(old_doc: dict[str, Any], run: ProgramRun) -> list[str]:
    """Per host, the files that change (bundles' files and user-data), with a unified diff of each.

    Only non-secret content exists here: secret stdin is `[secret]` in both plans and never decoded."""
    by_name = {r["name"]: r for r in old_doc["resources"]}
    old_res = [(r["type"], _host_in_plan(by_name, r["name"]),
                {**r.get("inputs", {}), "__name": r["name"]}) for r in old_doc["resources"]]
    new_res = [(r.type, host_of(run, r), {**r.display_inputs(), "__name": r.name}) for r in run.resources]
    old_files, new_files = _host_files_of_plan(old_res), _host_files_of_plan(new_res)
    lines: list[str] = []
    for host in sorted(set(old_files) | set(new_files)):
        o, n = old_files.get(host, {}), new_files.get(host, {})
        host_lines: list[str] = []
        for path in sorted(set(o) | set(n)):
            if path not in o:
                host_lines.append(f"    + {path}  ({n[path][0]})")
                if host in old_files:  # a whole new host's files are listed, not printed
                    host_lines.extend(_unified(path, b"", n[path][1]))
            elif path not in n:
                host_lines.append(f"    - {path}  ({o[path][0]})")
            elif o[path][1] != n[path][1]:
                note = "; not applied to running servers" if n[path][0].startswith("user-data") else ""
                host_lines.append(f"    ~ {path}  ({n[path][0]}{note})")
                host_lines.extend(_unified(path, o[path][1], n[path][1]))
        if host_lines:
            status = " (new host)" if host not in old_files else " (host removed)" if host not in new_files else ""
            lines += [f"  {host}{status}:", *host_lines]
    return lines


DEFERRED_HINTS = {
    "serverType": "a resize powers the server off; on a pair's active host it waits: `qpool failover`, "
                  "`pulumi up`, `qpool failover --to primary`",
    "userData": "user-data is first boot only: it applies to servers created from now on",
}


def format_plan_diff(old_doc: dict[str, Any], run: ProgramRun, old_label: str) -> str:
    """The PR preview: resource changes (like `pulumi preview`), deferred changes, then host files."""
    plan = diff(records_of_plan_json(old_doc), records_of_run(run))
    lines = [f"stack {run.stack}: changes against {old_label}"]
    for c in plan.changes:
        detail = f" [{', '.join(c.keys)}]" if c.keys else ""
        if c.power_cycle:
            detail += " (power cycle: Hetzner resizes a powered-off server)"
        lines.append(f"  {SYMBOL[c.op]:<2} {c.type} {c.name} {c.op}{detail}")
    for c in [*plan.deferred, *[c for c in plan.changes if c.deferred]]:
        for key in c.deferred:
            hint = DEFERRED_HINTS.get(key, "in ignore_changes: `pulumi up` does not apply it")
            lines.append(f"  =  {c.type} {c.name} deferred: {key} ({hint})")
    lines.append(f"Resources: {plan.summary}")
    lines.extend(f"error: {r}" for r in plan.refusals)
    files = host_file_changes(old_doc, run)
    lines.append("Host files:" if files else "Host files: no change")
    lines.extend(files)
    return "\n".join(lines)
