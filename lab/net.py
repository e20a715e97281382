"""The lab's private network: a bridge on the operator side, outside clients, and who owns what.

Everything the lab creates in the kernel (bridge, veths, netns, overlay mounts, cgroups, nft tables)
carries the short prefix ``qp-`` and fits IFNAMSIZ, so leftovers of a crashed run can be found by name.
Because several lab runs may share one machine, every live lab records the names it owns in a claims
file guarded by an flock it holds for its lifetime: the reaper only removes prefixed objects that no
live lab claims.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PREFIX = "qp-"
IFNAMSIZ = 15
RUN_DIR = Path("/run/quantapool-lab")
CLAIMS_DIR = RUN_DIR / "labs"
NETNS_DIR = Path("/run/netns")
FORWARD_RULE_TAG = "qp-lab-forward "


class LabError(Exception):
    """A lab operation failed; the message names the host/input at fault and what to do."""


def run(argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60,
        check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a host-side tool with a bound on time, turning failures into one-line LabErrors."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: not installed on this machine; install it (see lab-hosts.md)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:g}s") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise LabError(f"{' '.join(argv)}: exit {proc.returncode}: {err[-1] if err else '(no stderr)'}")
    return proc


def short_name(kind: str, *parts: str) -> str:
    """Derive a unique, readable kernel object name that fits IFNAMSIZ.

    ``kind`` is one letter (b=bridge, v=veth, n=netns, o=overlay, c=cgroup, m=machine, p=partition
    table); a hash of all ``parts`` keeps names of different labs apart, the slug keeps them readable.
    """
    if len(kind) != 1 or not kind.isalpha():
        raise ValueError(f"short_name: kind must be one letter, got {kind!r}")
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    slug = re.sub(r"[^a-z0-9]", "", parts[-1].lower())[:4]
    name = f"{PREFIX}{kind}-{slug}{digest[: IFNAMSIZ - len(PREFIX) - 2 - len(slug)]}"
    assert len(name) == IFNAMSIZ
    return name


class Claims:
    """The set of kernel object names one live lab owns, published for the reaper.

    The flock on ``<lab>.lock`` is held from create() to destroy(); when the owning process dies the
    kernel drops the lock, which is how the reaper tells a crashed run from a live one.
    """

    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.lock_path = CLAIMS_DIR / f"{lab}.lock"
        self.json_path = CLAIMS_DIR / f"{lab}.json"
        self._fd: int | None = None
        self._names: set[str] = set()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lab's lock, refusing a name another live process already uses."""
        if self._fd is not None:
            return
        CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # the reaper may unlink a stale lock between our open and flock
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LabError(f"lab {self.lab!r}: already in use by a live process (lock {self.lock_path});"
                               " destroy it there or pick another lab name") from None
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                self._names = set()
                self._write()
                return
            os.close(fd)
        raise LabError(f"lab {self.lab!r}: could not take lock {self.lock_path}; retry")

    def add(self, *names: str) -> None:
        """Publish names *before* the objects exist, so a crash in between leaves nothing unowned."""
        self._names.update(names)
        self._write()

    def discard(self, *names: str) -> None:
        """Stop claiming names once the objects are gone."""
        self._names.difference_update(names)
        self._write()

    def release(self) -> None:
        if self._fd is None:
            return
        for path in (self.json_path, self.lock_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        os.close(self._fd)
        self._fd = None

    def _write(self) -> None:
        if self._fd is None:
            raise LabError(f"lab {self.lab!r}: not created (call create() first)")
        tmp = self.json_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"pid": os.getpid(), "names": sorted(self._names)}))
        tmp.rename(self.json_path)


def live_claimed_names() -> set[str]:
    """Names claimed by labs whose owner still holds its lock (in this or any other process)."""
    names: set[str] = set()
    if not CLAIMS_DIR.is_dir():
        return names
    for lock_path in CLAIMS_DIR.glob("*.lock"):
        if not _lock_is_held(lock_path):
            continue
        with contextlib.suppress(FileNotFoundError, ValueError):
            names.update(json.loads(lock_path.with_suffix(".json").read_text())["names"])
    return names


