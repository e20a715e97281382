"""Configuration bundles in the program (issue 11): user-data is first boot only, every base bundle is a
`<host>-bundle-<name>` step, and each stack edit re-runs exactly the steps it must (the Commands whose
stdin/triggers change are the ones `pulumi up` re-runs)."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from typing import Any

import yaml

from cloud_init.base import (
    AUTHORIZED_KEYS,
    NODE_EXPORTER_DEFAULT,
    SSHD_DROPIN,
    UNATTENDED_UPGRADES_CONF,
    decoded_write_files,
)
from cloud_init.bundles import META_DIR
from cloud_init.nftables import NFTABLES_CONF
from core import ports
from qpool.program import ProgramRun
from qpool.review import host_files

SERVER = "hcloud:index/server:Server"
COMMAND = "command:remote:Command"
BASE_BUNDLES = ("firewall", "ssh-access", "base")
NEW_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx2lG0mDJ7o6dU0Gm8Xw1a6ZcP4Dw6bVd5kS3pQvZ9c new-op@quantapool.example"


def _commands(run: ProgramRun) -> dict[str, dict[str, Any]]:
    """Command name -> what decides whether pulumi-command re-runs it (create, stdin, triggers)."""
    out = {}
    for cmd in run.of_type(COMMAND):
        inputs = cmd.display_inputs()
        out[cmd.name] = {k: json.dumps(inputs.get(k), sort_keys=True) for k in ("create", "stdin", "triggers")}
    return out


def _changed(before: ProgramRun, after: ProgramRun) -> set[str]:
    a, b = _commands(before), _commands(after)
    assert set(a) == set(b), "an edit of this kind must not add or remove steps"
    return {name for name in a if a[name] != b[name]}


def _hosts(run: ProgramRun) -> list[str]:
    return [s.display_inputs()["name"] for s in run.of_type(SERVER)]


def _tar(run: ProgramRun, name: str) -> dict[str, bytes]:
    stdin = run.by_name(name).display_inputs()["stdin"]
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(stdin))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_firewall_and_its_confirm_then_base_bundles_after_host_env(run_stack, testnet_raw) -> None:
    run = run_stack(testnet_raw)
    names = [c.name for c in run.of_type(COMMAND)]
    for host in _hosts(run):
        own = [n.removeprefix(f"{host}-") for n in names if n.startswith(f"{host}-")]
        i = own.index("host-env")
        assert own[i + 1:i + 5] == ["bundle-firewall", "firewall-confirm", "bundle-ssh-access", "bundle-base"], host
        for bundle in BASE_BUNDLES:
            cmd = run.by_name(f"{host}-bundle-{bundle}")
            assert not cmd.input_is_secret("stdin"), "bundles are plain and reviewable"
            members = _tar(run, f"{host}-bundle-{bundle}")
            assert f"{META_DIR}/apply.py" in members and f"{META_DIR}/manifest.json" in members
        confirm = run.by_name(f"{host}-firewall-confirm").display_inputs()
        digest = json.loads(_tar(run, f"{host}-bundle-firewall")[f"{META_DIR}/manifest.json"])["digest"]
        assert confirm["create"].endswith(f"confirm firewall {digest}")


def test_user_data_holds_only_first_boot_content(run_stack, testnet_raw) -> None:
    run = run_stack(testnet_raw)
    for server in run.of_type(SERVER):
        doc = yaml.safe_load(server.display_inputs()["userData"])
        paths = {e["path"] for e in doc["write_files"]}
        for moved in (UNATTENDED_UPGRADES_CONF, NODE_EXPORTER_DEFAULT, AUTHORIZED_KEYS):
            assert moved not in paths, moved
        files = host_files(run)[server.display_inputs()["name"]]
        fw = decoded_write_files(doc)[NFTABLES_CONF]
        assert "policy drop;" in fw and f"tcp dport {ports.SSH} accept" in fw
        # no role port is open at first boot (P2P, metrics, Grafana arrive with the firewall bundle)
        for port in (*[p.port for p in ports.P2P_PORTS], ports.NODE_EXPORTER, ports.GRAFANA):
            assert f" {port}" not in fw.replace(f" {ports.SSH} ", " "), port
        # the rendered review shows the bundle's ruleset (what the host ends with), not the first-boot one
        assert files[f"files{NFTABLES_CONF}"].decode() != fw
        assert SSHD_DROPIN in paths, "hardened sshd from the first boot on"


def test_noop_rerun_is_byte_identical(run_stack, testnet_raw) -> None:
    first, second = run_stack(testnet_raw), run_stack(testnet_raw)
    assert _commands(first) == _commands(second)
    assert _changed(first, second) == set()


def test_trusted_address_edit_changes_exactly_the_firewall_bundles(run_stack, testnet_raw) -> None:
    before = run_stack(testnet_raw)
    edited = {**testnet_raw, "network": {**testnet_raw["network"], "sshAllowedCidrs": ["198.51.100.23/32"]}}
    after = run_stack(edited)
    hosts = _hosts(before)
    assert len(hosts) >= 3
    assert _changed(before, after) == ({f"{h}-bundle-firewall" for h in hosts}
                                       | {f"{h}-firewall-confirm" for h in hosts})
    for h in hosts:
        nft = _tar(after, f"{h}-bundle-firewall")[NFTABLES_CONF.lstrip("/")].decode()
        assert "elements = { 198.51.100.23/32 }" in nft and "elements = { 203.0.113.7/32 }" not in nft


def test_operator_key_edit_changes_exactly_the_ssh_access_bundles(run_stack, testnet_raw) -> None:
    before = run_stack(testnet_raw)
    old_keys = list(testnet_raw["operatorSshKeys"])
    added = run_stack({**testnet_raw, "operatorSshKeys": [*old_keys, NEW_KEY]})
    hosts = _hosts(before)
    assert _changed(before, added) == {f"{h}-bundle-ssh-access" for h in hosts}
    for h in hosts:
        keys = _tar(added, f"{h}-bundle-ssh-access")[AUTHORIZED_KEYS.lstrip("/")].decode()
        assert NEW_KEY in keys and all(k in keys for k in old_keys)
    # removing it again: the whole file is rewritten without it (a removed key is really removed)
    removed = run_stack({**testnet_raw, "operatorSshKeys": old_keys})
    assert _changed(added, removed) == {f"{h}-bundle-ssh-access" for h in hosts}
    for h in hosts:
        assert NEW_KEY not in _tar(removed, f"{h}-bundle-ssh-access")[AUTHORIZED_KEYS.lstrip("/")].decode()


def test_bundle_actions_never_touch_the_validator(run_stack, testnet_raw) -> None:
    """Pulumi never starts/restarts a validator: no bundle's check or on-change action names its unit."""
    run = run_stack(testnet_raw)
    for cmd in run.of_type(COMMAND):
        if "-bundle-" not in cmd.name:
            continue
        manifest = json.loads(_tar(run, cmd.name)[f"{META_DIR}/manifest.json"])
        for entry in [*manifest["checks"], *manifest["on_change"]]:
            assert "qp-validator.service" not in entry["command"], (cmd.name, entry)


def test_render_lists_bundle_files_and_manifests(run_stack, testnet_raw) -> None:
    run = run_stack(testnet_raw)
    files = host_files(run)
    for host in _hosts(run):
        per_host = files[host]
        for bundle in BASE_BUNDLES:
            assert f"bundles/{bundle}.manifest.json" in per_host
        assert f"files{AUTHORIZED_KEYS}" in per_host and f"files{UNATTENDED_UPGRADES_CONF}" in per_host
        assert not any(k.startswith(f"files/{META_DIR}") for k in per_host), "the applier is not a host file"
        script = next(v for k, v in per_host.items() if k.endswith(f"-{host}-bundle-firewall.sh")).decode()
        assert "check nft -c" in script and "auto-revert" in script
