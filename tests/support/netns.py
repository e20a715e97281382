"""Two network namespaces joined by a veth pair: the host under test and one outside peer.

Why a shared helper: the firewall tests (trusted-address lockout, ICMP flood limit) load the rendered ruleset
with the real nft in a namespace of their own and talk to it from a second one; each test owns its namespaces
(random names) and removes them, so nothing on the machine is touched and parallel workers never collide.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def veth_pair(prefix: str, host_ip: str, peer_ip: str) -> Iterator[tuple[str, str]]:
    """Yield (host namespace, peer namespace), addressed `host_ip`/24 and `peer_ip`/24; both removed on exit."""
    tag = uuid.uuid4().hex[:6]
    host, peer = f"{prefix}-h-{tag}", f"{prefix}-p-{tag}"
    ip("netns", "add", host)
    ip("netns", "add", peer)
    try:
        host_dev, peer_dev = f"qh{tag}", f"qp{tag}"
        ip("link", "add", host_dev, "netns", host, "type", "veth", "peer", "name", peer_dev, "netns", peer)
        for ns, dev, addr in ((host, host_dev, host_ip), (peer, peer_dev, peer_ip)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield host, peer
    finally:
        for ns in (host, peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
