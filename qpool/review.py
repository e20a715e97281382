"""Offline review: the resource graph (`qpool plan`) and every file each host receives (`qpool render`).

Both come from one mocked run of the real program (qpool.program), so what a reviewer reads in a PR is
what `pulumi up` would send, minus secret values, which are shown as `[secret]` and never written.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from cloud_init.bundles import META_DIR as BUNDLE_META_DIR
from cloud_init.bundles import is_bundle_member_meta
from core.config import warnings_for
from qpool.errors import QpoolError
from qpool.program import SECRET_MARK, ProgramRun, RecordedResource, run_program
from qpool.stacks import load_stack

#: Components that stand for one server; their name is the server's name.
HOST_COMPONENT_TYPES = frozenset({
    "quantapool:infra:ValidatorNode",
    "quantapool:infra:BackupNode",
    "quantapool:infra:MonitoringServer",
})


@dataclass
class PlanResult:
    run: ProgramRun
    warnings: list[str]


def plan_secret_standins(present: set[str], pairs: tuple[str, ...]) -> dict[str, str]:
    """Offline, encrypted secrets cannot be read: stand-ins keep the program's shape and show as [secret]."""
    from qpool import secrets_standin

    return secrets_standin.standin_values(present, pairs)


def plan_stack(stack: str, config_file: Path | None = None) -> PlanResult:
    loaded = load_stack(stack, config_file, preflight=True)  # same pre-`up` lines as validate
    secrets = plan_secret_standins(set(loaded.config.secrets_present),
                                   tuple(p.name for p in loaded.config.validator_pairs))
    try:
        run = run_program(stack, loaded.raw, secrets)
    except Exception as exc:  # the program's own RunError carries its message
        raise QpoolError(f"the program failed under mocks: {exc}") from exc
    return PlanResult(run=run, warnings=warnings_for(loaded.config))


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 15] + f"... ({len(text)} chars)"


SERVER_TYPE = "hcloud:index/server:Server"


def deferred_changes(run: ProgramRun) -> list[dict[str, str]]:
    """Changes `pulumi up` will not make on a host now (components/host_server.py ignore_changes_for):
    a server-type change (a power-cycling resize) on a pair's active host waits for failover."""
    out = []
    for server in sorted(run.of_type(SERVER_TYPE), key=lambda r: r.name):
        if "serverType" in server.options.get("ignoreChanges", []):
            inputs = server.display_inputs()
            out.append({
                "host": str(inputs.get("name") or server.name), "field": "serverType",
                "configured": str(inputs.get("serverType")),
                "reason": "the pair's active host (stack config `active`): a resize powers it off; a "
                          "serverType change applies to the standby now and to this host only after "
                          "`qpool failover`, `pulumi up`, failback",
            })
    return out


def plan_document(run: ProgramRun) -> dict[str, Any]:
    """plan.json / `qpool plan --json`: the resource graph plus the deferred changes."""
    return {**run.plan_json(), "deferred": deferred_changes(run)}


def format_plan(run: ProgramRun) -> str:
    """A readable tree: parents before children, one line per input."""
    children: dict[str | None, list[RecordedResource]] = {}
    for r in run.resources:
        children.setdefault(r.parent_urn or None, []).append(r)
    lines = [f"stack {run.stack}: {len(run.resources)} resources"]

    def walk(parent: str | None, depth: int) -> None:
        for r in sorted(children.get(parent, []), key=lambda r: (r.type, r.name)):
            lines.append(f"{'  ' * depth}+ {r.type} {r.name}")
            for key, value in sorted(r.display_inputs().items()):
                if key.startswith("__"):
                    continue
                if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                    lines.append(f"{'  ' * depth}    {key}:")
                    lines.extend(f"{'  ' * depth}      - {_short(v, 160)}" for v in value)
                else:
                    lines.append(f"{'  ' * depth}    {key}: {_short(value)}")
            opts = [k for k, v in r.options.items() if v]
            if opts:
                lines.append(f"{'  ' * depth}    (options: {', '.join(sorted(opts))})")
            walk(r.urn, depth + 1)

    roots = [u for u in children if u is None or not any(r.urn == u for r in run.resources)]
    for root in roots:
        walk(root, 0)
    deferred = deferred_changes(run)
    if deferred:
        lines.append("deferred (ignore_changes while active):")
        lines.extend(f"  {d['host']}: {d['field']} ({d['configured']}) deferred: {d['reason']}" for d in deferred)
    if run.outputs:
        lines.append("outputs:")
        for key in sorted(run.outputs):
            shown = SECRET_MARK if key in run.secret_outputs else _short(run.outputs[key])
            lines.append(f"  {key}: {shown}")
    return "\n".join(lines)


def host_of(run: ProgramRun, resource: RecordedResource) -> str | None:
    """The server a resource belongs to: the nearest host component among its ancestors."""
    by_urn = {r.urn: r for r in run.resources}
    current: RecordedResource | None = resource
    while current is not None:
        if current.type in HOST_COMPONENT_TYPES:
            return current.name
        current = by_urn.get(current.parent_urn)
    return None


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path.lstrip("/"))
    if ".." in rel.parts or not rel.parts:
        raise QpoolError(f"refusing to render a file with an unsafe path: {path!r}")
    return rel


