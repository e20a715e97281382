"""Run the real Pulumi program in-process under Pulumi's mocks and record what it would create.

This is the one code path behind `qpool plan`, `qpool render`, the local lab and the whole-program tests:
each of them reads the recorded resources (types, names, parents, inputs, options) instead of keeping a
second, hand-written copy of the topology. Secret inputs are recorded with their secret flag so output can
show `[secret]`; the values themselves stay available to in-process consumers (the lab) that need them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import runpy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from core.config import NAMESPACE, PROJECT

PROJECT_DIR = Path(__file__).resolve().parent.parent
SECRET_MARK = "[secret]"  # noqa: S105 - the redaction marker, not a secret


@dataclass
class RecordedResource:
    type: str
    name: str
    urn: str
    parent_urn: str
    custom: bool
    inputs: dict[str, Any]  # raw: secrets still wrapped (see `unwrap`)
    options: dict[str, Any]
    dependencies: list[str]
    id: str | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def parent(self) -> str | None:
        return urn_name(self.parent_urn) if self.parent_urn else None

    def display_inputs(self) -> dict[str, Any]:
        """Inputs with every secret replaced by `[secret]`: safe to print, diff and commit.

        A server's user-data is secret only because it carries the host's SSH host key (issue 13): it is shown
        with just that key's private half replaced by `[secret]` (see `reviewable_user_data`)."""
        shown = _redact(self.inputs)
        if self.type == SERVER_TYPE and rpc.is_rpc_secret(self.inputs.get("userData")):
            reviewable = reviewable_user_data(_unwrap(self.inputs["userData"]))
            if reviewable is not None:
                shown["userData"] = reviewable
        return shown

    def plain_inputs(self) -> dict[str, Any]:
        """Inputs with secrets unwrapped: for in-process consumers only, never for output."""
        return _unwrap(self.inputs)

    def input_is_secret(self, key: str) -> bool:
        return rpc.is_rpc_secret(self.inputs.get(key))


SERVER_TYPE = "hcloud:index/server:Server"


