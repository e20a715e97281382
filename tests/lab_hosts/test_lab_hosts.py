"""Booted lab hosts behave like fresh cloud VMs on a private network, and faults do what they say.

Tests run in file order on two session-scoped hosts; each test that injects a fault undoes it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import cgroups
from lab.hosts import LabHost
from lab.image import enabled_units
from lab.net import NETNS_DIR, LabError, LabNetwork, OutsideClient, link_names, short_name, tcp_port_open
from lab.reaper import reap

from .conftest import SSH_USER, free_subnet, host_ip

pytestmark = pytest.mark.lab

ROLE_SERVICES = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "chrony")


def sh(host: LabHost, cmd: str, key: Path, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return host.ssh(cmd, user=SSH_USER, key_path=key, timeout=timeout)


def out(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stdout.decode().strip()


def tcp_from(host: LabHost, ip: str, port: int) -> bool:
    """Whether ``host`` completes a TCP handshake with ip:port (bash /dev/tcp, bounded by timeout)."""
    proc = host.exec(["timeout", "2", "bash", "-c", f"exec 3<>/dev/tcp/{ip}/{port}"], timeout=15)
    return proc.returncode == 0


def wait_until(pred, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.2)


@pytest.fixture
def client(lab_net: LabNetwork) -> Iterator[OutsideClient]:
    c = lab_net.add_outside_client("outside", host_ip(lab_net.subnet, 200))
    yield c
    lab_net.remove_outside_client("outside")


@pytest.fixture
def bridge_listener(lab_net: LabNetwork) -> Iterator[int]:
    """A TCP service on the operator side (the bridge address), like a release mirror."""
    srv = socket.create_server((lab_net.bridge_ip, 0))
    srv.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conn.sendall(b"mirror\n")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(timeout=5)
    srv.close()


def test_hosts_are_ready_with_their_identity(lab_hosts: list[LabHost], ssh_key: Path) -> None:
    ids = set()
    for h in lab_hosts:
        proc = sh(h, "hostname; ip -4 -o addr show dev eth0; cloud-init status; sudo -n true && echo sudo-ok;"
                     " systemctl is-system-running", ssh_key)
        assert proc.returncode == 0, proc.stderr
        lines = out(proc).splitlines()
        assert lines[0] == h.name
        assert f"inet {h.ip}/{h.network.prefixlen}" in lines[1]
        assert lines[2] == "status: done"
        assert lines[3] == "sudo-ok"
        assert lines[4] == "running", h.exec(["systemctl", "--failed", "--no-pager"]).stdout
        ids.add(out(h.exec(["cat", "/var/lib/cloud/data/instance-id"])))
        ids.add(out(h.exec(["cat", "/etc/machine-id"])))
        sshd = out(h.exec(["sshd", "-T"]))
        assert "passwordauthentication no" in sshd
    assert len(ids) == 4  # unique instance-id and machine-id per host


def test_ssh_pins_the_key_read_through_exec(lab_hosts: list[LabHost], ssh_key: Path) -> None:
    h1 = lab_hosts[0]
    pinned = [ln for ln in h1.network.known_hosts.read_text().splitlines() if ln.startswith(f"{h1.ip} ")]
    real = out(h1.exec(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])).split()[:2]
    assert pinned == [f"{h1.ip} {real[0]} {real[1]}"]
    # A wrong pinned key must make ssh refuse (StrictHostKeyChecking), not silently accept.
    kh = h1.network.known_hosts
    saved = kh.read_text()
    try:
        other = out(lab_hosts[1].exec(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])).split()[:2]
        kh.write_text(saved.replace(" ".join(real), " ".join(other)))
        assert sh(h1, "true", ssh_key).returncode == 255
    finally:
        kh.write_text(saved)
    assert sh(h1, "true", ssh_key).returncode == 0


def test_seed_and_extra_files_reach_the_guest(lab_hosts: list[LabHost]) -> None:
    for h in lab_hosts:
        assert out(h.exec(["cat", "/etc/quantapool/lab-extra.txt"])) == f"for {h.name}"
        meta = out(h.exec(["cat", "/var/lib/cloud/seed/nocloud/meta-data"]))
        assert '"qp-role": "test"' in meta and f'"local-hostname": "{h.name}"' in meta


def test_failing_user_data_surfaces_in_wait_ready(lab_net: LabNetwork, lab_image: Path, ssh_key: Path,
                                                   tmp_path: Path) -> None:
    from .conftest import render_user_data

    ud = render_user_data(ssh_key.with_suffix(".pub").read_text().strip())
    ud += "  - [sh, -c, 'echo qp-broken-step >&2; exit 7']\n"  # appended to runcmd
    h = LabHost("qp-bad", host_ip(lab_net.subnet, 30), lab_net, lab_image, tmp_path / "bad")
    try:
        h.boot(ud)
        with pytest.raises(LabError, match=r"host qp-bad: cloud-init not done \(status: error.*qp-broken-step"):
            h.wait_ready(SSH_USER, ssh_key, timeout=120)
    finally:
        h.destroy()
    assert not (NETNS_DIR / h.netns).exists()


def test_a_second_machine_on_a_used_address_is_refused(lab_hosts: list[LabHost], lab_image: Path,
                                                       tmp_path: Path) -> None:
    h1 = lab_hosts[0]
    dup = LabHost("qp-dup", h1.ip, h1.network, lab_image, tmp_path / "dup")
    with pytest.raises(LabError, match=f"already used by host {h1.name}"):
        dup.boot("#cloud-config\n")
    with pytest.raises(LabError, match=f"already used by host {h1.name}"):
        h1.network.add_outside_client("dup", h1.ip)
    assert not (NETNS_DIR / dup.netns).exists() and not (tmp_path / "dup").exists()
    assert h1.is_running()


def test_ssh_passes_input_and_check_raises(lab_hosts: list[LabHost], ssh_key: Path) -> None:
    h1 = lab_hosts[0]
    proc = h1.ssh(["sh", "-c", "cat | tr a-z A-Z"], user=SSH_USER, key_path=ssh_key, input=b"quanta")
    assert out(proc) == "QUANTA"
    with pytest.raises(LabError, match=f"host {h1.name}: ssh"):
        h1.ssh("exit 3", user=SSH_USER, key_path=ssh_key, check=True)


def test_hosts_reach_each_other_and_the_operator_only(lab_hosts: list[LabHost], ssh_key: Path,
                                                     lab_net: LabNetwork, bridge_listener: int) -> None:
    h1, h2 = lab_hosts
    assert tcp_from(h1, h2.ip, 22)
    assert tcp_from(h2, h1.ip, 22)
    proc = h1.exec(["timeout", "5", "bash", "-c",
                    f"exec 3<>/dev/tcp/{lab_net.bridge_ip}/{bridge_listener}; head -n1 <&3"])
    assert out(proc) == "mirror"
    # No gateway: the kernel refuses any destination outside the subnet without sending a packet.
    route = h1.exec(["ip", "route", "get", "192.0.2.1"])
    assert route.returncode != 0 and b"unreachable" in route.stderr


def test_image_is_offline_installable_with_role_services_disabled(lab_hosts: list[LabHost],
                                                                  lab_image: Path) -> None:
    assert not set(enabled_units(lab_image)) & {f"{s}.service" for s in ROLE_SERVICES}
    h1 = lab_hosts[0]
    proc = h1.exec(["apt-get", "install", "-y", "jq", "prometheus", "chrony", "nftables"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    for svc in ROLE_SERVICES:
        assert out(h1.exec(["systemctl", "is-enabled", f"{svc}.service"])) == "disabled", svc
        assert out(h1.exec(["systemctl", "is-active", f"{svc}.service"])) == "inactive", svc
    # ... and the roles' cloud-init can still enable one.
    assert h1.exec(["systemctl", "enable", "--now", "prometheus-node-exporter.service"]).returncode == 0
    try:
        wait_until(lambda: tcp_port_open(h1.ip, 9100), what="node-exporter on :9100")
    finally:
        h1.exec(["systemctl", "disable", "--now", "prometheus-node-exporter.service"])


def test_outside_client_sees_what_the_host_exposes(lab_hosts: list[LabHost], client: OutsideClient) -> None:
    h1 = lab_hosts[0]
    assert client.can_connect(h1.ip, 22)
    assert not client.can_connect(h1.ip, 2222)
    assert not client.can_connect(h1.ip, 5353, proto="udp")  # closed: ICMP port unreachable
    listener = "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('',5353)); s.recv(9)"
    assert h1.exec(["systemd-run", "--unit=qp-udp-test", "python3", "-c", listener]).returncode == 0
    try:
        wait_until(lambda: b":5353" in h1.exec(["ss", "-lun"]).stdout, what="udp listener")
        assert client.can_connect(h1.ip, 5353, proto="udp", timeout=1.0)
    finally:
        h1.exec(["systemctl", "stop", "qp-udp-test"])
    # The client's source address is its own, so host firewalls can be tested per source.
    catcher = ("import socket; s=socket.create_server(('',7777)); c,a=s.accept();"
               " open('/run/qp-src','w').write(a[0])")
    assert h1.exec(["systemd-run", "--unit=qp-src-test", "python3", "-c", catcher]).returncode == 0
    try:
        wait_until(lambda: b":7777" in h1.exec(["ss", "-ltn"]).stdout, what="tcp listener")
        assert client.can_connect(h1.ip, 7777)
        wait_until(lambda: h1.exec(["test", "-s", "/run/qp-src"]).returncode == 0, what="peer address")
        assert out(h1.exec(["cat", "/run/qp-src"])) == client.ip
    finally:
        h1.exec(["systemctl", "stop", "qp-src-test"])


def test_cut_network_fails_fast_and_restore_brings_it_back(lab_hosts: list[LabHost], ssh_key: Path) -> None:
    h1, h2 = lab_hosts
    h2.cut_network()
    h2.cut_network()  # idempotent
    try:
        proc = h2.ssh("true", user=SSH_USER, key_path=ssh_key, timeout=30, connect_timeout=3)
        assert proc.returncode == 255  # ssh gave up on its own, well before our 30 s bound
        assert not tcp_from(h1, h2.ip, 22)
        assert h2.is_running()  # a cut cable does not stop the machine
        assert sh(h1, "true", ssh_key).returncode == 0
    finally:
        h2.restore_network()
        h2.restore_network()
    wait_until(lambda: tcp_port_open(h2.ip, 22), what="ssh back after restore")
    assert sh(h2, "true", ssh_key).returncode == 0


def test_partition_drops_one_peer_survives_guest_flush_and_heals(lab_hosts: list[LabHost], ssh_key: Path,
                                                                 client: OutsideClient) -> None:
    h1, h2 = lab_hosts
    h1.partition(h2.ip)
    h1.partition(h2.ip)  # idempotent
    try:
        assert not tcp_from(h1, h2.ip, 22)
        assert not tcp_from(h2, h1.ip, 22)
        assert client.can_connect(h1.ip, 22)  # only the peer is cut off
        assert sh(h1, "true", ssh_key).returncode == 0  # and the operator still gets in
        # The guest's own firewall reload (flush ruleset) cannot lift the partition.
        assert h1.exec(["nft", "flush", "ruleset"]).returncode == 0
        assert not tcp_from(h1, h2.ip, 22)
        h1.partition(h1.network.bridge_ip)
        assert h1.ssh("true", user=SSH_USER, key_path=ssh_key, connect_timeout=2).returncode == 255
        h1.heal(h1.network.bridge_ip)
        assert sh(h1, "true", ssh_key).returncode == 0
        assert not tcp_from(h1, h2.ip, 22)
    finally:
        h1.heal()
        h1.heal()
    assert tcp_from(h1, h2.ip, 22)
    assert tcp_from(h2, h1.ip, 22)


def test_bridged_traffic_survives_a_forward_drop_with_br_netfilter(lab_hosts: list[LabHost], ssh_key: Path,
                                                                   lab_net: LabNetwork) -> None:
    sysctl = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not sysctl.exists() or sysctl.read_text().strip() != "1":
        pytest.skip("br_netfilter not active on this machine: nothing to handle")
    h1, h2 = lab_hosts
    table = "qp-test-fwd"
    # Someone else's forward filter that drops (only) our bridge's traffic.
    subprocess.run(["nft", "-f", "-"], check=True, input=(
        f"table inet {table} {{\n chain fwdcheck {{\n type filter hook forward priority 0; policy accept;\n"
        f" iifname \"{lab_net.bridge}\" drop\n }}\n}}\n").encode())
    try:
        assert not tcp_from(h1, h2.ip, 22)  # the drop bites: br_netfilter is in play
        lab_net.ensure_forwarding()
        lab_net.ensure_forwarding()  # idempotent
        assert tcp_from(h1, h2.ip, 22)
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False)


def test_hard_power_off_leaves_no_ghost_and_power_on_keeps_the_disk(lab_hosts: list[LabHost], ssh_key: Path,
                                                                    client: OutsideClient) -> None:
    h2 = lab_hosts[1]
    assert sh(h2, "echo kept > /home/qpadmin/marker", ssh_key).returncode == 0
    iid = out(h2.exec(["cat", "/var/lib/cloud/data/instance-id"]))
    h2.power_off(hard=True)
    h2.power_off(hard=True)  # idempotent
    assert not h2.is_running()
    assert not cgroups.pids(cgroups.host_dirs(h2.cgroup))  # nothing of the guest survives
    addrs = subprocess.run(["ip", "-n", h2.netns, "-4", "-o", "addr"], capture_output=True, check=True)
    assert h2.ip.encode() not in addrs.stdout
    probe = client.run([sys.executable, "-c", textwrap.dedent(f"""
        import socket, sys
        try:
            socket.create_connection(("{h2.ip}", 22), timeout=3)
        except ConnectionRefusedError:
            sys.exit(3)  # a ghost: the kernel still owns the address and refuses TCP
        except OSError:
            sys.exit(0)
        sys.exit(4)
    """)], timeout=20)
    assert probe.returncode == 0, probe
    with pytest.raises(LabError, match="not running"):
        h2.exec(["true"])
    assert (h2.upper / "home/qpadmin/marker").read_text() == "kept\n"  # the disk is still there
    assert "OpenBSD Secure Shell server" in h2.journal("ssh.service")  # read from the disk while off

    h2.power_on()
    h2.power_on()  # idempotent
    assert h2.wait_ready(SSH_USER, ssh_key, timeout=120) == "status: done"
    assert out(sh(h2, "cat /home/qpadmin/marker", ssh_key)) == "kept"
    assert out(h2.exec(["cat", "/var/lib/cloud/data/instance-id"])) == iid
    assert out(h2.exec(["cat", "/var/log/qp-runcmd.log"])).splitlines() == ["run"]  # per-instance: once
    assert out(h2.exec(["cat", "/var/log/qp-bootcmd.log"])).splitlines() == ["boot", "boot"]  # per-boot


def test_soft_power_off_shuts_the_guest_down_cleanly(lab_hosts: list[LabHost], ssh_key: Path) -> None:
    h2 = lab_hosts[1]
    h2.power_off(hard=False)
    assert not h2.is_running()
    assert h2.last_exit == 0  # systemd in the guest completed its shutdown; nspawn exited cleanly
    assert not cgroups.pids(cgroups.host_dirs(h2.cgroup))
    h2.power_on()
    assert h2.wait_ready(SSH_USER, ssh_key, timeout=120) == "status: done"
    h2.power_off(hard=True)
    assert h2.last_exit != 0
    h2.power_on()
    assert h2.wait_ready(SSH_USER, ssh_key, timeout=120) == "status: done"


def test_reboot_from_inside_relaunches_the_host(lab_hosts: list[LabHost], ssh_key: Path) -> None:
    h1 = lab_hosts[0]
    before = h1.leader_pid()
    boots = len(out(h1.exec(["cat", "/var/log/qp-bootcmd.log"])).splitlines())
    sh(h1, "sudo systemctl reboot", ssh_key)  # the code under test reboots; the lab must follow
    wait_until(lambda: h1.leader_pid() not in (None, before), timeout=60, what="new init after reboot")
    assert h1.wait_ready(SSH_USER, ssh_key, timeout=120) == "status: done"
    assert len(out(h1.exec(["cat", "/var/log/qp-bootcmd.log"])).splitlines()) == boots + 1
    h1.reboot()  # the API way
    assert h1.wait_ready(SSH_USER, ssh_key, timeout=120) == "status: done"
    boots = h1.exec(["journalctl", "--list-boots", "--no-pager"]).stdout.decode().strip().splitlines()
    assert len(boots) >= 3  # first boot + two reboots, all in the persistent journal
    assert "OpenBSD Secure Shell server" in h1.journal("ssh.service")


CRASHER = """
import os, signal, sys
from pathlib import Path
from lab.hosts import LabHost
from lab.net import LabNetwork
image, state, subnet, net_ip, host_ip = sys.argv[1:6]
net = LabNetwork("qpcrash", subnet, net_ip, state_dir=Path(state) / "net")
net.create()
net.add_outside_client("bystander", sys.argv[6])
h = LabHost("crash1", host_ip, net, Path(image), Path(state) / "h")
h.boot("#cloud-config\\n")
h.partition(sys.argv[6])
print("READY", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_reaper_cleans_a_crashed_run_and_spares_live_labs(lab_hosts: list[LabHost], lab_image: Path,
                                                          ssh_key: Path, tmp_path: Path) -> None:
    subnet = free_subnet(avoid=(lab_hosts[0].network.subnet,))
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, str(lab_image), str(tmp_path), str(subnet), host_ip(subnet, 254),
         host_ip(subnet, 11), host_ip(subnet, 12)],
        capture_output=True, timeout=120, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == -signal.SIGKILL and b"READY" in proc.stdout, proc.stderr[-2000:]
    crashed = LabHost("crash1", host_ip(subnet, 11), LabNetwork("qpcrash", str(subnet), host_ip(subnet, 254)),
                      lab_image, tmp_path / "h")
    bridge = short_name("b", "qpcrash")
    assert bridge in link_names() and crashed.veth in link_names()
    assert (NETNS_DIR / crashed.netns).exists() and os.path.ismount(crashed.merged)
    assert cgroups.pids(cgroups.host_dirs(crashed.cgroup))  # the orphaned guest is still running

    removed = reap()

    assert removed
    names = link_names()
    assert bridge not in names and crashed.veth not in names
    assert not (NETNS_DIR / crashed.netns).exists()
    assert not (NETNS_DIR / short_name("n", "qpcrash", "client", "bystander")).exists()
    assert not os.path.ismount(crashed.merged)
    assert not any(d.exists() for d in cgroups.host_dirs(crashed.cgroup))
    assert subprocess.run(["nft", "list", "table", "bridge", crashed.partition_table],
                          capture_output=True).returncode != 0
    assert not any(crashed.netns in " ".join(_cmdline(p)) for p in os.listdir("/proc") if p.isdigit())
    # The live session lab was not touched.
    assert all(h.is_running() for h in lab_hosts)
    assert sh(lab_hosts[0], "true", ssh_key).returncode == 0
    assert reap() == []


