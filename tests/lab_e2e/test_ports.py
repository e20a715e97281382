"""Port exposure (issue 5): what each source address can reach on the hosts, through their real nftables rules.

Hetzner's cloud firewall does not filter the private network and is not in the lab at all, so the hosts'
own rulesets are the whole story here, which is exactly what these tests exercise.

Outside clients. Production operators and peers reach the hosts from the internet, i.e. from addresses
outside the stack subnet. The lab has no router, so each outside client is a network namespace plugged into
the lab bridge with an address OUTSIDE the subnet, and both sides get on-link routes (no gateway):
- in the client's netns: `<stack subnet> dev eth0` (the hosts are on its link);
- in each host's netns (set from outside the guest, so its firewall and config are untouched):
  `<client ip>/32 dev eth0`, without which the hosts' replies would have no route back and the strict
  reverse-path filter in the hosts' ruleset (`fib saddr . iif oif missing`) would drop the client's packets.
The trusted client uses the stack's `network.sshAllowedCidrs` address (203.0.113.7); the other one
(198.51.100.99) is in no allow-list.

Every "does not answer" check has a positive control showing the port is really served (from the monitoring
host or from the host itself) and the path really works (the same client reaches the P2P ports), so no
negative here can pass just because a service is down or a route is missing.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloud_init.base import ADMIN_USER
from core import ports
from lab.deploy import LabDeployment
from lab.net import NETNS_DIR, OutsideClient, run

from .conftest import (
    LAB_MARKS,
    Lab,
    key_hosts,
    one_host,
    sh,
    tcp_from_host,
    tcp_many_from_host,
    wait_for,
)

pytestmark = LAB_MARKS

TRUSTED_IP = "203.0.113.7"
UNTRUSTED_IP = "198.51.100.99"
#: Never reachable from outside a key host (RPC, engine API, beacon REST/gRPC, metrics incl. /db/backup).
NEVER_FROM_OUTSIDE = (ports.EXECUTION_RPC, ports.EXECUTION_AUTH_RPC, ports.BEACON_REST, ports.BEACON_GRPC,
                      ports.EXECUTION_METRICS, ports.BEACON_METRICS, ports.VALIDATOR_METRICS, ports.NODE_EXPORTER)
P2P_TCP = (ports.EXECUTION_P2P, ports.BEACON_P2P_TCP)
P2P_UDP = (ports.EXECUTION_P2P, ports.BEACON_P2P_UDP)
#: Served while the validator is stopped (8081 only while it signs), so these have positive controls.
METRICS_SERVED = (ports.EXECUTION_METRICS, ports.BEACON_METRICS, ports.NODE_EXPORTER)
LOOPBACK_ONLY = (ports.EXECUTION_AUTH_RPC, ports.BEACON_REST, ports.BEACON_GRPC)


class Clients:
    """The two outside clients of the module, keyed 'trusted' / 'untrusted'."""

    def __init__(self, dep: LabDeployment, trusted: OutsideClient, untrusted: OutsideClient) -> None:
        self.dep = dep
        self.trusted = trusted
        self.untrusted = untrusted


def _add_outside_client(dep: LabDeployment, name: str, ip: str) -> OutsideClient:
    """An outside client with an address outside the stack subnet, plus the on-link routes both ways.

    LabNetwork.add_outside_client only takes subnet addresses (a typo guard), so the client is built
    directly and registered with the network, which then removes it on teardown like any other client.
    """
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
def lab(shared_lab: Lab) -> Lab:
    return shared_lab  # read-only module: the session's shared lab (conftest.shared_lab)


@pytest.fixture(scope="module")
def clients(lab: Lab) -> Iterator[Clients]:
    dep, _ = lab
    allowed = [ipaddress.ip_network(c) for c in dep.config.network.ssh_allowed_cidrs]
    assert any(ipaddress.ip_address(TRUSTED_IP) in c for c in allowed), "stack config no longer trusts 203.0.113.7"
    assert not any(ipaddress.ip_address(UNTRUSTED_IP) in c for c in allowed)
    trusted = _add_outside_client(dep, "trusted", TRUSTED_IP)
    untrusted = _add_outside_client(dep, "untrusted", UNTRUSTED_IP)
    try:
        yield Clients(dep, trusted, untrusted)
    finally:
        for c in (trusted, untrusted):
            for host in dep.hosts.values():
                run(["ip", "-n", host.netns, "route", "del", f"{c.ip}/32", "dev", "eth0"], check=False)
            dep.network.remove_outside_client(c.name)


Probe = tuple[str, int, str]  # ip, port, proto


def _probe_all(client: OutsideClient, probes: list[Probe]) -> dict[Probe, bool]:
    """`OutsideClient.can_connect` for every probe, in parallel (a dropped port costs the whole timeout)."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = pool.map(lambda pr: client.can_connect(pr[0], pr[1], pr[2]), probes)
        return dict(zip(probes, answers, strict=True))