def reviewable_user_data(user_data: Any) -> str | None:
    """Secret user-data as a reviewer may read it: the private host key replaced by `[secret]`, re-serialised
    with the dumper that wrote it (byte-identical apart from the key: tests/program/test_host_key_pinning.py).
    None (keep it `[secret]`) when it holds no host key to redact: then it is secret for another reason."""
    import yaml

    from cloud_init import host_keys
    from cloud_init.base import to_user_data

    if not isinstance(user_data, str) or not user_data.startswith("#cloud-config"):
        return None
    doc = yaml.safe_load(user_data) or {}
    shown = host_keys.redacted(doc, SECRET_MARK)
    return to_user_data(shown) if shown is not doc else None


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _redact(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return SECRET_MARK
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _unwrap(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return _unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


StateFactory = Callable[[pulumi_mocks.MockResourceArgs, int], dict[str, Any]]


class RecordingMocks(pulumi_mocks.Mocks):
    """Answers like the providers would, with deterministic ids and plausible computed outputs.

    `state_overrides` lets the lab plug in real values (a real deploy key, the lab hosts' addresses)
    without a second implementation of the program.
    """

    def __init__(self, state_overrides: dict[str, StateFactory] | None = None) -> None:
        self.state_overrides = state_overrides or {}

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        # Ids and fake addresses derive from the resource's type and name, not from the (asynchronous)
        # registration order, so two renders of the same config are byte-identical for PR diffs.
        n = int(hashlib.sha256(f"{args.typ}::{args.name}".encode()).hexdigest()[:8], 16)
        rid = str(100000 + n % 900000)  # hcloud ids are numeric strings
        state = dict(_unwrap(args.inputs))
        state.update(_default_state(args, n))
        factory = self.state_overrides.get(args.typ)
        if factory is not None:
            state.update(factory(args, n))
        return rid, state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def _fake_hex(name: str, nbytes: int) -> str:
    return hashlib.sha256(f"plan:{name}".encode()).hexdigest()[: nbytes * 2].ljust(nbytes * 2, "0")


def _default_state(args: pulumi_mocks.MockResourceArgs, n: int) -> dict[str, Any]:
    """Computed outputs the program reads. Values are obviously fake and never leave a plan."""
    t = args.typ
    if t == "hcloud:index/server:Server":
        return {"ipv4Address": f"198.51.100.{10 + n % 200}", "ipv6Address": f"2001:db8::{n % 65536:x}",
                "status": "running"}
    if t == "tls:index/privateKey:PrivateKey":
        return {"publicKeyOpenssh": f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{_fake_hex(args.name, 16)} plan",
                "privateKeyOpenssh": "plan-only-private-key", "privateKeyPem": "plan-only-private-key",
                "publicKeyPem": "plan-only-public-key"}
    if t == "random:index/randomId:RandomId":
        nbytes = int(args.inputs.get("byteLength", 32))
        return {"hex": _fake_hex(args.name, nbytes), "b64Std": "", "dec": "0"}
    if t == "random:index/randomBytes:RandomBytes":
        nbytes = int(args.inputs.get("length", 32))
        return {"hex": _fake_hex(args.name, nbytes), "base64": ""}
    if t == "random:index/randomPassword:RandomPassword":
        return {"result": _fake_hex(args.name, 16)}
    if t in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
        return {"certPem": f"-----BEGIN CERTIFICATE-----\nplan-only {args.name}\n-----END CERTIFICATE-----\n"}
    if t == "tls:index/certRequest:CertRequest":
        return {"certRequestPem": "plan-only-csr"}
    if t == "command:remote:Command":
        return {"stdout": "", "stderr": ""}
    return {}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Also records parent, options and dependencies, which MockResourceArgs leaves out."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recorded: list[RecordedResource] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        reg = self.resources.get(response.urn)
        options = {
            "protect": bool(request.protect),
            "ignoreChanges": list(request.ignoreChanges),
            "deleteBeforeReplace": bool(request.deleteBeforeReplace),
            "additionalSecretOutputs": list(request.additionalSecretOutputs),
            "replaceOnChanges": list(request.replaceOnChanges),
            "retainOnDelete": bool(request.retainOnDelete),
        }
        if request.HasField("customTimeouts"):
            ct = request.customTimeouts
            options["customTimeouts"] = {"create": ct.create, "update": ct.update, "delete": ct.delete}
        self.recorded.append(RecordedResource(
            type=request.type, name=request.name, urn=response.urn, parent_urn=request.parent,
            custom=bool(request.custom), inputs=rpc.deserialize_properties(request.object), options=options,
            dependencies=list(request.dependencies), id=reg.id if reg else None,
            state=dict(reg.state) if reg else {}))
        return response


@dataclass
class ProgramRun:
    stack: str
    resources: list[RecordedResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, type_: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_]

    def by_name(self, name: str) -> RecordedResource:
        for r in self.resources:
            if r.name == name:
                return r
        raise KeyError(name)

    def plan_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "resources": [
                {"type": r.type, "name": r.name, "parent": r.parent, "inputs": r.display_inputs()}
                for r in sorted(self.resources, key=lambda r: (r.type, r.name))
            ],
        }


def _config_map(raw: dict[str, Any], secret_values: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    config: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            continue  # encrypted in the stack file: supplied via secret_values (or absent offline)
        config[f"{NAMESPACE}:{key}"] = value if isinstance(value, str) else json.dumps(value)
    secret_keys = []
    for key, value in secret_values.items():
        config[f"{NAMESPACE}:{key}"] = value
        secret_keys.append(f"{NAMESPACE}:{key}")
    return config, secret_keys


@contextlib.contextmanager
def _isolated_runtime() -> Iterator[asyncio.AbstractEventLoop]:
    """Pulumi's runtime state is process-global: give every run a fresh loop, root and config."""
    old_env = os.environ.pop("PULUMI_CONFIG", None)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings.ROOT.set(None)
    try:
        yield loop
    finally:
        settings.ROOT.set(None)
        pulumi.runtime.set_all_config({}, [])
        loop.close()
        asyncio.set_event_loop(None)
        if old_env is not None:
            os.environ["PULUMI_CONFIG"] = old_env


def run_program(stack: str, raw_config: dict[str, Any], secret_values: dict[str, str] | None = None, *,
                state_overrides: dict[str, StateFactory] | None = None,
                program: Path | None = None) -> ProgramRun:
    """Execute `__main__.py` under mocks with this config; raise what the program raises."""
    main = program or PROJECT_DIR / "__main__.py"
    return run_in_mocks(stack, raw_config, secret_values, lambda: runpy.run_path(str(main), run_name="__main__"),
                        state_overrides=state_overrides)


def run_in_mocks(stack: str, raw_config: dict[str, Any], secret_values: dict[str, str] | None,
                 body: Callable[[], Any], *, state_overrides: dict[str, StateFactory] | None = None) -> ProgramRun:
    """Run `body` as a Pulumi program under recording mocks in an isolated runtime; return what it registered."""
    config, secret_keys = _config_map(raw_config, dict(secret_values or {}))
    with _isolated_runtime():
        pulumi.runtime.set_all_config(config, secret_keys)
        mocks = RecordingMocks(state_overrides)
        monitor = RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
        _sync_await(run_pulumi_func(body))
        root = settings.get_root_resource()
        outputs: dict[str, Any] = {}
        secret_outputs: set[str] = set()
        for key, value in (getattr(root, "outputs", {}) or {}).items():
            out = pulumi.Output.from_input(value)
            outputs[key] = _sync_await(out.future())
            if _sync_await(out.is_secret()):
                secret_outputs.add(key)
        return ProgramRun(stack=stack, resources=monitor.recorded, outputs=outputs, secret_outputs=secret_outputs)