def _lock_is_held(lock_path: Path) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def link_names() -> list[str]:
    """All network interface names in the root netns."""
    return [link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]).stdout or b"[]")]


def delete_link(name: str) -> None:
    """Delete an interface if it exists (a veth's peer goes with it)."""
    if Path(f"/sys/class/net/{name}").exists():
        run(["ip", "link", "del", name], check=False)


def delete_netns(name: str) -> None:
    if (NETNS_DIR / name).exists():
        run(["ip", "netns", "del", name], check=False)


def make_veth_into_netns(veth: str, netns: str) -> None:
    """Create ``veth`` in the root netns with its peer as ``eth0`` inside ``netns``."""
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])


def _disable_ipv6(ifname: str) -> None:
    """Bridge ports and the bridge need no IPv6; it only adds RA/DAD noise and delays."""
    path = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    if path.exists():
        path.write_text("1")


def forward_rule_comment(bridge: str) -> str:
    return f"{FORWARD_RULE_TAG}{bridge}"


def forward_chains() -> list[tuple[str, str, str]]:
    """Base chains of the root netns hooked at forward in ip/ip6/inet: (family, table, chain)."""
    proc = run(["nft", "-j", "list", "chains"], check=False)
    if proc.returncode != 0:
        return []
    chains = []
    for item in json.loads(proc.stdout or b"{}").get("nftables", []):
        chain = item.get("chain")
        if chain and chain.get("hook") == "forward" and chain.get("family") in ("ip", "ip6", "inet"):
            chains.append((chain["family"], chain["table"], chain["name"]))
    return chains


def forward_rules_tagged() -> list[tuple[str, str, str, int, str]]:
    """Our accept rules in foreign forward chains: (family, table, chain, handle, bridge)."""
    proc = run(["nft", "-j", "list", "ruleset"], check=False)
    if proc.returncode != 0:
        return []
    found = []
    for item in json.loads(proc.stdout or b"{}").get("nftables", []):
        rule = item.get("rule")
        if rule and str(rule.get("comment", "")).startswith(FORWARD_RULE_TAG):
            bridge = rule["comment"][len(FORWARD_RULE_TAG):]
            found.append((rule["family"], rule["table"], rule["chain"], rule["handle"], bridge))
    return found


def remove_forward_rules(bridge: str) -> None:
    for family, table, chain, handle, owner in forward_rules_tagged():
        if owner == bridge:
            run(["nft", "delete", "rule", family, table, chain, "handle", str(handle)], check=False)


