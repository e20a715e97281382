"""No secret the lab uses shows up anywhere an operator, a reviewer or a log collector can read it.

One whole lab run (deploy, `qpool activate`, `qpool failover`) with every secret registered in LeakGuard
(each with the encodings a careless program would produce: raw, hex, base64 ...): the stack secrets and
the sealed key bundle, the keystore password and keystores, the JWT and wallet password read back from the
hosts, the deploy and backup-ship private keys, the fake Hetzner token, and the program's secret outputs.
Then everything reviewable or logged is scanned: each host's rendered user-data (recorded and as seeded
on the host), `qpool plan --json` and `qpool render` of the repo stacks with encrypted secrets present, the
lab's recorded plan and applied run (applied.json), every host's journal and cloud-init logs, qpool's step
journals and inventory, what qpool printed, and the exported stack outputs that are not marked secret. Any hit
fails.

A self-check first proves the scan can fail: every registered secret, injected into a scanned artifact,
is reported.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.config import SECRET_KEYS
from lab.deploy import LabClock, LabDeployment, _user_data_by_host
from lab.session import LabSession
from lab.testing import lab_unavailable_reason, operator_context, running_lab
from qpool import secrets_standin
from qpool.cli import main
from qpool.keys.seal import unseal_bytes
from qpool.operations import activate, failover
from qpool.stacks import stack_file
from tests.support.leakguard import LeakGuard

pytestmark = [pytest.mark.lab, pytest.mark.skipif(lab_unavailable_reason() is not None,
                                                  reason=lab_unavailable_reason() or "")]

STACK = "kbleak"
OCTET = 43
PAIR = "p1"
CLOCK = LabClock(slot_seconds=2, slots_per_epoch=4)


def pem_parts(text: str, name: str) -> list[tuple[str, str | bytes]]:
    """An OpenSSH private key: the whole text, the raw 32-byte private seed, and every line of the base64
    body that differs from another key's (a partial leak is a leak; the format's constant header line and
    padding are not secrets and would match any ed25519 key)."""
    key = serialization.load_ssh_private_key(text.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    reference = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()
    common = set(reference.splitlines())
    parts: list[tuple[str, str | bytes]] = [(name, text.strip()), (f"{name} (raw seed)", seed)]
    for i, line in enumerate(text.splitlines()):
        if len(line) >= 16 and not line.startswith("-----") and line not in common:
            parts.append((f"{name}[line {i}]", line))
    return parts


def host_secret(dep: LabDeployment, host: str, path: str) -> str:
    proc = dep.ssh(host, f"sudo cat {path}")
    assert proc.returncode == 0 and proc.stdout.strip(), f"{host}:{path} unreadable: {proc.stderr!r}"
    return proc.stdout.decode()


def lab_secrets(dep: LabDeployment, session: LabSession) -> list[tuple[str, str | bytes]]:
    """Every secret of this lab run as (name, value), read back from the hosts where they were created."""
    found: list[tuple[str, str | bytes]] = [(f"lab secret {k}", v) for k, v in dep.secrets.items()]
    bundle = base64.b64decode(dep.secrets["validatorKeys"])
    found.append(("sealed key bundle (bytes)", bundle))
    for member, (_mode, content) in unseal_bytes(bundle, dep.secrets["validatorKeysPassphrase"]).items():
        found.append((f"key bundle member {member}", content.decode().strip()))  # password.txt, keystores
    found.append(("fake Hetzner token", session.token))
    found += pem_parts(dep.deploy_key.read_text(), "deploy private key")
    found += pem_parts(dep.operator_key.read_text(), "lab operator private key")
    for name in dep.hosts:
        if dep.spec(name).is_key_host:
            jwt = host_secret(dep, name, "/etc/quantapool/secrets/jwt.hex").strip()
            found.append((f"JWT of {name}", jwt))
            found.append((f"JWT bytes of {name}", bytes.fromhex(jwt.removeprefix("0x"))))
            found.append((f"wallet password of {name}",
                          host_secret(dep, name, "/etc/quantapool/secrets/wallet-password").strip()))
            found += pem_parts(host_secret(dep, name, "/etc/quantapool/secrets/backup-ship-key"),
                               f"backup-ship key on {name}")
    for name in dep.hosts:  # the one secret user-data carries: allowed there only (redacted in lab_artifacts)
        found += pem_parts(host_secret(dep, name, "/etc/ssh/ssh_host_ed25519_key"), f"SSH host key of {name}")
    for key in sorted(dep.run.secret_outputs):
        value = dep.run.outputs[key]
        if isinstance(value, str) and len(value) >= 8:
            found.append((f"secret stack output {key}", value))
    unique: dict[bytes, tuple[str, str | bytes]] = {}
    for name, value in found:  # one name per distinct value (a value may be found in several places)
        unique.setdefault(value.encode() if isinstance(value, str) else value, (name, value))
    return list(unique.values())


def encrypted_variant(dest: Path, stack: str) -> Path:
    """The stack file (as tests see it: tests/conftest.py) with every secret key present, encrypted as Pulumi
    stores it."""
    doc = yaml.safe_load(stack_file(stack).read_text())
    for key in SECRET_KEYS:
        doc["config"][f"quantapool:{key}"] = {"secure": "v1:" + base64.b64encode(os.urandom(48)).decode()}
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def review_artifacts(guard: LeakGuard, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """`qpool plan --json` and `qpool render` of the repo stacks; their offline secret stand-ins are registered."""
    real = secrets_standin.standin_values

    def capturing(present: set[str], *args: object, **kwargs: object) -> dict[str, str]:
        values = real(present, *args, **kwargs)  # type: ignore[arg-type]
        for key, value in values.items():
            guard.add(value, f"offline stand-in for {key}")
            if key == "validatorKeys":
                bundle = base64.b64decode(value)
                guard.add(bundle, "offline stand-in key bundle (bytes)")
                for member, (_m, content) in unseal_bytes(bundle, values["validatorKeysPassphrase"]).items():
                    if len(content) >= 8:
                        guard.add(content, f"offline stand-in member {member}")
        return values

    monkeypatch.setattr(secrets_standin, "standin_values", capturing)
    out: dict[str, bytes] = {}
    runner = CliRunner()
    for stack in ("testnet", "mainnet"):
        config = encrypted_variant(tmp / f"Pulumi.{stack}.yaml", stack)
        res = runner.invoke(main, ["plan", "--stack", stack, "--config-file", str(config), "--json"])
        assert res.exit_code == 0, res.output
        assert '"[secret]"' in res.output, "plan shows no masked secret: the secrets were not present"
        out[f"qpool plan --json --stack {stack}"] = res.output.encode()
        render_dir = tmp / f"render-{stack}"
        res = runner.invoke(main, ["render", "--stack", stack, "--config-file", str(config), "--out", str(render_dir)])
        assert res.exit_code == 0, res.output
        out[f"qpool render --stack {stack} (stdout)"] = res.output.encode()
        for path in sorted(render_dir.rglob("*")):
            if path.is_file():
                out[f"qpool render --stack {stack}: {path.relative_to(render_dir)}"] = path.read_bytes()
    return out


def _without_host_key(user_data: str) -> bytes:
    """User-data minus the host's own private SSH key, the one secret it may carry (DESIGN.md §5): everything
    else in it is scanned."""
    doc = yaml.safe_load(user_data) or {}
    assert set(doc.get("ssh_keys") or {}) == {"ed25519_private", "ed25519_public"}, "user-data without its host key"
    doc["ssh_keys"] = {**doc["ssh_keys"], "ed25519_private": "[secret]"}
    return ("#cloud-config\n" + yaml.safe_dump(doc, sort_keys=True)).encode()


def lab_artifacts(dep: LabDeployment, session: LabSession, printed: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, user_data in _user_data_by_host(dep.run).items():
        out[f"rendered user-data of {name}"] = _without_host_key(user_data)
    out["lab recorded plan (run.plan_json())"] = json.dumps(dep.run.plan_json(), default=str).encode()
    public = {k: v for k, v in dep.run.outputs.items() if k not in dep.run.secret_outputs}
    out["stack outputs (not secret)"] = json.dumps(public, default=str).encode()
    for name, host in dep.hosts.items():
        journal = host.journal().encode()
        assert b"cloud-init" in journal and len(journal) > 10_000, f"{name}: journal unexpectedly empty"
        out[f"journal of {name}"] = journal
        logs = host.exec(["sh", "-c", "cat /var/log/cloud-init*.log"], timeout=60)
        assert logs.returncode == 0 and logs.stdout, f"{name}: no cloud-init logs"
        out[f"cloud-init logs of {name}"] = logs.stdout
        seeded = host.exec(["cat", "/var/lib/cloud/seed/nocloud/user-data"], timeout=30)
        assert seeded.returncode == 0 and seeded.stdout
        out[f"seeded user-data on {name}"] = _without_host_key(seeded.stdout.decode())
    out["qpool inventory"] = session.inventory_path.read_bytes()
    out["lab applied run (what `qpool lab apply` diffs against)"] = (dep.state_dir / "applied.json").read_bytes()
    inv = json.loads(session.inventory_path.read_text())
    journals = sorted(Path(inv["extra"]["journal_dir"]).rglob("*"))
    assert any(p.name.startswith("failover-") and p.suffix == ".json" for p in journals), "no step journal written"
    for path in journals:
        if path.is_file():
            out[f"qpool state: {path.name}"] = path.read_bytes()
    out["qpool activate/failover output"] = "\n".join(printed).encode()
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabDeployment, LabSession]]:
    root = tmp_path_factory.mktemp("kb-leak-lab")
    with running_lab(STACK, OCTET, root / "state", clock=CLOCK, log=lambda _m: None) as (dep, session):
        yield dep, session


def test_no_secret_leaks_across_a_whole_lab_run(lab: tuple[LabDeployment, LabSession], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    dep, session = lab
    printed: list[str] = []
    ctx = operator_context(session, report=printed.append)
    activate(ctx, PAIR, first_start=True)
    result = failover(ctx, PAIR, to_role="backup")
    assert result["changed"] and result["mode"] == "clean", result

    secrets = lab_secrets(dep, session)
    guard = LeakGuard()
    for name, value in secrets:
        guard.add(value, name)
    artifacts = lab_artifacts(dep, session, printed)
    artifacts.update(review_artifacts(guard, tmp_path, monkeypatch))

    # Self-check: the scan fails on a real leak. Each secret, appended raw or base64 to a scanned artifact,
    # is reported under its own name; and one injected into a whole host journal is found there.
    probe = LeakGuard()
    for name, value in secrets:
        probe.add(value, name)
    for name, value in secrets:
        raw = value.encode() if isinstance(value, str) else value
        hits = probe.scan_text(artifacts["qpool inventory"] + b"\n" + raw + b"\n", "inventory")
        assert name in {f.name for f in hits}, f"self-check: a leak of {name!r} would go unnoticed"
        for leaked in (base64.b64encode(raw), raw.hex().encode()):  # may be reported under an alias
            assert probe.scan_text(artifacts["qpool inventory"] + b" " + leaked, "inventory"), name
    journal_key = next(k for k in artifacts if k.startswith("journal of "))
    jwt_name, jwt = next((n, v) for n, v in secrets if n.startswith("JWT bytes of "))
    assert isinstance(jwt, bytes)
    hits = probe.scan_text(artifacts[journal_key] + b"token=" + base64.b64encode(jwt), journal_key)
    assert jwt_name in {f.name for f in hits}

    for where, data in artifacts.items():
        guard.scan_text(data, where)
    guard.assert_clean()
