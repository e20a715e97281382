"""Host keys known before first contact, on a running lab (issue 13).

The lab pins every host's key from the program's `hostKeys` output before the host boots; that every lab SSH
connection works at all already proves cloud-init installed exactly the program's key. These tests make it
explicit, and show `qpool` stopping with a clear message when a host presents another key (the key is
restored afterwards: the shared lab is left as found).
"""

from __future__ import annotations

import pytest

from cloud_init.host_keys import METADATA_IPV4, PUBLIC_KEY_PATH
from qpool.inventory import HostRecord, load_inventory_file
from qpool.remote import HostKeyMismatch, Ssh, ctl_command

from .conftest import LAB_MARKS, Lab, one_host, out

pytestmark = LAB_MARKS


@pytest.fixture(scope="module")
def lab(shared_lab: Lab) -> Lab:
    return shared_lab


def _answers(ssh: Ssh, host: HostRecord) -> bool:
    """One qp-* call as the deploy identity (the only kind it may make): `status` on a key host, a replica
    listing on the monitoring server (it has no validator). Ssh.run raises on a key mismatch or no answer."""
    args = ("status",) if host.role in ("primary", "backup") else ("list-replicas", "--owner", host.name)
    return ssh.run(host, ctl_command(*args), timeout=60).rc == 0


def test_every_host_presents_exactly_the_program_key(lab: Lab) -> None:
    dep, session = lab
    pinned = dep.run.outputs["hostKeys"]
    inv = load_inventory_file(session.inventory_path)
    ssh = Ssh(inv)
    for name, host in dep.hosts.items():
        on_disk = host.exec(["cat", PUBLIC_KEY_PATH], check=True).stdout.decode().split()[:2]
        assert " ".join(on_disk) == pinned[name], name
        keys = host.exec(["sh", "-c", "ls /etc/ssh/ssh_host_*_key"], check=True).stdout.decode().split()
        assert keys == ["/etc/ssh/ssh_host_ed25519_key"], f"{name}: other host keys on disk: {keys}"
        # qpool's own client (the deploy identity), StrictHostKeyChecking=yes against the pinned key
        assert _answers(ssh, inv.hosts[name]), name
        # the metadata service rule is live in the host's firewall
        output_chain = out(dep, name, "sudo nft list chain inet quantapool output")
        assert f"ip daddr {METADATA_IPV4} meta skuid != 0" in output_chain, f"{name}: {output_chain}"


def test_a_host_with_another_key_stops_qpool(lab: Lab) -> None:
    dep, session = lab
    name = one_host(dep, "monitoring")  # never a key host: nothing signs there
    host = dep.hosts[name]
    inv = load_inventory_file(session.inventory_path)
    swap = ("set -e; cp -a /etc/ssh/ssh_host_ed25519_key /root/qp-saved-key; "
            "cp -a /etc/ssh/ssh_host_ed25519_key.pub /root/qp-saved-key.pub; "
            "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub; "
            "ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key; systemctl restart ssh.service")
    restore = ("set -e; mv -f /root/qp-saved-key /etc/ssh/ssh_host_ed25519_key; "
               "mv -f /root/qp-saved-key.pub /etc/ssh/ssh_host_ed25519_key.pub; systemctl restart ssh.service")
    host.exec(["sh", "-c", swap], check=True, timeout=60)
    try:
        with pytest.raises(HostKeyMismatch) as raised:
            Ssh(inv).status(inv.hosts[name])
        message = str(raised.value)
        assert name in message and "does not match the pinned key" in message
    finally:
        host.exec(["sh", "-c", restore], check=True, timeout=60)
    assert _answers(Ssh(inv), inv.hosts[name])  # the original key is back and accepted
