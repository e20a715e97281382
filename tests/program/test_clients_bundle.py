"""Issue 11, key hosts: the `clients` bundle step under mocks.

- per pair, the ACTIVE host's `<host>-bundle-clients` step (which restarts its execution client / beacon
  node when they changed) depends on the STANDBY's, health gate included: standby first;
- a pin bump changes that step's stdin and trigger, and not the servers' user-data (ignored by Pulumi);
- the step's stdin is a plain bundle (units, pins, scripts), never secret, and the same config gives the
  same bytes (a `pulumi up` without change re-runs nothing).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import tarfile
from typing import Any

from cloud_init import key_host as kh
from components.stack import PLACEHOLDER_DEPLOY_KEY, preflight_issues
from core.config import load_stack_config
from qpool.program import ProgramRun, run_program
from tests.conftest import stack_raw

COMMAND = "command:remote:Command"
SERVER = "hcloud:index/server:Server"


def _commands(run: ProgramRun) -> dict[str, Any]:
    return {c.name: c for c in run.of_type(COMMAND)}


def _members(stdin_b64: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(stdin_b64))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _run(raw: dict[str, Any], stack: str = "mainnet") -> ProgramRun:
    return run_program(stack, raw, None)


def _depends(run: ProgramRun, name: str, on: str) -> bool:
    """Whether `name` depends on `on`, directly or through its earlier steps (the dependency graph)."""
    by_urn = {r.urn: r for r in run.resources}
    target = _commands(run)[on].urn
    seen: set[str] = set()
    todo = [_commands(run)[name].urn]
    while todo:
        urn = todo.pop()
        if urn in seen:
            continue
        seen.add(urn)
        todo += by_urn[urn].dependencies if urn in by_urn else []
    return target in seen - {_commands(run)[name].urn}


def test_active_clients_step_waits_for_the_standby_in_every_pair() -> None:
    raw = stack_raw("mainnet")
    run = _run(raw)
    cfg = load_stack_config(raw)
    for pair in cfg.validator_pairs:
        active = f"qp-mainnet-{pair.name}-{pair.active}"
        standby = f"qp-mainnet-{pair.name}-{'backup' if pair.active == 'primary' else 'primary'}"
        by_name = _commands(run)
        assert by_name[f"{standby}-bundle-clients"].urn in by_name[f"{active}-bundle-clients"].dependencies
        assert not _depends(run, f"{standby}-bundle-clients", f"{active}-bundle-clients")


def test_the_order_follows_the_configured_active_role() -> None:
    raw = copy.deepcopy(stack_raw("testnet"))
    raw["validatorPairs"][0]["active"] = "backup"
    by_name = _commands(_run(raw, "testnet"))
    primary, backup = "qp-testnet-p1-primary-bundle-clients", "qp-testnet-p1-backup-bundle-clients"
    assert by_name[primary].urn in by_name[backup].dependencies
    assert by_name[backup].urn not in by_name[primary].dependencies


def test_clients_step_carries_the_bundle_and_runs_the_applier() -> None:
    run = _run(stack_raw("testnet"), "testnet")
    step = _commands(run)["qp-testnet-p1-primary-bundle-clients"]
    inputs = step.plain_inputs()
    assert inputs["create"] == kh.CLIENTS_STEP_COMMAND and inputs["create"].endswith(f"sudo {kh.CLIENTS_APPLY}")
    members = _members(inputs["stdin"])
    for path in (*(f"{kh.UNIT_DIR}/{u}" for u in kh.CLIENT_UNITS), kh.CLIENTS_JSON, kh.INSTALL_CLIENTS,
                 kh.CLIENTS_APPLY, kh.CLIENTS_HEALTH, kh.CLIENTS_STATE, kh.START_CLIENTS):
        assert path.lstrip("/") in members, path
    assert f"{kh.UNIT_DIR}/{kh.LOCK_UNIT}".lstrip("/") not in members, "the lock is first boot only"
    assert hashlib.sha256(inputs["stdin"].encode()).hexdigest() in inputs["triggers"]
    assert "stdin" not in (step.options.get("additionalSecretOutputs") or [])
    again = _commands(_run(stack_raw("testnet"), "testnet"))["qp-testnet-p1-primary-bundle-clients"]
    assert again.plain_inputs()["stdin"] == inputs["stdin"], "same config, same bundle: nothing re-runs"


def test_pin_bump_changes_the_clients_step_not_user_data() -> None:
    raw = copy.deepcopy(stack_raw("testnet"))
    before = _run(raw, "testnet")
    raw["clients"]["beacon"]["version"] = "v9.9.9"
    raw["clients"]["beacon"]["sha256"] = "ab" * 32
    after = _run(raw, "testnet")
    ud = {s.plain_inputs()["name"]: s.plain_inputs()["userData"] for s in before.of_type(SERVER)}
    assert ud == {s.plain_inputs()["name"]: s.plain_inputs()["userData"] for s in after.of_type(SERVER)}
    for host in ("qp-testnet-p1-primary", "qp-testnet-p1-backup"):
        old, new = (_commands(r)[f"{host}-bundle-clients"].plain_inputs() for r in (before, after))
        assert old["triggers"] != new["triggers"]
        doc = json.loads(_members(new["stdin"])[kh.CLIENTS_JSON.lstrip("/")])
        assert doc["clients"]["beacon"]["version"] == "v9.9.9"
    changed = [n for n, c in _commands(after).items()
               if c.plain_inputs().get("triggers") != _commands(before)[n].plain_inputs().get("triggers")]
    assert sorted(changed) == ["qp-testnet-p1-backup-bundle-clients", "qp-testnet-p1-primary-bundle-clients"]


def test_client_config_no_longer_grows_key_host_user_data() -> None:
    """60 incompressible bootstrap records used to overflow key-host user-data; they now travel in the bundle."""
    raw = copy.deepcopy(stack_raw("mainnet"))
    raw["clients"]["beaconBootstrapNodes"] = [
        "qnr:-" + "".join(hashlib.sha256(f"{i}-{j}".encode()).hexdigest() for j in range(3)) for i in range(60)]
    cfg = load_stack_config(raw)
    assert not [i for i in preflight_issues(cfg) if i.path == "validatorPairs"]
    assert PLACEHOLDER_DEPLOY_KEY.startswith("ssh-ed25519 ")
