"""Host keys known before first contact (issue 13), checked on the whole program under mocks.

The mocks hand out REAL ED25519 keys for every pulumi-tls key (as the provider would), so the tests can check
the chain end to end: the private key in a server's user-data, the public key cloud-init is told, the
`host_key` every bootstrap step's connection expects and the `hostKeys` output `qpool` pins are one key pair
per host, different between hosts; user-data is a secret input, and review output never shows the private key.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_init import host_keys
from cloud_init.base import to_user_data
from qpool.program import SECRET_MARK, ProgramRun, run_program
from qpool.review import host_files, render_files
from tests.conftest import stack_raw
from tests.support.leakguard import LeakGuard

SERVER = "hcloud:index/server:Server"
COMMAND = "command:remote:Command"
TLS_KEY = "tls:index/privateKey:PrivateKey"


def _real_ed25519(args: Any, _n: int) -> dict:
    if args.inputs.get("algorithm") != "ED25519":
        return {}
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return {"privateKeyOpenssh": private, "privateKeyPem": private, "publicKeyOpenssh": public.decode() + "\n"}


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program("testnet", stack_raw("testnet"), {}, state_overrides={TLS_KEY: _real_ed25519})


def _servers(run: ProgramRun) -> dict[str, Any]:
    return {s.plain_inputs()["name"]: s for s in run.of_type(SERVER)}


def _host_keys_of(run: ProgramRun) -> dict[str, Any]:
    """host name -> its `<host>-ssh-host-key` resource state (the real key pair the mock handed out)."""
    return {r.name.removesuffix("-ssh-host-key"): r.state for r in run.of_type(TLS_KEY)
            if r.name.endswith("-ssh-host-key")}


def _public_of_private(private_openssh: str) -> str:
    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def test_every_host_has_its_own_generated_key_pinned_everywhere(run: ProgramRun) -> None:
    servers, keys, outputs = _servers(run), _host_keys_of(run), run.outputs["hostKeys"]
    assert sorted(keys) == sorted(servers) == sorted(outputs)
    assert len(set(outputs.values())) == len(outputs), "two hosts share a host key"
    for name, server in servers.items():
        doc = yaml.safe_load(server.plain_inputs()["userData"])
        ssh_keys = doc["ssh_keys"]
        assert set(ssh_keys) == {"ed25519_private", "ed25519_public"}, name  # no other type on the host
        assert doc["ssh_deletekeys"] is True
        # the private key cloud-init installs is the one whose public half is pinned
        assert _public_of_private(ssh_keys["ed25519_private"]) == ssh_keys["ed25519_public"] == outputs[name]
        assert ssh_keys["ed25519_private"] == keys[name]["privateKeyOpenssh"]


def test_every_bootstrap_step_verifies_the_pinned_key(run: ProgramRun) -> None:
    from qpool.review import host_of

    outputs = run.outputs["hostKeys"]
    steps = run.of_type(COMMAND)
    assert steps
    for cmd in steps:
        conn = cmd.plain_inputs()["connection"]
        assert conn.get("hostKey") == outputs[host_of(run, cmd)], cmd.name
    # the host key is never read from the host any more (that was trust on first use)
    assert not [c.name for c in steps if c.name.endswith("-host-key")]


def test_user_data_and_private_keys_are_secret(run: ProgramRun) -> None:
    for name, server in _servers(run).items():
        assert server.input_is_secret("userData"), name
    for key in run.of_type(TLS_KEY):
        if key.name.endswith("-ssh-host-key"):
            assert {"privateKeyOpenssh", "privateKeyPem"} <= set(key.options["additionalSecretOutputs"])
    assert "hostKeys" not in run.secret_outputs  # public keys: qpool and operators read them


def test_review_shows_user_data_with_only_the_private_key_redacted(run: ProgramRun, tmp_path: Path) -> None:
    guard = LeakGuard()
    for state in _host_keys_of(run).values():
        guard.add(state["privateKeyOpenssh"], "host private key")
        # the key's base64 body lines, the part a partial leak would show
        for line in state["privateKeyOpenssh"].splitlines()[1:-1]:
            if len(line) >= 8:
                guard.add(line, "host private key line")
    for name, server in _servers(run).items():
        shown = server.display_inputs()["userData"]  # what plan, plan --diff and render show
        assert shown != SECRET_MARK, name
        doc = yaml.safe_load(shown)
        assert doc["ssh_keys"]["ed25519_private"] == SECRET_MARK
        plain = yaml.safe_load(server.plain_inputs()["userData"])
        # byte-identical apart from the key: the dumper round-trips what it wrote
        assert to_user_data(plain) == server.plain_inputs()["userData"]
        assert shown == to_user_data({**plain, "ssh_keys": {**plain["ssh_keys"], "ed25519_private": SECRET_MARK}})
    files = host_files(run)
    assert all("user-data" in per_host for per_host in files.values())
    written = render_files(run, tmp_path / "review")
    for path in written:
        guard.scan_file(path)
    guard.scan_text(json.dumps(run.plan_json()), "plan.json")
    guard.assert_clean()


def test_render_refuses_to_show_a_secret_user_data_it_cannot_redact(run: ProgramRun) -> None:
    server = next(iter(_servers(run).values()))
    plain = yaml.safe_load(server.plain_inputs()["userData"])
    del plain["ssh_keys"]
    assert host_keys.redacted(plain, SECRET_MARK) is plain  # nothing known to redact: not shown at all


# -- sizing and the real cloud-init schema ---------------------------------------------------------------

def _keys_from_ssh_keygen(tmp_path: Path) -> host_keys.HostKey:
    path = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return host_keys.HostKey(path.read_text(), (tmp_path / "k.pub").read_text())


def _go_wrapped(key: host_keys.HostKey) -> host_keys.HostKey:
    """The same key as Go's PEM encoder writes it (64 columns: the most lines, so the most YAML indentation)."""
    lines = key.private_openssh.strip().splitlines()
    body = "".join(lines[1:-1])
    wrapped = [body[i:i + 64] for i in range(0, len(body), 64)]
    return host_keys.HostKey("\n".join([lines[0], *wrapped, lines[-1]]) + "\n", key.public_openssh)


