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

from cloud_init import host_keys
from cloud_init.base import to_user_data
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


def reviewable_user_data(server: RecordedResource) -> str | None:
    """A server's user-data as a reviewer may read it: the SSH host key's private half replaced by `[secret]`.

    The host key makes the whole user-data a secret input (cloud_init/host_keys.py). Everything else in it is
    reviewable, so it is shown re-serialised with the same dumper that wrote it (byte-identical apart from the
    key; tests/program/test_host_key_pinning.py). A secret user-data without a host key to redact is not shown.
    """
    if not server.input_is_secret("userData"):
        value = server.display_inputs().get("userData")
        return value if isinstance(value, str) else None
    plain = server.plain_inputs().get("userData")
    if not isinstance(plain, str) or not plain.startswith("#cloud-config"):
        return None
    doc = yaml.safe_load(plain) or {}
    shown = host_keys.redacted(doc, SECRET_MARK)
    return to_user_data(shown) if shown is not doc else None


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
    """Every file per host: user-data, the files inside it, and each bootstrap command as a script."""
    files: dict[str, dict[str, bytes]] = {}
    for server in run.of_type("hcloud:index/server:Server"):
        inputs = server.display_inputs()
        host = inputs.get("name") or server.name
        user_data = reviewable_user_data(server)
        if not isinstance(user_data, str):
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
            for path, content in members.items():
                files.setdefault(host, {})[str(PurePosixPath("files") / _safe_relative(path))] = content
            script += f"# stdin: a tar of {len(members)} file(s), rendered under files/\n"
        script += str(inputs.get("create", "")) + "\n"
        files.setdefault(host, {})[f"bootstrap/{steps[host]:02d}-{cmd.name}.sh"] = script.encode()
    return files


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
    plan_path.write_text(json.dumps(run.plan_json(), indent=2, sort_keys=True) + "\n")
    written.append(plan_path)
    return written
