"""Backup-shipping keys, one per key host (issue 12 item 3), checked on the whole program under mocks.

Why: with one stack-wide key, any key host could authenticate as any other, and the receiver could only tell
senders apart by their source address. Now each key host has its own `qp-backup-ship-key-<host>`; its private
half goes to that host only (the `secret-backup-ship-key` step), and each receiver's authorized_keys has one
line per allowed sender: that sender's public key, `from=` its private address, and a forced command that
names it. The mocks hand out REAL ED25519 keys, so the chain is checked with the keys themselves; a second
pair is added so the monitoring server's list and the pair separation are both visible.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import io
import json
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from cloud_init.host_tools import CTL_CONFIG, CTL_PATH
from core.config import HostSpec, StackConfig, load_stack_config
from qpool.program import ProgramRun, run_program
from qpool.review import render_files
from tests.conftest import stack_raw
from tests.program.test_host_key_pinning import _real_ed25519
from tests.support.leakguard import LeakGuard

SERVER = "hcloud:index/server:Server"
TLS_KEY = "tls:index/privateKey:PrivateKey"
CTL_FILE = Path(__file__).resolve().parents[2] / "cloud_init" / "files" / "qp_validator_ctl.py"


def _two_pairs() -> dict[str, Any]:
    raw = copy.deepcopy(stack_raw("testnet"))
    pair = copy.deepcopy(raw["validatorPairs"][0])
    pair.update(name="p2")
    pair["primary"]["privateIp"], pair["backup"]["privateIp"] = "10.42.1.13", "10.42.1.14"
    raw["validatorPairs"].append(pair)
    return raw


@pytest.fixture(scope="module")
def cfg() -> StackConfig:
    return load_stack_config(_two_pairs())


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program("testnet", _two_pairs(), {}, state_overrides={TLS_KEY: _real_ed25519})


@pytest.fixture(scope="module")
def ctl() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qp_validator_ctl_ship_keys", CTL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ship_keys(run: ProgramRun) -> dict[str, dict[str, Any]]:
    """host name -> the state of its `qp-backup-ship-key-<host>` (the real key pair the mock handed out)."""
    return {r.name.removeprefix("qp-backup-ship-key-"): r for r in run.of_type(TLS_KEY)
            if r.name.startswith("qp-backup-ship-key")}


def _public(state: dict[str, Any]) -> str:
    return " ".join(state["publicKeyOpenssh"].split()[:2])


def _ctl_config(run: ProgramRun, host: HostSpec) -> dict[str, Any]:
    raw = base64.b64decode(run.by_name(f"{host.name}-host-tools").plain_inputs()["stdin"])
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.extractfile(CTL_CONFIG.lstrip("/"))
        assert member is not None
        return json.loads(member.read())


def test_each_key_host_has_its_own_key_delivered_to_it_only(run: ProgramRun, cfg: StackConfig) -> None:
    keys = _ship_keys(run)
    assert sorted(keys) == sorted(h.name for h in cfg.key_hosts()), "one key per key host, no stack-wide key"
    privates = {name: r.state["privateKeyOpenssh"] for name, r in keys.items()}
    assert len(set(privates.values())) == len(privates), "two key hosts share a shipping key"
    for name, resource in keys.items():
        assert resource.plain_inputs()["algorithm"] == "ED25519"
        assert {"privateKeyOpenssh", "privateKeyPem"} <= set(resource.options["additionalSecretOutputs"]), name
        step = run.by_name(f"{name}-secret-backup-ship-key")
        assert step.input_is_secret("stdin") and step.plain_inputs()["stdin"] == privates[name], name
    # no other step carries any shipping private key (the monitoring server has none)
    for step in run.of_type("command:remote:Command"):
        stdin = step.plain_inputs().get("stdin")
        owners = [n for n, p in privates.items() if isinstance(stdin, str) and p in stdin]
        assert owners == ([step.name.removesuffix("-secret-backup-ship-key")]
                          if step.name.endswith("-secret-backup-ship-key") else []), step.name


def test_each_receiver_lists_exactly_its_senders_with_their_keys(run: ProgramRun, cfg: StackConfig,
                                                                 ctl: ModuleType) -> None:
    keys = _ship_keys(run)
    for host in cfg.hosts():
        expected = ([h for h in cfg.key_hosts(host.pair) if h.name != host.name] if host.is_key_host
                    else cfg.key_hosts())
        senders = _ctl_config(run, host)["backup_senders"]
        assert senders == {h.name: {"address": h.private_ip, "public_key": _public(keys[h.name].state)}
                           for h in expected}, host.name
        assert "ship_public_key" not in _ctl_config(run, host)
        # what `qp-validator-ctl setup` writes for the qp-backup user from that config
        lines = ctl.authorized_keys(CTL_PATH, senders).splitlines()
        assert lines == [f'restrict,from="{h.private_ip}",command="{CTL_PATH} receive-backup {h.name}" '
                         f'{_public(keys[h.name].state)}' for h in sorted(expected, key=lambda h: h.name)], host.name
    # the pairs are apart: no p1 host accepts a p2 host, and vice versa
    pair_of = {h.name: h.pair for h in cfg.key_hosts()}
    for host in cfg.key_hosts():
        assert {pair_of[n] for n in _ctl_config(run, host)["backup_senders"]} == {host.pair}


def test_public_halves_match_the_private_keys(run: ProgramRun) -> None:
    for name, resource in _ship_keys(run).items():
        key = serialization.load_ssh_private_key(resource.state["privateKeyOpenssh"].encode(), password=None)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        assert public == _public(resource.state), name


def test_no_shipping_private_key_in_user_data_or_rendered_output(run: ProgramRun, tmp_path: Path) -> None:
    guard = LeakGuard()
    # the key's base64 body lines, the part a partial leak would show; lines that every unencrypted OpenSSH
    # ED25519 key shares (format magic, cipher "none", key type, padding) prove nothing and are left out
    seen: dict[str, int] = {}
    for resource in run.of_type(TLS_KEY):
        for line in set(resource.state.get("privateKeyOpenssh", "").splitlines()):
            seen[line] = seen.get(line, 0) + 1
    for name, resource in _ship_keys(run).items():
        private = resource.state["privateKeyOpenssh"]
        guard.add(private, f"ship key of {name}")
        for line in private.splitlines()[1:-1]:
            if len(line) >= 8 and seen[line] == 1:
                guard.add(line, f"ship key line of {name}")
    for server in run.of_type(SERVER):
        guard.scan_text(server.plain_inputs()["userData"], f"user-data of {server.name}")
    for path in render_files(run, tmp_path / "review"):
        guard.scan_file(path)
    guard.scan_text(json.dumps(run.plan_json()), "plan.json")
    guard.assert_clean()
