"""Fixtures for the lab host tests: one base image, one network and two hosts per session.

Booting is the expensive part, so hosts are session-scoped and every test that injects a fault
restores it before returning. Requires root, systemd-nspawn, mmdebstrap, nft and ssh; otherwise the
tests are skipped with a loud reason (CI runs them as root).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.hosts import LabHost
from lab.image import LAB_ROLE_PACKAGES, build_base_image
from lab.net import LabNetwork
from lab.reaper import reap

SSH_USER = "qpadmin"
PREFERRED_SUBNET = "10.42.1.0/24"


def lab_skip_reason() -> str | None:
    """Why lab tests cannot run here, or None."""
    missing = [t for t in ("systemd-nspawn", "mmdebstrap", "nft", "ssh", "ssh-keygen", "nsenter", "ip")
               if shutil.which(t) is None]
    if os.geteuid() != 0:
        return "LAB TESTS SKIPPED: they need root (bridges, netns, overlay mounts, nspawn)"
    if missing:
        return f"LAB TESTS SKIPPED: missing tools {missing}; apt-get install systemd-container mmdebstrap nftables"
    return None


def used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, check=True).stdout
    return [ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for link in json.loads(out or b"[]") for a in link.get("addr_info", [])]


def free_subnet(avoid: tuple[str, ...] = ()) -> ipaddress.IPv4Network:
    """10.42.1.0/24 if nothing uses it, else the first free 10.42.x.0/24."""
    used = used_networks()
    candidates = [PREFERRED_SUBNET] + [f"10.42.{i}.0/24" for i in range(2, 250)]
    for cand in candidates:
        net = ipaddress.IPv4Network(cand)
        if cand not in avoid and not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free 10.42.x.0/24 subnet on this machine")


def host_ip(subnet: ipaddress.IPv4Network | str, n: int) -> str:
    return str(ipaddress.IPv4Network(subnet).network_address + n)


def render_user_data(pubkey: str) -> str:
    """A small cloud-config: an admin user with our key, an offline package install, boot markers."""
    return f"""#cloud-config
ssh_pwauth: false
manage_etc_hosts: true
users:
  - name: {SSH_USER}
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    shell: /bin/bash
    lock_passwd: true
    ssh_authorized_keys: ["{pubkey}"]
packages: [jq]
bootcmd:
  - echo boot >> /var/log/qp-bootcmd.log
runcmd:
  - echo run >> /var/log/qp-runcmd.log
"""


@pytest.fixture(scope="session")
def lab_ready() -> None:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_image(lab_ready: None) -> Path:
    return build_base_image(extra_packages=LAB_ROLE_PACKAGES)


@pytest.fixture(scope="session")
def ssh_key(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qp-lab-test", "-f", str(key)],
                   check=True)
    return key


@pytest.fixture(scope="session")
def lab_net(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabNetwork]:
    reap()
    subnet = free_subnet()
    net = LabNetwork("qptest", str(subnet), host_ip(subnet, 254),
                     state_dir=tmp_path_factory.mktemp("labnet"))
    net.create()
    yield net
    net.destroy()


@pytest.fixture(scope="session")
def lab_hosts(lab_net: LabNetwork, lab_image: Path, ssh_key: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LabHost]]:
    user_data = render_user_data(ssh_key.with_suffix(".pub").read_text().strip())
    hosts = [LabHost(f"qp-h{i}", host_ip(lab_net.subnet, 10 + i), lab_net, lab_image,
                     tmp_path_factory.mktemp(f"h{i}")) for i in (1, 2)]
    try:
        for h in hosts:
            h.boot(user_data, meta_data={"qp-role": "test"},
                   extra_files={"/etc/quantapool/lab-extra.txt": f"for {h.name}\n".encode()})
        for h in hosts:
            h.wait_ready(SSH_USER, ssh_key, timeout=180)
        yield hosts
    finally:
        for h in hosts:
            h.destroy()
