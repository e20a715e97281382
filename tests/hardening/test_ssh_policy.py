"""The sshd policy every host gets: modern algorithms only, and no forwarding past what operators need.

The full algorithm audit runs against a live lab host (tests/lab_e2e/test_ports.py, ssh-audit); here the
rendered policy is checked per role, and with `sshd -T` semantics in mind: Debian reads the drop-in first
and keeps the first value, so each directive must appear exactly once.
"""

from __future__ import annotations

import re

import pytest

from core import ports

from .support import host_of_role, sshd_dropin, stack_inputs

WEAK = re.compile(r"nistp|sha1|umac-64|hmac-md5|-cbc|ssh-rsa\b|ecdsa|ssh-dss|diffie-hellman-group1-|group14-sha1")


def _directives(text: str) -> dict[str, str]:
    seen: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        assert key not in seen, f"{key} set twice in the sshd drop-in (sshd keeps the first)"
        seen[key] = value
    return seen


@pytest.mark.parametrize("inputs", stack_inputs(), ids=lambda i: i.host.name)
def test_every_host_offers_only_modern_algorithms(inputs) -> None:  # type: ignore[no-untyped-def]
    d = _directives(sshd_dropin(inputs))
    assert d["HostKey"] == "/etc/ssh/ssh_host_ed25519_key"  # the key qpool pins
    assert d["HostKeyAlgorithms"] == "ssh-ed25519"
    kex = d["KexAlgorithms"].split(",")
    assert kex[0] == "sntrup761x25519-sha512@openssh.com", "post-quantum hybrid first"
    assert "curve25519-sha256" in kex, "pulumi-command's Go client needs curve25519-sha256"
    for key in ("KexAlgorithms", "Ciphers", "MACs", "HostKeyAlgorithms"):
        assert not WEAK.search(d[key]), f"{key} offers a weak algorithm: {d[key]}"
    assert all(m.endswith("-etm@openssh.com") for m in d["MACs"].split(","))


def test_key_hosts_forward_nothing() -> None:
    d = _directives(sshd_dropin(host_of_role("primary")))
    assert d["DisableForwarding"] == "yes"
    assert d["AllowTcpForwarding"] == "no"
    assert d["AllowAgentForwarding"] == "no" and d["AllowStreamLocalForwarding"] == "no"
    assert "PermitOpen" not in d


def test_monitoring_host_forwards_only_to_its_own_uis() -> None:
    d = _directives(sshd_dropin(host_of_role("monitoring")))
    assert d["AllowTcpForwarding"] == "local"  # -L only: no remote (-R) listeners on the host
    assert "DisableForwarding" not in d
    assert d["PermitOpen"].split() == [f"127.0.0.1:{p}" for p in (ports.PROMETHEUS, ports.ALERTMANAGER,
                                                                  ports.GRAFANA)]
    assert d["GatewayPorts"] == "no" and d["PermitTunnel"] == "no"