def _udp_counters(dep: LabDeployment, host: str) -> dict[str, int]:
    """The host netns' UDP MIB (/proc/net/snmp): InDatagrams counts datagrams delivered to a socket."""
    text = subprocess.run(["nsenter", f"--net={NETNS_DIR / dep.hosts[host].netns}", "cat", "/proc/net/snmp"],
                          capture_output=True, check=True, timeout=30).stdout.decode()
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}


def _send_udp(client: OutsideClient, ip: str, port: int, count: int) -> None:
    script = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              f"for _ in range({count}): s.sendto(b'qp-e2e', ({ip!r}, {port}))\n")
    proc = client.run(["python3", "-c", script])
    assert proc.returncode == 0, proc.stderr


# -- from the internet ----------------------------------------------------------------------------------------

def test_trusted_outside_client_reaches_only_ssh_and_p2p(clients: Clients) -> None:
    dep = clients.dep
    expected: dict[Probe, bool] = {}
    for host in key_hosts(dep):
        ip = dep.spec(host).private_ip
        expected[(ip, ports.SSH, "tcp")] = True
        expected.update({(ip, port, "tcp"): True for port in P2P_TCP})
        expected.update({(ip, port, "udp"): True for port in P2P_UDP})  # True: not rejected
        expected.update({(ip, port, "tcp"): False for port in NEVER_FROM_OUTSIDE})
    got = _probe_all(clients.trusted, list(expected))
    wrong = {probe: answered for probe, answered in got.items() if answered != expected[probe]}
    assert not wrong, f"from the trusted address (True = answered): {wrong}"


def test_p2p_udp_datagrams_reach_the_clients_sockets(clients: Clients) -> None:
    """UDP has no handshake, so 'not rejected' alone would also hold for a silent drop: count deliveries in
    the host's UDP MIB instead. Allowed ports deliver every datagram; a port the ruleset does not allow
    delivers none and does not even reach the socket lookup (NoPorts unchanged)."""
    dep = clients.dep
    count = 25
    for host in key_hosts(dep):
        ip = dep.spec(host).private_ip
        for port in P2P_UDP:
            before = _udp_counters(dep, host)
            _send_udp(clients.untrusted, ip, port, count)
            wait_for(f"{host}: {count} datagrams delivered on {port}/udp", lambda h=host, b=before: (
                _udp_counters(dep, h)["InDatagrams"] - b["InDatagrams"] >= count), timeout=15, interval=0.3)
        before = _udp_counters(dep, host)
        _send_udp(clients.untrusted, ip, 9, count)  # discard port: nothing listens, the ruleset drops it
        # Barrier instead of a sleep: datagrams sent after the probe, on the same path, have been delivered.
        _send_udp(clients.untrusted, ip, ports.EXECUTION_P2P, count)
        after = wait_for(f"{host}: barrier datagrams delivered", lambda h=host, b=before: (
            (c := _udp_counters(dep, h))["InDatagrams"] - b["InDatagrams"] >= count and c), timeout=15, interval=0.3)
        assert after["NoPorts"] == before["NoPorts"], f"{host}: udp/9 passed the firewall"
        assert after["InDatagrams"] - before["InDatagrams"] < 2 * count, f"{host}: udp/9 datagrams delivered"


