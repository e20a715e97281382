"""The firewall bundle with the real nft in a network namespace: a ruleset that drops the client reverts.

The "host" namespace runs the real applier (the bundle's own apply.py) with the real nft; systemd-run and
systemctl are stand-ins (PID 1 here is not systemd), so the test fires the revert itself, exactly as the
transient timer would: `apply.py revert firewall DIGEST`. The "client" namespace sits at an address that
only the trusted-SSH set lets in (not the private subnet), like an operator or `pulumi up` outside.
Proves: the rendered ruleset loads, `nft list ruleset` round-trips for the revert, a lockout heals.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_init import HostRenderInputs
from cloud_init.bundles import META_DIR, bundle_digest
from cloud_init.nftables import firewall_bundle
from core.config import load_stack_config
from qpool.stacks import load_stack
from tests.support.netns import veth_pair

from .support import FakeHost, fake_host

HOST_IP, CLIENT_IP = "198.51.100.1", "198.51.100.2"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
                                reason="needs root, nft and ip (network namespaces)")

LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 22)); s.listen(16); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"SSH-2.0-standin\\r\\n"); c.close()
"""
PROBE = f"""
import socket, sys
s = socket.socket(); s.settimeout(1.5)
try:
    s.connect(({HOST_IP!r}, 22)); print(s.recv(64).decode().strip())
except OSError as e:
    print("refused:", type(e).__name__)
"""


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    with veth_pair("qp-fw", HOST_IP, CLIENT_IP) as (host, client):
        listener = subprocess.Popen(["ip", "netns", "exec", host, "python3", "-c", LISTENER],
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
            yield host, client
        finally:
            listener.kill()
            listener.wait(timeout=10)


def _reaches(client: str) -> bool:
    out = subprocess.run(["ip", "netns", "exec", client, "python3", "-c", PROBE], capture_output=True, text=True,
                         timeout=30).stdout.strip()
    return out.startswith("SSH-2.0")


def _firewall(ssh_cidrs: list[str]):  # type: ignore[no-untyped-def]
    raw = copy.deepcopy(load_stack("testnet").raw)
    raw["network"]["sshAllowedCidrs"] = ssh_cidrs
    cfg = load_stack_config(raw)
    host = next(h for h in cfg.key_hosts() if h.role == "primary")
    return firewall_bundle(HostRenderInputs(config=cfg, host=host, deploy_public_key="", volume_device=None))


def _in_ns(h: FakeHost, ns: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=60,
                          env=h.env())


def _apply(h: FakeHost, ns: str, bundle, where: Path) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    staged = h.stage(bundle, where)
    return _in_ns(h, ns, ["python3", str(staged / META_DIR / "apply.py"), "apply", str(staged)])


def _kept(h: FakeHost, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _in_ns(h, ns, ["python3", str(h.root / "var/lib/quantapool/bundles/qp-bundle-apply.py"), *args])


def test_lockout_reverts_with_the_real_nft(tmp_path: Path, namespaces: tuple[str, str]) -> None:
    host_ns, client_ns = namespaces
    h = fake_host(tmp_path)
    (h.bin / "nft").unlink()  # the real nft, the real kernel (inside the host namespace)
    assert _reaches(client_ns), "positive control: no ruleset, the stand-in SSH port answers"

    good, lockout = _firewall([f"{CLIENT_IP}/32"]), _firewall(["203.0.113.9/32"])
    res = _apply(h, host_ns, good, tmp_path / "s1")
    assert res.returncode == 0, res.stderr
    assert _reaches(client_ns)
    assert _kept(h, host_ns, "confirm", "firewall", bundle_digest(good)).returncode == 0

    res = _apply(h, host_ns, lockout, tmp_path / "s2")
    assert res.returncode == 0, res.stderr
    assert not _reaches(client_ns), "the edit drops the client: the confirm step could not connect"
    # the transient timer fires (no confirm came): the host restores the last confirmed ruleset by itself
    rev = _kept(h, host_ns, "revert", "firewall", bundle_digest(lockout))
    assert rev.returncode == 0 and "not confirmed in time" in rev.stderr
    assert _reaches(client_ns)
    assert h.file("/etc/nftables.conf").read_text() == good.files[0].content
    listed = _in_ns(h, host_ns, ["nft", "list", "set", "inet", "quantapool", "ssh_allowed_v4"]).stdout
    assert CLIENT_IP in listed and "203.0.113.9" not in listed
    # and the late confirm of the reverted ruleset fails loudly
    late = _kept(h, host_ns, "confirm", "firewall", bundle_digest(lockout))
    assert late.returncode == 1 and "is not pending" in late.stderr


def test_every_rendered_ruleset_passes_the_bundle_check(tmp_path: Path) -> None:
    """The firewall bundle's own check (`nft -c` on the staged file) for every host of both stacks."""
    from tests.conftest import stack_raw

    stager = fake_host(tmp_path)
    for stack in ("testnet", "mainnet"):
        cfg = load_stack_config(stack_raw(stack), stack=stack)
        for host in cfg.hosts():
            b = firewall_bundle(HostRenderInputs(config=cfg, host=host, deploy_public_key="", volume_device=None))
            staged = stager.stage(b, tmp_path / f"{stack}-{host.name}")
            env = {**os.environ, "STAGED": str(staged)}
            for check in b.checks:
                res = subprocess.run(["sh", "-c", check.command], env=env, capture_output=True, text=True,
                                     timeout=60)
                assert res.returncode == 0, (host.name, check.name, res.stderr)
            # negative control: the same check refuses a broken copy
            conf = staged / "etc/nftables.conf"
            conf.write_text(conf.read_text().replace("policy drop;", "policy dorp;", 1))
            res = subprocess.run(["sh", "-c", b.checks[0].command], env=env, capture_output=True, text=True,
                                 timeout=60)
            assert res.returncode != 0
