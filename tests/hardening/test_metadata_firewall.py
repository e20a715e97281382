"""The cloud metadata service (which serves user-data, and so the host's SSH host key) is root-only.

Real nft, real kernel, a network namespace of its own: the metadata address is put on the namespace's loopback
with a TCP listener behind it, the rendered ruleset is loaded, and a connection is tried as root and as
`nobody`. Positive control: before the ruleset, `nobody` connects too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from cloud_init.host_keys import METADATA_IPV4
from cloud_init.nftables import host_ruleset

from .support import host_of_role

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("nft", "ip", "setpriv")),
    reason="needs root, nft, ip and setpriv (network namespaces)")

#: Listens on the metadata address, then reports whether a client connects (exit 0) or not (exit 1).
PROBE = f"""
import socket, subprocess, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(({METADATA_IPV4!r}, 80))
srv.listen(4)
client = ["python3", "-c", "import socket; socket.create_connection(({METADATA_IPV4!r}, 80), timeout=3)"]
as_user = sys.argv[1]
argv = client if as_user == "root" else ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *client]
sys.exit(subprocess.run(argv, capture_output=True, timeout=20).returncode)
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"qp-meta-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        for args in (["link", "set", "lo", "up"], ["addr", "add", f"{METADATA_IPV4}/32", "dev", "lo"]):
            subprocess.run(["ip", "-n", name, *args], check=True, capture_output=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _connects(ns: str, user: str) -> bool:
    proc = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", PROBE, user], capture_output=True,
                          timeout=60)
    return proc.returncode == 0


@pytest.mark.parametrize("role", ["primary", "monitoring"])
def test_only_root_reaches_the_metadata_service(netns: str, role: str) -> None:
    assert _connects(netns, "nobody"), "positive control: without the ruleset anyone connects"
    inputs = host_of_role(role)
    rules = host_ruleset(inputs)
    load = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rules.encode(),
                          capture_output=True, timeout=60)
    assert load.returncode == 0, load.stderr.decode()
    assert not _connects(netns, "nobody"), "a non-root process reached the metadata service"
    assert _connects(netns, "root"), "root (cloud-init) must still reach it"