def test_untrusted_outside_client_reaches_only_p2p(clients: Clients) -> None:
    dep = clients.dep
    expected: dict[Probe, bool] = {}
    for spec in dep.config.hosts():
        ip = spec.private_ip
        expected[(ip, ports.SSH, "tcp")] = False
        if spec.is_key_host:
            expected.update({(ip, port, "tcp"): True for port in P2P_TCP})  # control: the path works
            expected.update({(ip, port, "tcp"): False for port in NEVER_FROM_OUTSIDE})
    got = _probe_all(clients.untrusted, list(expected))
    wrong = {probe: answered for probe, answered in got.items() if answered != expected[probe]}
    assert not wrong, f"from an untrusted address (True = answered): {wrong}"


def test_monitoring_host_exposes_only_ssh_to_the_trusted_address(clients: Clients) -> None:
    dep = clients.dep
    mon_name = one_host(dep, "monitoring")
    mon = dep.spec(mon_name).private_ip
    # control: the node exporter is served on the private address (to Prometheus on the host itself)
    assert tcp_from_host(dep, mon_name, mon, ports.NODE_EXPORTER)
    expected = {(mon, ports.SSH, "tcp"): True, **{(mon, port, "tcp"): False for port in (
        ports.PROMETHEUS, ports.ALERTMANAGER, ports.NODE_EXPORTER, ports.CONTRACT_EXPORTER)}}
    got = _probe_all(clients.trusted, list(expected))
    assert got == expected, f"monitoring host from the trusted address (True = answered): {got}"


# -- inside the private network ---------------------------------------------------------------------------

def test_monitoring_host_reaches_metrics_and_rpc_of_key_hosts(lab: Lab) -> None:
    """The positive control for every metrics/RPC negative above: the ports are served, to the right source."""
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    expected = {}
    for host in key_hosts(dep):
        ip = dep.spec(host).private_ip
        expected.update({(ip, port): True for port in (*METRICS_SERVED, ports.EXECUTION_RPC)})
        expected.update({(ip, port): False for port in LOOPBACK_ONLY})
        # served on the host's own loopback, so the False above is the firewall/binding, not a dead service
        on_loopback = tcp_many_from_host(dep, host, [("127.0.0.1", port) for port in LOOPBACK_ONLY])
        assert all(on_loopback.values()), f"{host}: loopback services down: {on_loopback}"
    got = tcp_many_from_host(dep, mon, list(expected))
    wrong = {t: answered for t, answered in got.items() if answered != expected[t]}
    assert not wrong, f"from the monitoring host (True = answered): {wrong}"


def test_backup_key_host_cannot_reach_the_primarys_metrics_or_rpc(lab: Lab) -> None:
    dep, _ = lab
    primary = dep.spec(one_host(dep, "primary")).private_ip
    backup = one_host(dep, "backup")
    targets = [(primary, port) for port in
               (*METRICS_SERVED, ports.VALIDATOR_METRICS, ports.EXECUTION_RPC, *LOOPBACK_ONLY)]
    got = tcp_many_from_host(dep, backup, targets)
    assert not any(got.values()), f"the backup reaches the primary's {[p for (_, p), ok in got.items() if ok]}"


def test_ssh_open_to_the_whole_private_subnet_by_design(lab: Lab) -> None:
    """Documented behaviour (cloud_init/nftables.py): SSH is accepted from the private subnet, because the
    bootstrap and qpool reach lab hosts over the bridge and the peer key host ships slashing-protection
    backups over SSH on the private network."""
    dep, _ = lab
    primary, backup = one_host(dep, "primary"), one_host(dep, "backup")
    mon = one_host(dep, "monitoring")
    assert tcp_from_host(dep, backup, dep.spec(primary).private_ip, ports.SSH)
    assert tcp_from_host(dep, primary, dep.spec(backup).private_ip, ports.SSH)
    assert tcp_from_host(dep, primary, dep.spec(mon).private_ip, ports.SSH)
    assert sh(dep, primary, "true").returncode == 0  # from the bridge (the operator side)


