"""Day-2 access edits on a running lab (issue 11): the trusted SSH address replaced, an operator key added
then removed, and a firewall edit that drops the applying connection reverting by itself.

Outside clients are network namespaces on the lab bridge with addresses outside the stack subnet (as in
test_ports.py). The lab's own SSH (the machine's bridge address) is inside the subnet, which the
private-subnet SSH rule always accepts, so no stack-config edit can lock the lab applier out. The self-revert
test therefore pushes, through the real bundle step command, a firewall bundle whose ruleset also drops the
private subnet: exactly the situation of a production edit that drops `pulumi up`'s address. The applying
connection survives (conntrack: established), new connections are dropped, nobody confirms, and the host's
transient timer (systemd-run, FIREWALL_REVERT_SECONDS) restores the previous ruleset.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_init import HostFile, HostRenderInputs
from cloud_init.base import ADMIN_USER, DEPLOY_USER
from cloud_init.bundles import (
    FIREWALL_REVERT_SECONDS,
    INSTALL_COMMAND,
    Bundle,
    bundle_digest,
    bundle_tar_b64,
    confirm_command,
)
from cloud_init.nftables import NFTABLES_CONF, firewall_bundle
from core import ports
from lab.apply import apply
from lab.deploy import LabDeployment
from lab.hosts import LabError
from lab.net import OutsideClient, run
from lab.testing import config_variant

from .conftest import LAB_MARKS, Lab, module_lab, out, sh

pytestmark = LAB_MARKS

STACK = "e2eaccess"
OCTET = 24
OLD_IP = "203.0.113.7"  # the testnet stack's trusted address
NEW_IP = "198.51.100.23"
PENDING = "/var/lib/quantapool/bundles/firewall.pending"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from module_lab(STACK, OCTET, tmp_path_factory.mktemp(STACK))


def _outside_client(dep: LabDeployment, name: str, ip: str) -> OutsideClient:
    """A client outside the subnet with on-link routes both ways (see test_ports.py)."""
    net = dep.network
    assert ipaddress.IPv4Address(ip) not in net.ipv4_subnet
    client = OutsideClient(net, name, ip)
    net.clients[name] = client
    client.create()
    run(["ip", "-n", client.netns, "route", "replace", net.subnet, "dev", "eth0"])
    for host in dep.hosts.values():
        run(["ip", "-n", host.netns, "route", "replace", f"{ip}/32", "dev", "eth0"])
    return client


@pytest.fixture(scope="module")
def clients(lab: Lab) -> Iterator[dict[str, OutsideClient]]:
    dep, _ = lab
    made = {"old": _outside_client(dep, "old", OLD_IP), "new": _outside_client(dep, "new", NEW_IP)}
    try:
        yield made
    finally:
        for c in made.values():
            for host in dep.hosts.values():
                run(["ip", "-n", host.netns, "route", "del", f"{c.ip}/32", "dev", "eth0"], check=False)
            dep.network.remove_outside_client(c.name)


def _ssh_open(client: OutsideClient, dep: LabDeployment) -> dict[str, bool]:
    return {name: client.can_connect(dep.spec(name).private_ip, ports.SSH, "tcp") for name in dep.hosts}


def _steps(result: Any, host: str) -> set[str]:
    return {line.split(": ", 1)[1].rsplit(" ", 1)[0] for line in result.ran if line.startswith(f"{host}: ")}


def test_trusted_address_replaced_reaches_every_host(lab: Lab, clients: dict[str, OutsideClient],
                                                     tmp_path: Path) -> None:
    dep, session = lab
    original = dep.config_source
    assert all(_ssh_open(clients["old"], dep).values()), "positive control: the configured address has SSH"
    assert not any(_ssh_open(clients["new"], dep).values())

    def replace(config: dict[str, Any]) -> None:
        config["quantapool:network"]["sshAllowedCidrs"] = [f"{NEW_IP}/32"]

    log: list[str] = []
    result = apply(dep, config_variant(tmp_path / f"Pulumi.{STACK}.yaml", OCTET, mutate=replace),
                   log=log.append, session=session)
    try:
        for host in dep.hosts:
            steps = _steps(result, host)
            assert {s for s in steps if not s.startswith(("bundle-firewall", "firewall-confirm"))} == set(), \
                (host, steps)
            assert any("bundle-firewall" in s for s in steps) and any("firewall-confirm" in s for s in steps), \
                (host, steps, log)
            assert sh(dep, host, f"sudo test ! -e {PENDING}").returncode == 0, f"{host}: still pending"
        assert all(_ssh_open(clients["new"], dep).values()), "the new address gets SSH on every host"
        assert not any(_ssh_open(clients["old"], dep).values()), "the old address is refused on every host"
    finally:
        back = apply(dep, original, log=log.append, session=session)
    assert all(_ssh_open(clients["old"], dep).values()), back.ran
    again = apply(dep, original, log=log.append, session=session)
    assert again.plan.empty and again.ran == [], "a no-op apply re-ran steps"


def _lockout_bundle(dep: LabDeployment, host: str) -> Bundle:
    """The host's own firewall bundle minus every SSH accept: drops the lab applier's (bridge) address."""
    good = firewall_bundle(HostRenderInputs(config=dep.config, host=dep.spec(host), deploy_public_key="",
                                            volume_device=None))
    text = good.files[0].content
    kept = [ln for ln in text.splitlines() if f"tcp dport {ports.SSH} accept" not in ln]
    assert len(kept) < len(text.splitlines())
    return Bundle(good.name, (HostFile(NFTABLES_CONF, "\n".join(kept) + "\n", "0755"),), checks=good.checks,
                  firewall=NFTABLES_CONF)


def _can_log_in(dep: LabDeployment, host: str) -> bool:
    try:
        return dep.hosts[host].ssh("true", user=DEPLOY_USER, key_path=dep.deploy_key, timeout=15,
                                   connect_timeout=5).returncode == 0
    except LabError:
        return False


def test_firewall_edit_that_drops_the_applier_reverts_by_itself(lab: Lab) -> None:
    dep, _ = lab
    host = next(iter(dep.hosts))
    before = out(dep, host, "sudo nft list ruleset")
    bad = _lockout_bundle(dep, host)
    proc = dep.deploy_ssh(host, INSTALL_COMMAND, input=bundle_tar_b64(bad).encode(), timeout=120)
    # the applying connection was established before the load, so it reports back
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    armed = time.monotonic()
    assert not _can_log_in(dep, host), "the bad ruleset must drop new SSH connections from the applier"
    deadline = armed + FIREWALL_REVERT_SECONDS + 60
    while time.monotonic() < deadline and not _can_log_in(dep, host):
        time.sleep(3)
    assert _can_log_in(dep, host), f"{host} did not revert within {FIREWALL_REVERT_SECONDS + 60}s"
    assert time.monotonic() - armed >= FIREWALL_REVERT_SECONDS - 5, "reverted before the window ended?"
    subnet = dep.config.network.subnet
    assert f"ip saddr {subnet} tcp dport {ports.SSH} accept" in out(dep, host, "sudo nft list ruleset")
    assert sh(dep, host, f"sudo test ! -e {PENDING}").returncode == 0
    late = dep.deploy_ssh(host, confirm_command("firewall", bundle_digest(bad)))
    assert late.returncode == 1 and b"is not pending" in late.stderr
    after = out(dep, host, "sudo nft list ruleset")
    assert _rules(after) == _rules(before), "the restored ruleset is the one that ran before"


def _rules(listing: str) -> list[str]:
    """`nft list ruleset` without counter values (they move while the test runs)."""
    import re

    return [re.sub(r"counter packets \d+ bytes \d+", "counter", ln) for ln in listing.splitlines()]


def test_operator_key_added_then_removed(lab: Lab, tmp_path: Path) -> None:
    dep, session = lab
    original = dep.config_source
    key = tmp_path / "op_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-operator", "-f", str(key)],
                   check=True, capture_output=True, timeout=30)
    public = (tmp_path / "op_ed25519.pub").read_text().strip()

    def add(config: dict[str, Any]) -> None:
        config["quantapool:operatorSshKeys"] = [*config["quantapool:operatorSshKeys"], public]

    def login(host: str) -> int:
        return dep.hosts[host].ssh("whoami", user=ADMIN_USER, key_path=key, timeout=30).returncode

    log: list[str] = []
    assert all(login(h) != 0 for h in dep.hosts), "positive control: the new key is not yet authorized"
    added = apply(dep, config_variant(tmp_path / f"Pulumi.{STACK}.yaml", OCTET, mutate=add),
                  log=log.append, session=session)
    try:
        for host in dep.hosts:
            assert {s for s in _steps(added, host) if "bundle-ssh-access" not in s} == set(), (host, added.ran)
            assert login(host) == 0, f"{host}: the added operator key cannot log in"
    finally:
        removed = apply(dep, original, log=log.append, session=session)
    for host in dep.hosts:
        assert login(host) != 0, f"{host}: the removed operator key still logs in"
        assert _can_log_in(dep, host), f"{host}: the deploy key lost access"
    assert removed.ran