def _cmdline(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def test_teardown_leaves_nothing_behind(lab_hosts: list[LabHost], lab_net: LabNetwork) -> None:
    """Runs last: destroys the session lab (the fixtures' teardown is idempotent) and looks for traces."""
    assert all(h.is_running() for h in lab_hosts)
    lab_net.destroy()  # takes its hosts down with it
    lab_net.destroy()
    for h in lab_hosts:
        h.destroy()
    assert not any(h.is_running() for h in lab_hosts)
    assert lab_net.known_hosts.read_text() == ""
    names = set(link_names())
    mounts = Path("/proc/self/mountinfo").read_text()
    for h in lab_hosts:
        assert h.veth not in names
        assert not (NETNS_DIR / h.netns).exists()
        assert str(h.merged) not in mounts
        assert not any(d.exists() for d in cgroups.host_dirs(h.cgroup))
        assert not h.upper.exists()
        assert not any(h.netns in " ".join(_cmdline(p)) for p in os.listdir("/proc") if p.isdigit())
        with pytest.raises(LabError, match=r"network .* is down"):  # and no probe leaks via the default route
            h.ssh("true", user=SSH_USER, key_path=Path("/nonexistent"))
    assert lab_net.bridge not in names
    assert not lab_net.claims.lock_path.exists()
    assert b"qp-" not in subprocess.run(["nft", "list", "tables"], capture_output=True, check=True).stdout