class OutsideClient:
    """A machine outside the lab hosts: its own netns on the bridge with its own address.

    Used to test what a host exposes to a given source address.
    """

    def __init__(self, network: LabNetwork, name: str, ip: str) -> None:
        self.network = network
        self.name = name
        self.ip = ip
        self.netns = short_name("n", network.name, "client", name)
        self.veth = short_name("v", network.name, "client", name)

    def create(self) -> None:
        self.network.claims.add(self.netns, self.veth)
        run(["ip", "netns", "add", self.netns])
        make_veth_into_netns(self.veth, self.netns)
        _disable_ipv6(self.veth)
        run(["ip", "link", "set", self.veth, "master", self.network.bridge, "up"])
        ns = ["ip", "-n", self.netns]
        run([*ns, "link", "set", "lo", "up"])
        run(["nsenter", f"--net={NETNS_DIR / self.netns}", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
            check=False)
        run([*ns, "addr", "add", f"{self.ip}/{self.network.prefixlen}", "dev", "eth0"])
        run([*ns, "link", "set", "eth0", "up"])

    def destroy(self) -> None:
        delete_link(self.veth)
        delete_netns(self.netns)
        self.network.claims.discard(self.netns, self.veth)

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        """Run a command with this client's network (the root filesystem is the operator's)."""
        try:
            return subprocess.run(["nsenter", f"--net={NETNS_DIR / self.netns}", *argv], input=input,
                                  capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"outside client {self.name}: {' '.join(argv)} timed out after {timeout:g}s") from exc

    def can_connect(self, ip: str, port: int, proto: str = "tcp", timeout: float = 2.0) -> bool:
        """Whether ``ip:port`` is reachable from this client's address.

        TCP: True iff the handshake completes. UDP is best effort, as UDP has no handshake: one
        datagram is sent and True means "not refused" (a reply came back, or nothing did within
        ``timeout``: open or silently filtered); False means an ICMP port/host unreachable came back
        (closed, rejected, or no route). To tell a silent drop from an open port, use a service that
        answers.
        """
        if proto not in ("tcp", "udp"):
            raise LabError(f"can_connect: proto must be 'tcp' or 'udp', got {proto!r}")
        proc = self.run([sys.executable, "-c", _PROBE, proto, ip, str(port), str(timeout)],
                        timeout=timeout + 10)
        if proc.returncode not in (0, 1):
            raise LabError(f"outside client {self.name}: probe of {ip}:{port}/{proto} failed: "
                           f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        return proc.returncode == 0


_PROBE = """
import socket, sys
proto, ip, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if proto == "tcp":
    try:
        socket.create_connection((ip, port), timeout=timeout).close()
    except OSError:
        sys.exit(1)
    sys.exit(0)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(timeout)
try:
    s.connect((ip, port))
    s.send(b"\\0")
    s.recv(2048)
except TimeoutError:
    sys.exit(0)
except OSError:
    sys.exit(1)
sys.exit(0)
"""


class LabNetwork:
    """A bridge in the root netns holding ``bridge_ip``: the operator side of the lab.

    No gateway and no NAT: hosts reach only each other and the operator's local services listening
    on ``bridge_ip`` (a release mirror, a fake API), never the internet.
    """

    def __init__(self, name: str, subnet: str, bridge_ip: str, state_dir: Path | None = None) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", name):
            raise LabError(f"lab network name {name!r}: use 1-31 chars of a-z, 0-9 and '-'")
        try:
            self.ipv4_subnet = ipaddress.IPv4Network(subnet)
            self._bridge_addr = ipaddress.IPv4Address(bridge_ip)
        except ValueError as exc:
            raise LabError(f"lab network {name}: bad subnet/bridge_ip ({exc})") from exc
        self.subnet = str(self.ipv4_subnet)  # plain strings, as passed in: easy to log and serialise
        self.bridge_ip = str(self._bridge_addr)
        if self._bridge_addr not in self.ipv4_subnet:
            raise LabError(f"lab network {name}: bridge_ip {bridge_ip} is not in subnet {subnet}")
        self.name = name
        self.bridge = short_name("b", name)
        self.state_dir = state_dir or RUN_DIR / "state" / name
        self.known_hosts = self.state_dir / "known_hosts"
        self.claims = Claims(self.bridge)
        self.clients: dict[str, OutsideClient] = {}
        # ip -> (owner label, object with destroy()): two machines on one address would be a silent mess.
        self._members: dict[str, tuple[str, object]] = {}

    @property
    def prefixlen(self) -> int:
        return self.ipv4_subnet.prefixlen

    def check_ip(self, ip: str, what: str) -> None:
        """Reject addresses outside the subnet or clashing with the bridge: a typo here means a ghost."""
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError as exc:
            raise LabError(f"{what}: {ip!r} is not an IPv4 address") from exc
        net = self.ipv4_subnet
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise LabError(f"{what}: {ip} is not a usable address of lab subnet {self.subnet}")
        if addr == self._bridge_addr:
            raise LabError(f"{what}: {ip} is the bridge (operator) address; pick another")

    def reserve(self, ip: str, owner: str, obj: object = None) -> None:
        """Record that ``owner`` uses ``ip`` on this lab; refuse an address already in use."""
        self.check_ip(ip, owner)
        have = self._members.get(ip)
        if have is not None and have[0] != owner:
            raise LabError(f"{owner}: {ip} is already used by {have[0]} in lab {self.name}; pick another address")
        self._members[ip] = (owner, obj)

    def release(self, ip: str, owner: str) -> None:
        if self._members.get(ip, ("",))[0] == owner:
            del self._members[ip]

    def create(self) -> None:
        """Create the bridge; refuse a subnet that something else on this machine already uses."""
        self.claims.acquire()
        try:
            self._check_subnet_free()
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.known_hosts.write_text("")
            self.claims.add(self.bridge)
            run(["ip", "link", "add", self.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"])
            _disable_ipv6(self.bridge)
            run(["ip", "addr", "add", f"{self.bridge_ip}/{self.prefixlen}", "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])
            self.ensure_forwarding()
        except BaseException:
            self.destroy()
            raise

    def ensure_forwarding(self) -> None:
        """Keep bridged host-to-host traffic flowing when br_netfilter is on.

        With br_netfilter, frames between two ports of our bridge traverse the root netns' IP
        forward hooks, where someone else's policy-drop chain would silently cut the lab in two.
        The global sysctl is shared with other users of this machine, so instead we put one tagged
        accept rule for our bridge at the top of every forward base chain. Idempotent: call again
        after other software added chains.
        """
        sysctl = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if not sysctl.exists() or sysctl.read_text().strip() != "1":
            return
        have = {(f, t, c) for f, t, c, _h, b in forward_rules_tagged() if b == self.bridge}
        for family, table, chain in forward_chains():
            if (family, table, chain) in have:
                continue
            run(["nft", "insert", "rule", family, table, chain, "iifname", self.bridge, "oifname",
                 self.bridge, "accept", "comment", f'"{forward_rule_comment(self.bridge)}"'])

    def add_outside_client(self, name: str, ip: str) -> OutsideClient:
        if not self.claims.held:
            raise LabError(f"lab network {self.name}: not created (call create() first)")
        if name in self.clients:
            raise LabError(f"lab network {self.name}: outside client {name!r} exists already")
        self.reserve(ip, f"outside client {name}")
        client = OutsideClient(self, name, ip)
        self.clients[name] = client
        try:
            client.create()
        except BaseException:
            self.remove_outside_client(name)
            raise
        return client

    def remove_outside_client(self, name: str) -> None:
        """Unplug and delete an outside client (idempotent)."""
        client = self.clients.pop(name, None)
        if client is not None:
            client.destroy()
            self.release(client.ip, f"outside client {name}")

    def destroy(self) -> None:
        """Remove the bridge, rules, outside clients and any host still booted on it (idempotent)."""
        for _owner, obj in list(self._members.values()):
            destroy = getattr(obj, "destroy", None)
            if destroy is not None:
                destroy()
        for name in list(self.clients):
            self.remove_outside_client(name)
        remove_forward_rules(self.bridge)
        delete_link(self.bridge)
        if self.claims.held:
            self.claims.discard(self.bridge)
            self.claims.release()

    def __enter__(self) -> LabNetwork:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _check_subnet_free(self) -> None:
        addrs = json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or b"[]")
        for link in addrs:
            for info in link.get("addr_info", []):
                net = ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
                if net.overlaps(self.ipv4_subnet):
                    raise LabError(f"lab network {self.name}: subnet {self.subnet} overlaps "
                                   f"{info['local']}/{info['prefixlen']} on {link['ifname']}; pick a free subnet "
                                   "(or reap leftovers with lab.reaper.reap())")


def tcp_port_open(ip: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP handshake with ip:port completes from the operator side (the root netns)."""
    try:
        socket.create_connection((ip, port), timeout=timeout).close()
    except OSError:
        return False
    return True
