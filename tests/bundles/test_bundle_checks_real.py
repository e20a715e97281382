"""The ssh-access and base bundles' own checks, run unmodified with the real sshd, ssh-keygen and apt-config.

The sshd check reads /etc/ssh/sshd_config and needs /run/sshd: it runs in a private mount namespace with
tmpfs over /etc/ssh (a Debian 12 main config, a throwaway host key) and /run, so the machine's own SSH
configuration is neither read nor changed. Negative controls: a drop-in sshd rejects, a malformed key line
(either user) and a sudoers syntax error (`visudo -c`) make the bundle's checks fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_init import HostRenderInputs
from cloud_init.base import (
    AUTHORIZED_KEYS,
    DEPLOY_AUTHORIZED_KEYS,
    DEPLOY_SUDOERS,
    SSHD_DROPIN,
    base_bundle,
    ssh_access_bundle,
)
from cloud_init.bundles import Bundle
from qpool.stacks import load_stack

from .support import fake_host

#: A real Ed25519 public key (ssh-keygen parses the deploy user's authorized_keys: the deploy key is its only line).
DEPLOY_KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " pulumi-deploy"
#: Debian 12's /etc/ssh/sshd_config without comments.
DEBIAN_MAIN = """Include /etc/ssh/sshd_config.d/*.conf
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem\tsftp\t/usr/lib/openssh/sftp-server
"""


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"REAL TOOL MISSING: {tool}; this check did not run")
    if os.geteuid() != 0:
        pytest.skip("needs root (private mount namespace)")


def _inputs() -> list[HostRenderInputs]:
    cfg = load_stack("testnet").config
    return [HostRenderInputs(config=cfg, host=h, deploy_public_key=DEPLOY_KEY, volume_device=None)
            for h in cfg.hosts()]


def _run_checks_isolated(bundle: Bundle, staged: Path, tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    etc = tmp_path / "etc-ssh"
    etc.mkdir(exist_ok=True)
    (etc / "sshd_config").write_text(DEBIAN_MAIN)
    (etc / "sshd_config.d").mkdir(exist_ok=True)
    if not (etc / "ssh_host_ed25519_key").exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(etc / "ssh_host_ed25519_key")],
                       check=True, capture_output=True, timeout=30)
    out = []
    for check in bundle.checks:
        script = (f"mount --make-rprivate / && mount --bind {etc} /etc/ssh && mount -t tmpfs none /run && "
                  f"{check.command}")
        out.append(subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True,
                                  env={**os.environ, "STAGED": str(staged)}, timeout=60))
    return out


def test_ssh_access_checks_pass_for_every_host(tmp_path: Path) -> None:
    _need("sshd", "ssh-keygen", "unshare")
    stager = fake_host(tmp_path)
    for inputs in _inputs():
        b = ssh_access_bundle(inputs)
        staged = stager.stage(b, tmp_path / inputs.host.name)
        for check, res in zip(b.checks, _run_checks_isolated(b, staged, tmp_path), strict=True):
            assert res.returncode == 0, (inputs.host.name, check.name, res.stderr)


def test_ssh_access_checks_refuse_a_bad_dropin_and_a_bad_key(tmp_path: Path) -> None:
    _need("sshd", "ssh-keygen", "unshare", "visudo")
    b = ssh_access_bundle(_inputs()[0])
    staged = fake_host(tmp_path).stage(b, tmp_path / "s")
    dropin = staged / SSHD_DROPIN.lstrip("/")
    dropin.write_text(dropin.read_text() + "Ciphers no-such-cipher\n")
    for path in (AUTHORIZED_KEYS, DEPLOY_AUTHORIZED_KEYS):
        keys = staged / path.lstrip("/")
        keys.write_text("# only a comment and a broken line\nssh-ed25519 not-base64\n")
    sudoers = staged / DEPLOY_SUDOERS.lstrip("/")
    sudoers.write_text(sudoers.read_text().replace("NOPASSWD:", "NOPASSWD"))
    results = dict(zip([c.name for c in b.checks], _run_checks_isolated(b, staged, tmp_path), strict=True))
    assert set(results) == {"sshd -t", "authorized_keys parse", "deploy authorized_keys parse", "visudo -c"}
    assert results["sshd -t"].returncode != 0 and "no-such-cipher" in results["sshd -t"].stderr
    assert all(res.returncode != 0 for res in results.values()), {k: r.returncode for k, r in results.items()}


def test_base_check_passes_and_refuses_a_syntax_error(tmp_path: Path) -> None:
    _need("apt-config")
    b = base_bundle(_inputs()[0])
    staged = fake_host(tmp_path).stage(b, tmp_path / "s")
    env = {**os.environ, "STAGED": str(staged)}
    res = subprocess.run(["sh", "-c", b.checks[0].command], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    conf = next(staged.glob("etc/apt/apt.conf.d/52*"))
    conf.write_text(conf.read_text() + "Unattended-Upgrade::Broken \"x\"\nUnattended-Upgrade::Next \"y\";\n")
    res = subprocess.run(["sh", "-c", b.checks[0].command], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
