"""Key hosts and the monitoring server under mocks: placement, protection, secrets, and the safety rules."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from qpool.keys.seal import seal_files
from qpool.program import ProgramRun
from qpool.review import host_files

SERVER = "hcloud:index/server:Server"
VOLUME = "hcloud:index/volume:Volume"
COMMAND = "command:remote:Command"

JWT_LIKE = re.compile(r"\b[0-9a-f]{64}\b")
PASSPHRASE = "correct horse battery staple 42"
KEYSTORE_CANARY = b"keystore-canary-5b1c0d"
PASSWORD_CANARY = b"keystore-password-canary-77aa"
WEBHOOK = "https://discord.example/api/webhooks/canary-webhook-9f3e"


def keystore(pubkey: str) -> bytes:
    return json.dumps({"pubkey": pubkey, "canary": "keystore-canary-5b1c0d"}).encode()


def secrets(pairs: tuple[str, ...] = ("p1",)) -> dict[str, str]:
    members: dict[str, tuple[int, bytes]] = {}
    for i, pair in enumerate(pairs):
        prefix = f"{pair}/" if len(pairs) > 1 else ""
        members[f"{prefix}keystore-m_12381_238_0_0_0-1.json"] = (0o600, keystore(f"ab{i:02d}" * 8))
        members[f"{prefix}password.txt"] = (0o600, PASSWORD_CANARY)
        members[f"{prefix}seed.txt"] = (0o600, b"seed-canary-31ee")
    bundle = seal_files(members, PASSPHRASE, kdf_n=2**17)
    return {"validatorKeys": base64.b64encode(bundle).decode(), "validatorKeysPassphrase": PASSPHRASE,
            "discordWebhookUrl": WEBHOOK}


@pytest.fixture(scope="module")
def runs() -> dict[str, ProgramRun]:
    from qpool.program import run_program
    from tests.conftest import stack_raw

    return {"testnet": run_program("testnet", stack_raw("testnet"), secrets()),
            "mainnet": run_program("mainnet", stack_raw("mainnet"), secrets(("p1", "p2")))}


def servers(run: ProgramRun) -> dict[str, dict]:
    return {r.plain_inputs()["name"]: r for r in run.of_type(SERVER)}


def test_one_server_per_host_with_labels_and_placement(runs):
    run = runs["mainnet"]
    by_name = servers(run)
    assert sorted(by_name) == sorted(run.outputs["hosts"])
    for name, server in by_name.items():
        inputs = server.plain_inputs()
        host = run.outputs["hosts"][name]
        assert inputs["labels"]["app"] == "quantapool" and inputs["labels"]["env"] == "mainnet"
        assert inputs["labels"]["role"] == host["role"]
        assert inputs["networks"][0]["ip"] == host["privateIp"]
        # attached to our subnet explicitly, not to "the network's last subnet" (provider docs)
        assert inputs["networks"][0]["subnetId"] == run.by_name("qp-subnet").id
        assert inputs["image"] == "debian-12"
        if host["role"] != "monitoring":
            assert inputs["labels"]["pair"] == host["pair"]
            # mainnet pairs span two locations: different physical hosts already, no spread group
            assert "placementGroupId" not in inputs
            assert inputs["firewallIds"] == [int(run.by_name("qp-fw-validator").id)]
        else:
            assert inputs["firewallIds"] == [int(run.by_name("qp-fw-monitoring").id)]


def test_key_hosts_never_replaced_by_template_changes(runs):
    for name, server in servers(runs["mainnet"]).items():
        assert {"userData", "sshKeys"} <= set(server.options["ignoreChanges"]), name


def test_protection_follows_config_and_volumes_always_protected(runs):
    for stack, expected in (("mainnet", True), ("testnet", False)):
        for _name, server in servers(runs[stack]).items():
            inputs = server.plain_inputs()
            assert inputs["deleteProtection"] is expected and inputs["rebuildProtection"] is expected
            assert inputs["backups"] is expected
        chain = [v for v in runs[stack].of_type(VOLUME) if v.name.endswith("-chain")]
        assert chain and all(v.options["protect"] for v in chain)


def test_chain_volume_sized_and_located(runs):
    run = runs["testnet"]
    vol = run.by_name("qp-testnet-p1-backup-chain").plain_inputs()
    assert vol["size"] == 300 and vol["location"] == "nbg1"


def test_user_data_mounts_volume_by_stable_id(runs):
    run = runs["testnet"]
    vol_id = run.by_name("qp-testnet-p1-primary-chain").id
    user_data = servers(run)["qp-testnet-p1-primary"].plain_inputs()["userData"]
    assert f"/dev/disk/by-id/scsi-0HC_Volume_{vol_id}" in user_data


def test_secrets_are_secret_and_absent_from_user_data(runs):
    run = runs["testnet"]
    jwt_cmds = [c for c in run.of_type(COMMAND) if c.name.endswith("-secret-jwt")]
    assert len(jwt_cmds) == 2
    for cmd in jwt_cmds:
        assert cmd.input_is_secret("stdin")
        assert cmd.plain_inputs()["logging"] == "none"
    for cmd in run.of_type(COMMAND):
        if cmd.name.endswith("-import-keys"):
            assert cmd.input_is_secret("stdin")
            stdin = base64.b64decode(cmd.plain_inputs()["stdin"])
            assert KEYSTORE_CANARY in stdin and PASSWORD_CANARY in stdin
            assert b"seed-canary" not in stdin  # the seed never leaves the operator's machine
    for server in run.of_type(SERVER):
        user_data = server.plain_inputs()["userData"]
        assert not JWT_LIKE.search(user_data.replace("0" * 64, ""))
        for canary in ("canary", PASSPHRASE):
            assert canary not in user_data


def test_keys_imported_on_both_key_hosts_of_every_pair(runs):
    names = sorted(c.name for c in runs["mainnet"].of_type(COMMAND) if c.name.endswith("-import-keys"))
    assert names == sorted(f"qp-mainnet-{p}-{r}-import-keys" for p in ("p1", "p2") for r in ("primary", "backup"))


def test_plan_and_render_output_hold_no_secret(runs, tmp_path: Path):
    from qpool.review import render_files

    run = runs["testnet"]
    text = repr(run.plan_json())
    written = render_files(run, tmp_path / "review")
    blobs = [text] + [p.read_text(errors="replace") for p in written]
    for blob in blobs:
        for canary in ("canary", PASSPHRASE, WEBHOOK):
            assert canary not in blob
    assert "[secret]" in text


FORBIDDEN = [
    re.compile(r"systemctl\s+(?:\S+\s+)*(start|enable|restart|reload-or-restart|unmask)\b[^|;&]*qp-validator\.service"),
    re.compile(r"VALIDATOR_LOCKED"),
    re.compile(r"slashing-protection-history\s+import"),
    re.compile(r"--(force-)?clear-db"),
]


def test_bootstrap_never_starts_unlocks_or_imports_slashing_protection(runs):
    for run in runs.values():
        for cmd in run.of_type(COMMAND):
            inputs = cmd.display_inputs()
            for field in ("create", "update", "delete"):
                script = str(inputs.get(field) or "")
                for pattern in FORBIDDEN:
                    assert not pattern.search(script), (cmd.name, field, pattern.pattern)


def test_bootstrap_order_per_key_host(runs):
    run = runs["testnet"]
    order = [c.name.removeprefix("qp-testnet-p1-primary-") for c in run.of_type(COMMAND)
             if c.name.startswith("qp-testnet-p1-primary-")]
    assert order == ["wait-ready", "bundle-clients", "host-env", "bundle-firewall", "firewall-confirm",
                     "bundle-ssh-access", "bundle-base", "host-tools", "secret-backup-ship-key", "secret-jwt",
                     "import-keys", "start-clients"]
    by_name = {c.name: c for c in run.of_type(COMMAND)}
    start = by_name["qp-testnet-p1-primary-start-clients"]
    assert by_name["qp-testnet-p1-primary-import-keys"].urn in start.dependencies


def test_commands_have_bounded_dials_and_timeouts(runs):
    for cmd in runs["testnet"].of_type(COMMAND):
        conn = cmd.plain_inputs()["connection"]
        assert conn["dialErrorLimit"] > 0 and conn["perDialTimeout"] > 0 and conn["user"] == "qpdeploy"
        assert cmd.options.get("customTimeouts", {}).get("create")
        assert cmd.plain_inputs()["addPreviousOutputInEnv"] is False


def test_receiver_secrets_delivered_only_when_set(runs):
    names = {c.name for c in runs["testnet"].of_type(COMMAND)}
    assert "qp-testnet-monitoring-secret-alertmanager-discord-webhook" in names
    assert "qp-testnet-monitoring-secret-alertmanager-pagerduty-key" not in names


def test_render_writes_every_host(runs, tmp_path: Path):
    files = host_files(runs["testnet"])
    assert sorted(files) == sorted(runs["testnet"].outputs["hosts"])
    for host, entries in files.items():
        assert "user-data" in entries
        assert any(k.startswith("bootstrap/") for k in entries), host


def test_stack_outputs_mark_secrets(runs):
    run = runs["testnet"]
    assert {"grafanaAdminPassword", "deployPrivateKey"} <= run.secret_outputs
    assert "grafanaCaCert" not in run.secret_outputs


def test_each_pair_gets_its_own_keys(runs):
    tars = {}
    for cmd in runs["mainnet"].of_type(COMMAND):
        if cmd.name.endswith("-import-keys"):
            tars[cmd.name] = base64.b64decode(cmd.plain_inputs()["stdin"])
    assert tars["qp-mainnet-p1-primary-import-keys"] == tars["qp-mainnet-p1-backup-import-keys"]
    assert tars["qp-mainnet-p1-primary-import-keys"] != tars["qp-mainnet-p2-primary-import-keys"]


def test_same_key_in_two_pairs_is_refused():
    from qpool.errors import QpoolError
    from qpool.keys.host_bundle import host_key_tars_b64

    same = keystore("cd" * 16)
    bundle = base64.b64encode(seal_files({"p1/keystore-a.json": (0o600, same), "p1/password.txt": (0o600, b"pw"),
                                          "p2/keystore-b.json": (0o600, same), "p2/password.txt": (0o600, b"pw")},
                                         PASSPHRASE, kdf_n=2**17)).decode()
    with pytest.raises(QpoolError, match=r"same key .* pairs p1 and p2"):
        host_key_tars_b64(bundle, PASSPHRASE, ["p1", "p2"])
    flat = base64.b64encode(seal_files({"keystore-a.json": (0o600, same), "password.txt": (0o600, b"pw")},
                                       PASSPHRASE, kdf_n=2**17)).decode()
    with pytest.raises(QpoolError, match=r"in p1/ .one directory per validator pair"):
        host_key_tars_b64(flat, PASSPHRASE, ["p1", "p2"])
