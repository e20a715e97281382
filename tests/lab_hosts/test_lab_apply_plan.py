"""`qpool lab apply` without a lab: the plan (Pulumi's diff of two program runs) and the order and semantics of
the steps it carries out, against a recording stand-in for the lab's SSH (no root needed).

Why these matter: a no-op apply must re-run nothing (that needs identical inputs for unchanged resources on
every run: seed-derived random values, persisted keys), an added pair must not touch the existing pair, and
pulumi-command's replace/update/delete semantics decide which commands a live signer's host runs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import lab.apply as lab_apply
from lab.apply import COMMAND, SERVER, ApplyError, apply, diff, format_plan, record_run
from lab.deploy import lab_program_run
from lab.state import LabState
from lab.testing import config_variant
from qpool.stacks import load_stack

STACK = "e2eapplyunit"
OCTET = 31
MIRROR = f"http://10.42.{OCTET}.254:8088"


def _mirror(state_dir: Path) -> None:
    (state_dir / "mirror").mkdir(parents=True, exist_ok=True)
    for name in ("gzond", "gqrl", "beacon-chain", "validator"):
        (state_dir / "mirror" / name).write_bytes(f"stand-in {name}\n".encode())


def _records(state_dir: Path, config: Path) -> tuple[Any, list[dict[str, Any]]]:
    loaded = load_stack(STACK, config)
    _cfg, run, _secrets = lab_program_run(STACK, loaded.raw, loaded.config, state_dir, MIRROR)
    return run, record_run(run, LabState(state_dir))


def add_pair(config: dict[str, Any]) -> None:
    pair = copy.deepcopy(config["quantapool:validatorPairs"][0])
    pair["name"] = "p2"
    pair["primary"]["privateIp"] = f"10.42.{OCTET}.13"
    pair["backup"]["privateIp"] = f"10.42.{OCTET}.14"
    config["quantapool:validatorPairs"].append(pair)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("apply-base")
    state_dir = root / "state"
    _mirror(state_dir)
    config = config_variant(root / "base.yaml", OCTET)
    _run, records = _records(state_dir, config)
    LabState(state_dir).save_applied(records)
    return state_dir, config, records


@pytest.fixture
def lab_state(baseline: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path) -> Path:
    """A copy of the baseline lab state (same seed, keys and applied run) this test may change."""
    dest = tmp_path / "state"
    shutil.copytree(baseline[0], dest)
    return dest


def test_same_config_twice_plans_nothing_and_the_record_holds_no_secret(
        baseline: tuple[Path, Path, list[dict[str, Any]]], lab_state: Path) -> None:
    _state, config, records = baseline
    run, again = _records(lab_state, config)
    plan = diff(records, again)
    assert plan.empty, format_plan(plan, STACK)
    assert "0 to create, 0 to update, 0 to replace, 0 to delete" in format_plan(plan, STACK)[-1]
    applied = (lab_state / "applied.json").read_text()
    secret_values = [v for r in run.resources for k, v in r.plain_inputs().items()
                     if r.input_is_secret(k) and isinstance(v, str) and len(v) >= 8]
    secret_values += list(LabState(lab_state).lab_secrets(["p1"]).values())
    assert secret_values, "the run has secret inputs (JWT, keys): the check below would be empty otherwise"
    assert not [v for v in secret_values if v in applied]
    for name in ("lab-seed", "lab-secrets.json", "lab-keys.json", "deploy_ed25519", "applied.json"):
        assert (lab_state / name).stat().st_mode & 0o077 == 0, name


def test_added_pair_creates_its_hosts_and_touches_no_step_of_the_existing_pair(
        baseline: tuple[Path, Path, list[dict[str, Any]]], lab_state: Path, tmp_path: Path) -> None:
    _state, _config, records = baseline
    _run, new = _records(lab_state, config_variant(tmp_path / "two.yaml", OCTET, mutate=add_pair))
    plan = diff(records, new)
    by_op: dict[str, set[str]] = {}
    for c in plan.changes:
        by_op.setdefault(c.op, set()).add(c.name)
    created_servers = {c.name for c in plan.changes if c.op == "create" and c.type == SERVER}
    assert created_servers == {"qp-testnet-p2-primary-server", "qp-testnet-p2-backup-server"}
    assert "delete" not in by_op
    touched_hosts = {c.host for c in plan.changes if c.type == COMMAND and c.op != "create"}
    assert not {h for h in touched_hosts if h and "-p1-" in h}, format_plan(plan, STACK)
    assert {c.host for c in plan.changes if c.type == COMMAND and c.op == "create"} == {
        "qp-testnet-p2-primary", "qp-testnet-p2-backup"}
    assert not plan.refusals


def test_server_location_change_is_refused_before_anything_runs(
        baseline: tuple[Path, Path, list[dict[str, Any]]], lab_state: Path, tmp_path: Path) -> None:
    def move(config: dict[str, Any]) -> None:
        config["quantapool:validatorPairs"][0]["backup"]["location"] = "hel1"

    _run, new = _records(lab_state, config_variant(tmp_path / "moved.yaml", OCTET, mutate=move))
    plan = diff(baseline[2], new)
    [server] = [r for r in plan.refusals if r.startswith("qp-testnet-p1-backup-server:")]
    assert "location" in server and "refused" in server
    assert any(r.startswith("qp-testnet-p1-backup-chain: protected") for r in plan.refusals)  # its volume too


def test_server_type_change_is_an_in_place_power_cycle(
        baseline: tuple[Path, Path, list[dict[str, Any]]], lab_state: Path, tmp_path: Path) -> None:
    def resize(config: dict[str, Any]) -> None:
        config["quantapool:validatorPairs"][0]["backup"]["serverType"] = "ccx33"

    _run, new = _records(lab_state, config_variant(tmp_path / "resized.yaml", OCTET, mutate=resize))
    plan = diff(baseline[2], new)
    [change] = [c for c in plan.changes if c.name == "qp-testnet-p1-backup-server"]
    assert change.op == "update" and change.power_cycle and change.keys == ("serverType",)
    assert not plan.refusals


# -- pulumi-command semantics on synthetic records ---------------------------------------------------------

def _cmd(name: str, host: str = "h1", **inputs: str) -> dict[str, Any]:
    return {"type": COMMAND, "name": name, "parent": host, "host": host, "inputs": inputs,
            "ignore_changes": [], "replace_on_changes": ["triggers"], "delete_before_replace": False,
            "protect": False}


def test_command_diff_follows_pulumi_command() -> None:
    old = [_cmd("h1-a", create="1", triggers="t"), _cmd("h1-b", create="1", triggers="t"),
           _cmd("h1-c", create="1", triggers="t"), _cmd("h1-gone", create="1")]
    new = [_cmd("h1-a", create="1", triggers="t2"), _cmd("h1-b", create="2", triggers="t"),
           _cmd("h1-c", create="1", triggers="t"), _cmd("h1-new", create="1")]
    plan = diff(old, new)
    assert [(c.op, c.name) for c in plan.changes] == [
        ("replace", "h1-a"), ("update", "h1-b"), ("create", "h1-new"), ("delete", "h1-gone")]
    assert plan.unchanged == 1
    assert plan.summary.startswith("1 to create, 1 to update, 1 to replace, 1 to delete")


def test_ignored_inputs_are_deferred_not_applied_and_protected_deletes_refused() -> None:
    server = {"type": SERVER, "name": "s", "parent": None, "host": None, "inputs": {"serverType": "a", "x": "1"},
              "ignore_changes": ["serverType"], "replace_on_changes": [], "delete_before_replace": False,
              "protect": False, "server": "s"}
    changed = copy.deepcopy(server)
    changed["inputs"]["serverType"] = "b"
    plan = diff([server], [changed])
    assert plan.empty and [c.deferred for c in plan.deferred] == [("serverType",)]
    assert any("deferred: serverType" in line for line in format_plan(plan, "x"))
    volume = {**copy.deepcopy(server), "type": lab_apply.VOLUME, "name": "v", "protect": True, "ignore_changes": []}
    assert diff([volume], []).refusals == ["v: protected resource would be deleted; refused, nothing was applied"]


# -- carrying out a plan against a recording stand-in for the lab ------------------------------------------

class FakeLab:
    """Just enough of a LabDeployment: hosts by name and an SSH that records (and can fail) commands."""

    def __init__(self, state_dir: Path, records: list[dict[str, Any]], fail: str | None = None) -> None:
        hosts = {r["server"] for r in records if r["type"] == SERVER}
        self.stack, self.state_dir = STACK, state_dir
        self.network = SimpleNamespace(bridge_ip=f"10.42.{OCTET}.254")
        self.hosts = {h: SimpleNamespace(name=h) for h in hosts}
        self.config = self.run = self.config_source = None
        self.secrets: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def ssh(self, host: str, cmd: str, *, input: bytes | None = None, timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
        self.calls.append((host, cmd))
        rc = 1 if self.fail and self.fail in cmd else 0
        return subprocess.CompletedProcess([], rc, b"", b"boom: the host said no\n" if rc else b"")

    deploy_ssh = ssh  # the program's steps (the deploy identity); `ssh` is the operator's


@pytest.fixture
def no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_apply, "release_mirror", lambda *_a, **_k: contextlib.nullcontext())


def test_replace_runs_the_new_create_then_the_old_delete(
        baseline: tuple[Path, Path, list[dict[str, Any]]], lab_state: Path, no_mirror: None) -> None:
    _state, config, records = baseline
    state = LabState(lab_state)
    old = copy.deepcopy(records)
    step = next(r for r in old if r["name"].endswith("p1-primary-host-tools"))
    step["inputs"]["triggers"] = "an older bundle"
    step["delete"] = "echo old-delete"
    state.save_applied(old)
    lab = FakeLab(lab_state, records)
    log: list[str] = []
    result = apply(lab, config, log=log.append)  # type: ignore[arg-type]
    host = "qp-testnet-p1-primary"
    assert result.ran == [f"{host}: host-tools create", f"{host}: host-tools delete"]
    assert [c for h, c in lab.calls] == [next(r for r in _records(lab_state, config)[0].resources
                                              if r.name == step["name"]).plain_inputs()["create"],
                                         "echo old-delete"]
    assert any("0 to create, 0 to update, 1 to replace, 0 to delete" in line for line in log)
    again = apply(FakeLab(lab_state, records), config, log=log.append)  # type: ignore[arg-type]
    assert again.plan.empty and again.ran == []


def test_failed_step_stops_with_one_line_and_a_rerun_continues(
        baseline: tuple[Path, Path, list[dict[str, Any]]], lab_state: Path, no_mirror: None) -> None:
    _state, config, records = baseline
    old = copy.deepcopy(records)
    for r in old:
        if r["type"] == COMMAND and r["host"] == "qp-testnet-p1-backup":
            r["inputs"]["stdin"] = "changed"  # every p1-backup step (and only those) has an update pending
    LabState(lab_state).save_applied(old)
    names = [r["name"] for r in old if r["type"] == COMMAND and r["host"] == "qp-testnet-p1-backup"]
    resources = _records(lab_state, config)[0].resources
    creates = [next(r for r in resources if r.name == n).plain_inputs()["create"] for n in names]
    # a step in the middle whose command no other step of the host shares (the fake fails on the command;
    # bundle steps all run the same applier command)
    i = next(i for i in range(2, len(names)) if creates.count(creates[i]) == 1)
    marker = creates[i]
    lab = FakeLab(lab_state, records, fail=marker)
    with pytest.raises(ApplyError) as err:
        apply(lab, config, log=lambda _l: None)  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"qp-testnet-p1-backup: step {names[i].removeprefix('qp-testnet-p1-backup-')} ")
    assert "boom: the host said no" in message
    lab2 = FakeLab(lab_state, records)
    result = apply(lab2, config, log=lambda _l: None)  # type: ignore[arg-type]
    assert [n.split(": ", 1)[1].split()[0] for n in result.ran] == [
        n.removeprefix("qp-testnet-p1-backup-") for n in names[i:]]
    def key(r: dict[str, Any]) -> tuple[str, str]:
        return r["type"], r["name"]

    applied = json.loads((lab_state / "applied.json").read_text())["resources"]
    assert sorted(applied, key=key) == sorted(records, key=key)  # registration order varies between runs