def _decode_write_file(entry: dict[str, Any]) -> bytes:
    content = entry.get("content", "")
    encoding = entry.get("encoding", "text/plain")
    if encoding in ("b64", "base64"):
        return base64.b64decode(content)
    if encoding in ("gz+b64", "gzip+base64", "gz+base64"):
        return gzip.decompress(base64.b64decode(content))
    return content.encode()


def host_files(run: ProgramRun) -> dict[str, dict[str, bytes]]:
    """Every file per host: user-data, the files inside it, and each bootstrap command as a script.

    Files of bundles (and of any other non-secret tar on a step's stdin) go under files/ too; applied later,
    they override user-data's first-boot copy of the same path (e.g. /etc/nftables.conf), which is what
    the host ends up with. The first-boot copy stays readable in user-data.
    """
    files: dict[str, dict[str, bytes]] = {}
    for server in run.of_type("hcloud:index/server:Server"):
        inputs = server.display_inputs()
        host = inputs.get("name") or server.name
        user_data = inputs.get("userData")  # secret only for the host key, which display_inputs redacts
        if not isinstance(user_data, str) or user_data == SECRET_MARK:
            continue
        per_host = files.setdefault(host, {})
        per_host["user-data"] = user_data.encode()
        if user_data.startswith("#cloud-config"):
            doc = yaml.safe_load(user_data) or {}
            for entry in doc.get("write_files", []) or []:
                per_host[str(PurePosixPath("files") / _safe_relative(entry["path"]))] = _decode_write_file(entry)
    steps: dict[str, int] = {}
    for cmd in run.of_type("command:remote:Command"):
        host = host_of(run, cmd)
        if host is None:
            continue
        inputs = cmd.display_inputs()
        steps[host] = steps.get(host, 0) + 1
        script = f"#!/bin/sh\n# bootstrap step {steps[host]}: {cmd.name} (runs over SSH as the admin user)\n"
        if cmd.input_is_secret("stdin"):
            script += "# stdin: [secret] (streamed by Pulumi, never written here)\n"
        elif inputs.get("stdin"):
            members = _tar_members(str(inputs["stdin"]))
            per_host = files.setdefault(host, {})
            meta = {k: v for k, v in members.items() if is_bundle_member_meta(k)}
            host_members = {k: v for k, v in members.items() if not is_bundle_member_meta(k)}
            for path, content in host_members.items():
                per_host[str(PurePosixPath("files") / _safe_relative(path))] = content
            script += f"# stdin: a tar of {len(host_members)} file(s), rendered under files/\n"
            script += _bundle_summary(meta, per_host)
        script += str(inputs.get("create", "")) + "\n"
        files.setdefault(host, {})[f"bootstrap/{steps[host]:02d}-{cmd.name}.sh"] = script.encode()
    return files


def _bundle_summary(meta: dict[str, bytes], per_host: dict[str, bytes]) -> str:
    """A configuration bundle (cloud_init/bundles.py): its manifest under bundles/, its checks and actions
    in the step script, so a reviewer sees what the host validates and restarts, not only the files."""
    raw = meta.get(f"{BUNDLE_META_DIR}/manifest.json")
    if raw is None:
        return ""
    manifest = json.loads(raw)
    name = manifest["bundle"]
    per_host[f"bundles/{name}.manifest.json"] = raw
    if f"{BUNDLE_META_DIR}/apply.py" in meta:
        per_host["bundles/qp-bundle-apply.py"] = meta[f"{BUNDLE_META_DIR}/apply.py"]
    lines = [f"# bundle {name} (manifest: bundles/{name}.manifest.json, digest {manifest['digest'][:12]})"]
    lines += [f"#   check {c['name']}: {c['command']}" for c in manifest.get("checks", [])]
    lines += [f"#   on change of {' '.join(a['paths'])}: {a['command']}" for a in manifest.get("on_change", [])]
    if manifest.get("firewall"):
        fw = manifest["firewall"]
        lines.append(f"#   applied with auto-revert after {fw['revert_seconds']} s unless confirmed")
    return "\n".join(lines) + "\n"


def _tar_members(stdin_b64: str) -> dict[str, bytes]:
    """The files inside a non-secret bootstrap bundle (base64 tar), for review."""
    try:
        raw = base64.b64decode(stdin_b64, validate=True)
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    except (ValueError, tarfile.TarError):
        return {}


def render_files(run: ProgramRun, out_dir: Path) -> list[Path]:
    """Write host files and plan.json; replaces the previous render so stale files never linger."""
    if out_dir.exists():
        marker = out_dir / "plan.json"
        if any(out_dir.iterdir()) and not marker.exists():
            raise QpoolError(f"{out_dir} exists and is not a previous render (no plan.json); choose an empty dir")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    written = []
    for host, entries in sorted(host_files(run).items()):
        for rel, content in sorted(entries.items()):
            path = out_dir / host / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            written.append(path)
    plan_path = out_dir / "plan.json"
    plan_path.write_text(json.dumps(plan_document(run), indent=2, sort_keys=True) + "\n")
    written.append(plan_path)
    return written
