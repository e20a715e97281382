"""One ping flood is rate-limited by the rendered host firewall (real nft, real kernel, own namespaces).

The key host's ruleset is loaded into a fresh network namespace (the "host"); a second namespace (the
"flooder") sends echo requests of ONE flow (same identifier) as fast as it can. Conntrack marks that flow
established after the first reply, so a limit placed after the `established` accept would never apply: the
test counts replies and requires the limit (10/s plus a burst) to hold, with a positive control that echo
is answered at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from cloud_init.nftables import key_host_ruleset
from tests.support.netns import veth_pair

from .support import host_of_role

HOST_IP, FLOODER_IP = "10.250.7.1", "10.250.7.2"
FLOOD = 400
FLOOD_SECONDS = 2.0

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
                                reason="needs root, nft and ip (network namespaces)")

#: Sends FLOOD echo requests of one flow within FLOOD_SECONDS, counting replies as they come (a raw socket's
#: buffer would drop a burst read only at the end) and for one second more.
FLOODER = f"""
import os, socket, struct, time
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.setblocking(False)
ident = os.getpid() & 0xffff
got = 0
def drain():
    global got
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return
        ihl = (data[0] & 0x0f) * 4
        typ, _, _, rid, _ = struct.unpack('!BBHHH', data[ihl:ihl + 8])
        if typ == 0 and rid == ident:
            got += 1
end = time.monotonic() + {FLOOD_SECONDS}
for seq in range({FLOOD}):
    hdr = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
    pkt = struct.pack('!BBHHH', 8, 0, csum(hdr + b'qp-flood'), ident, seq) + b'qp-flood'
    sock.sendto(pkt, ({HOST_IP!r}, 0))
    drain()
    time.sleep(max(0.0, (end - time.monotonic()) / max(1, {FLOOD} - seq)))
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    drain()
    time.sleep(0.005)
print(got)
"""


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    with veth_pair("qp-icmp", HOST_IP, FLOODER_IP) as pair:
        yield pair


def _in(ns: str, argv: list[str], **kw) -> subprocess.CompletedProcess[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, timeout=60, **kw)


def _flood(flooder: str) -> int:
    proc = _in(flooder, ["python3", "-c", FLOODER])
    assert proc.returncode == 0, proc.stderr.decode()
    return int(proc.stdout)


def test_one_ping_flow_is_rate_limited(namespaces: tuple[str, str]) -> None:
    host, flooder = namespaces
    # positive control: without a ruleset the kernel answers every echo of the flood
    assert _flood(flooder) >= FLOOD * 0.9
    ruleset = key_host_ruleset(host_of_role("primary"))
    load = _in(host, ["nft", "-f", "-"], input=ruleset.encode())
    assert load.returncode == 0, load.stderr.decode()
    time.sleep(0.2)
    answered = _flood(flooder)
    # 10/s over ~3 s plus the default burst of 5: anything near the flood size means the limit was bypassed
    assert 0 < answered <= 10 * (FLOOD_SECONDS + 1.5) + 5, f"{answered} of {FLOOD} echo requests answered"