# -- SSH policy, seen from outside ----------------------------------------------------------------------------

#: The one warning left on purpose (docs/operations.md "SSH policy"): pulumi-command's Go SSH client has no
#: post-quantum key exchange that Debian 12's OpenSSH also has, so curve25519-sha256 stays after sntrup761.
ACCEPTED_AUDIT_WARNINGS = {("kex", "curve25519-sha256", "does not provide protection against post-quantum attacks")}


def _audit_findings(report: dict) -> set[tuple[str, str, str]]:  # type: ignore[type-arg]
    findings = set()
    for section in ("kex", "key", "enc", "mac"):
        for entry in report.get(section, []):
            for level in ("fail", "warn"):
                findings.update((section, entry["algorithm"], note) for note in entry.get("notes", {}).get(level, []))
    return findings


def test_ssh_audit_finds_no_failure_and_no_unexplained_warning(clients: Clients) -> None:
    audit = str(Path(sys.executable).parent / "ssh-audit")
    for spec in clients.dep.config.hosts():
        proc = clients.trusted.run([audit, "-j", "--skip-rate-test", "-t", "10", spec.private_ip], timeout=60)
        assert proc.stdout, f"{spec.name}: ssh-audit printed nothing: {proc.stderr.decode()[-300:]}"
        report = json.loads(proc.stdout)
        assert report["cves"] == [], f"{spec.name}: {report['cves']}"
        unexplained = _audit_findings(report) - ACCEPTED_AUDIT_WARNINGS
        assert not unexplained, f"{spec.name}: ssh-audit findings: {sorted(unexplained)}"
        assert [k["algorithm"] for k in report["key"]] == ["ssh-ed25519"], spec.name


def _stdio_forward(dep: LabDeployment, host: str, target: str, request: bytes) -> subprocess.CompletedProcess[bytes]:
    """`ssh -W target` (a direct-tcpip channel, what -L uses) with the operator's key; the request goes through."""
    argv = dep.hosts[host].ssh_argv(ADMIN_USER, dep.operator_key)
    argv[-1:-1] = ["-W", target]
    return subprocess.run(argv, input=request, capture_output=True, timeout=60, check=False)


def test_key_hosts_refuse_every_tcp_forward(lab: Lab) -> None:
    """No -L from any admin key to the localhost-only engine API, beacon REST or beacon gRPC."""
    dep, _ = lab
    for host in key_hosts(dep):
        # control: each target is served on the host's loopback, so a refusal is sshd's, not a dead port
        served = tcp_many_from_host(dep, host, [("127.0.0.1", port) for port in LOOPBACK_ONLY])
        assert all(served.values()), f"{host}: loopback services down: {served}"
        for port in LOOPBACK_ONLY:
            proc = _stdio_forward(dep, host, f"127.0.0.1:{port}", b"GET / HTTP/1.0\r\n\r\n")
            assert proc.returncode == 255 and not proc.stdout, f"{host}: forward to {port} allowed"
            assert b"forwarding failed" in proc.stderr or b"prohibited" in proc.stderr, proc.stderr.decode()


def test_monitoring_host_forwards_only_to_its_uis(lab: Lab) -> None:
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    ok = _stdio_forward(dep, mon, f"127.0.0.1:{ports.PROMETHEUS}", b"GET /-/healthy HTTP/1.0\r\n\r\n")
    assert ok.stdout.startswith(b"HTTP/1.0 200"), (ok.stdout[:200], ok.stderr.decode()[-300:])
    # sshd itself answers on the host's loopback (control), but is no UI: the forward must be refused
    assert tcp_from_host(dep, mon, "127.0.0.1", ports.SSH)
    denied = _stdio_forward(dep, mon, f"127.0.0.1:{ports.SSH}", b"")
    assert denied.returncode == 255 and b"SSH-2.0" not in denied.stdout, denied.stdout[:100]
    assert b"forwarding failed" in denied.stderr or b"prohibited" in denied.stderr, denied.stderr.decode()