def test_placeholder_host_key_is_never_shorter_than_a_real_one(tmp_path: Path) -> None:
    from cloud_init import HostRenderInputs
    from cloud_init.key_host import render_key_host_user_data
    from cloud_init.monitoring import render_monitoring_user_data
    from qpool.stacks import load_stack

    real = _keys_from_ssh_keygen(tmp_path)
    cfg = load_stack("testnet").config
    for host in cfg.hosts():
        render = render_monitoring_user_data if host.role == "monitoring" else render_key_host_user_data

        def size(key: host_keys.HostKey, host=host, render=render) -> int:
            return len(render(HostRenderInputs(cfg, host, "ssh-ed25519 AAAA x", None, host_key=key)).encode())

        placeholder = size(host_keys.PLACEHOLDER_HOST_KEY)
        for key in (real, _go_wrapped(real)):
            assert size(key) <= placeholder, host.name


def test_cloud_init_schema_accepts_user_data_with_a_real_host_key(run: ProgramRun, tmp_path: Path) -> None:
    import shutil

    tool = shutil.which("cloud-init")
    if tool is None:
        pytest.skip("cloud-init not installed (make system-deps)")
    for name, server in _servers(run).items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(server.plain_inputs()["userData"])
        res = subprocess.run([tool, "schema", "--config-file", str(path)], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0 and "Valid cloud-config" in res.stdout, name + res.stdout + res.stderr


def test_host_key_repr_hides_the_private_half() -> None:
    key = host_keys.HostKey("-----BEGIN OPENSSH PRIVATE KEY-----\nsecretbody\n", "ssh-ed25519 AAAA c")
    assert "secretbody" not in repr(key) and key.public_line() == "ssh-ed25519 AAAA"


def test_backup_shipping_pins_its_targets_keys(run: ProgramRun) -> None:
    """Each key host's tools carry the known_hosts of its backup targets (its peer and the monitoring host):
    private address + the target's pinned key, nothing else; qp-validator-ctl ships with StrictHostKeyChecking=yes."""
    import base64
    import io
    import tarfile

    from cloud_init.host_tools import _CTL_SOURCE, SHIP_KNOWN_HOSTS
    from core.config import load_stack_config

    cfg = load_stack_config(stack_raw("testnet"))
    outputs = run.outputs["hostKeys"]
    for host in cfg.key_hosts():
        step = run.by_name(f"{host.name}-host-tools")
        raw = base64.b64decode(step.plain_inputs()["stdin"])
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            known = tar.extractfile(SHIP_KNOWN_HOSTS.lstrip("/")).read().decode()  # type: ignore[union-attr]
        targets = [h for h in cfg.key_hosts(host.pair) if h.name != host.name] + [cfg.monitoring_host()]
        assert known.splitlines() == [f"{t.private_ip} {outputs[t.name]}" for t in targets], host.name
    source = _CTL_SOURCE.read_text()
    assert "StrictHostKeyChecking=yes" in source and "accept-new" not in source
