"""Lab hosts: Debian 12 systemd-nspawn containers that boot like fresh cloud VMs.

Each host has a copy-on-write overlay over the shared base image (its "disk", which survives
power-off), a NoCloud seed with a unique instance-id, its own netns wired to the lab bridge by a veth,
and its own cgroup. Faults are injected from outside the host (veth down, bridge-level nft drops,
SIGKILL of the container's init) so the code under test cannot see or undo them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from lab import cgroups
from lab.net import (
    NETNS_DIR,
    LabError,
    LabNetwork,
    _disable_ipv6,
    delete_link,
    delete_netns,
    make_veth_into_netns,
    run,
    short_name,
    tcp_port_open,
)
from qpool.reachability import classify_ssh_failure

__all__ = ["LabError", "LabHost"]

GUEST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "HOME": "/root", "TERM": "dumb"}
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot
_HOSTNAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

# The launcher: joins the host's own cgroups, then runs nspawn, relaunching it when the guest rebooted
# (exit 133) unless a power-off was requested. A shell (not a Python thread) so that the host keeps its
# behaviour, and stays reapable, even if the Python process dies.
_SUPERVISOR = r"""
set -u
stop=$1; pidfile=$2; shift 2
for f in ${QP_CGROUP_PROCS:-}; do
  echo $$ > "$f" || { echo "qp-lab: cannot join cgroup $f" >&2; exit 97; }
done
while :; do
  "$@" &
  echo $! > "$pidfile"
  wait $!
  rc=$?
  if [ "$rc" -ne 133 ] || [ -e "$stop" ]; then break; fi
  echo "qp-lab: guest rebooted; relaunching" >&2
done
rm -f "$pidfile"
exit "$rc"
"""


class LabHost:
    """One lab host. Methods raise LabError naming the host; fault methods are idempotent."""

    def __init__(self, name: str, ip: str, network: LabNetwork, base_image: Path, state_dir: Path) -> None:
        if not _HOSTNAME_RE.fullmatch(name):
            raise LabError(f"lab host name {name!r}: use a hostname label (a-z, 0-9, '-', max 63 chars)")
        network.check_ip(ip, f"host {name}")
        self.name = name
        self.ip = ip
        self.network = network
        self.base_image = Path(base_image)
        self.state_dir = Path(state_dir)
        parts = (network.name, name)
        self.netns = short_name("n", *parts)
        self.veth = short_name("v", *parts)
        self.machine = short_name("m", *parts)
        self.cgroup = short_name("c", *parts)
        self.overlay = short_name("o", *parts)
        self.partition_table = short_name("p", *parts)
        self.upper = self.state_dir / "upper"
        self.work = self.state_dir / "work"
        self.merged = self.state_dir / "merged"
        self.console_log = self.state_dir / "console.log"
        self._stop_file = self.state_dir / "stop"
        self._pid_file = self.state_dir / "nspawn.pid"
        self._proc: subprocess.Popen[bytes] | None = None
        # Exit status of the last nspawn run: 0 after a clean guest power-off, non-zero after a hard one.
        self.last_exit: int | None = None
        self._booted = False
        self._cut = False
        self._peers: set[str] = set()
        #: host directory -> guest mount point (the lab's stand-in for attached volumes)
        self.binds: dict[Path, str] = {}
        #: `ssh-ed25519 <base64>` the host must present: the key the program generated for it (its `hostKeys`
        #: output, installed by cloud-init). None: pin what the container holds (LabHost tests on their own).
        self.pinned_host_key: str | None = None

    def __repr__(self) -> str:
        return f"LabHost({self.name!r}, {self.ip!r})"

    @property
    def kernel_names(self) -> tuple[str, ...]:
        return (self.netns, self.veth, self.machine, self.cgroup, self.overlay, self.partition_table)

    # ---- lifecycle ---------------------------------------------------------------------------------

    def boot(self, user_data: str, meta_data: dict | None = None,
             extra_files: dict[str, bytes] | None = None) -> None:
        """First boot of a fresh instance: new disk, NoCloud seed, then start systemd.

        ``meta_data`` entries override the generated ``instance-id``/``local-hostname``;
        ``extra_files`` maps absolute guest paths to contents written into the disk before boot.
        Returns once the container's init runs; use wait_ready() for sshd and cloud-init.
        """
        if self._booted:
            raise LabError(f"host {self.name}: already booted; use power_on() or destroy() first")
        if not (self.base_image / "etc/os-release").is_file():
            raise LabError(f"host {self.name}: base image {self.base_image} is not a rootfs; "
                           "build it with lab.image.build_base_image()")
        if not self.network.claims.held:
            raise LabError(f"host {self.name}: lab network {self.network.name} not created; call create() first")
        if self.upper.exists() and any(self.upper.iterdir()):
            raise LabError(f"host {self.name}: {self.upper} holds a previous host's disk; "
                           "destroy() that host or use a fresh state_dir")
        for guest_path in extra_files or {}:
            p = PurePosixPath(guest_path)
            if not p.is_absolute() or ".." in p.parts or p == PurePosixPath("/"):
                raise LabError(f"host {self.name}: extra_files path {guest_path!r} must be an absolute file path "
                               "without '..'")
        self.network.reserve(self.ip, f"host {self.name}", self)
        self.network.claims.add(*self.kernel_names)
        self._booted = True
        try:
            self._plumb()
            self._write_seed(user_data, meta_data or {}, extra_files or {})
            self._start()
        except BaseException:
            self.destroy()
            raise

    def power_on(self) -> None:
        """Start the host again on the same disk (cloud-init's per-instance modules do not re-run)."""
        if not self._booted:
            raise LabError(f"host {self.name}: never booted; call boot() first")
        if self.is_running():
            return
        self._reap_launcher()
        if not os.path.ismount(self.merged):
            self._mount_overlay()
        if not self._cut:
            run(["ip", "link", "set", self.veth, "up"])
        self._start()

    def power_off(self, hard: bool = True) -> None:
        """Pull the plug (hard) or ask systemd to power off, falling back to the plug after 60 s.

        A hard power-off SIGKILLs the container's init (killing nspawn alone leaves the guest
        running), then flushes the guest's address so the kernel stops answering for it: no ghost
        host that still replies to ping and refuses TCP.
        """
        if not self._booted:
            return
        self._stop_file.touch()
        if not hard and self.is_running():
            self.exec(["systemctl", "poweroff"], timeout=15)
            self._wait_launcher_exit(60)
        if Path(f"/sys/class/net/{self.veth}").exists():
            run(["ip", "link", "set", self.veth, "down"])
        pid1 = self.leader_pid()
        if pid1 is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGKILL)
        if not self._wait_launcher_exit(15):
            cgroups.kill_all(self._cgroup_dirs())
            self._wait_launcher_exit(10)
        cgroups.kill_all(self._cgroup_dirs())
        self._reap_launcher()
        if (NETNS_DIR / self.netns).exists():
            run(["ip", "-n", self.netns, "addr", "flush", "dev", "eth0"], check=False)
        shutil.rmtree(PROPAGATE_DIR / self.machine, ignore_errors=True)
        self._pid_file.unlink(missing_ok=True)

    def reboot(self, timeout: float = 60.0) -> None:
        """Reboot from inside (systemctl reboot); returns once the new init runs, not when ready."""
        old = self.leader_pid()
        if old is None:
            raise LabError(f"host {self.name}: not running; power_on() it first")
        self.exec(["systemctl", "reboot"], timeout=15)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.leader_pid()
            if pid is not None and pid != old:
                return
            if self._proc is not None and self._proc.poll() is not None:
                raise LabError(f"host {self.name}: nspawn exited {self._proc.returncode} instead of "
                               f"rebooting; console: {self._console_tail()}")
            time.sleep(0.1)
        raise LabError(f"host {self.name}: did not come back from reboot within {timeout:g}s; "
                       f"console: {self._console_tail()}")

    def destroy(self, keep_disk: bool = False) -> None:
        """Remove every trace of the host (idempotent); ``keep_disk`` keeps upper/ for inspection.

        Best effort: every step runs even if an earlier one failed, then the first error is raised,
        so one stuck object never strands the others.
        """
        errors: list[Exception] = []

        def step(fn, *args) -> None:
            try:
                fn(*args)
            except (LabError, OSError) as exc:
                errors.append(exc)

        step(self.power_off, True)
        step(self.heal)
        if os.path.ismount(self.merged):
            step(self._umount)
        step(delete_link, self.veth)
        step(delete_netns, self.netns)
        step(cgroups.remove, self._cgroup_dirs())
        shutil.rmtree(PROPAGATE_DIR / self.machine, ignore_errors=True)
        if not keep_disk and not os.path.ismount(self.merged):
            for d in (self.merged, self.work, self.upper):
                shutil.rmtree(d, ignore_errors=True)
        step(self._forget_host_key)
        if not errors:
            if self.network.claims.held:
                self.network.claims.discard(*self.kernel_names)
            self.network.release(self.ip, f"host {self.name}")
            self._booted = False
            self._cut = False
        if errors:
            raise LabError(f"host {self.name}: destroy incomplete ({errors[0]}); retry destroy() or "
                           "run lab.reaper.reap() after this process exits") from errors[0]

    def is_running(self) -> bool:
        """Whether the container's init is alive (not whether it is ready)."""
        return self._proc is not None and self._proc.poll() is None and self.leader_pid() is not None

    def leader_pid(self) -> int | None:
        """The container's PID 1 as seen from the operator (a child of the nspawn process)."""
        try:
            nspawn = int(self._pid_file.read_text().strip())
            children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        for child in children:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and len(line.split()) >= 3 and line.split()[-1] == "1":
                        return int(child)
        return None

    # ---- access --------------------------------------------------------------------------------------

    def wait_ready(self, ssh_user: str, key_path: Path, timeout: float = 120.0) -> str:
        """Wait until port 22 answers and ``cloud-init status --wait`` returns; return the status line."""
        deadline = time.monotonic() + timeout
        self._require_bridge()
        while not tcp_port_open(self.ip, 22, timeout=1.0):
            if self._proc is None or self._proc.poll() is not None:
                rc = None if self._proc is None else self._proc.returncode
                raise LabError(f"host {self.name}: not running (nspawn exit {rc}) while waiting for sshd; "
                               f"console: {self._console_tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"host {self.name}: port 22 on {self.ip} silent after {timeout:g}s; "
                               f"console: {self._console_tail()}")
            time.sleep(0.2)
        self.record_host_key()
        while True:
            left = max(5.0, deadline - time.monotonic())
            proc = self.ssh(["cloud-init", "status", "--wait"], user=ssh_user, key_path=key_path, timeout=left)
            if proc.returncode == 255 and classify_ssh_failure(proc.stderr.decode(errors="replace")) == "hostkey":
                raise LabError(f"host {self.name}: presents an SSH host key other than the one pinned in "
                               f"{self.network.known_hosts}; nothing was sent to it (rebuilt or impostor?)")
            if proc.returncode != 255 or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # sshd up, but e.g. the user's key not yet in place
        lines = proc.stdout.decode(errors="replace").strip().splitlines()
        status = lines[-1].strip(". ") if lines else ""
        if proc.returncode != 0 or status != "status: done":
            why = status or proc.stderr.decode(errors="replace").strip()[-300:]
            raise LabError(f"host {self.name}: cloud-init not done ({why}, rc {proc.returncode}); "
                           f"{self._cloud_init_tail()}")
        return status

    def record_host_key(self) -> None:
        """Pin the host's ed25519 key: the program's key for it when known (`pinned_host_key`; the host must
        then present exactly that key, which proves cloud-init installed it), else read through the container
        (no trust-on-first-use over the net)."""
        if self.pinned_host_key:
            fields = self.pinned_host_key.split()
            self._rewrite_known_hosts(f"{self.ip} {fields[0]} {fields[1]}")
            return
        proc = self.exec(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"], timeout=15)
        fields = proc.stdout.decode(errors="replace").split()
        if proc.returncode != 0 or len(fields) < 2 or fields[0] != "ssh-ed25519":
            raise LabError(f"host {self.name}: no ed25519 host key yet (cloud-init's ssh module not run?)")
        self._rewrite_known_hosts(f"{self.ip} {fields[0]} {fields[1]}")

    def _forget_host_key(self) -> None:
        if self.network.known_hosts.exists():
            self._rewrite_known_hosts(None)

    def _rewrite_known_hosts(self, line: str | None) -> None:
        """Replace this IP's entry (a destroyed host's key must not vouch for the next one on the IP)."""
        kh = self.network.known_hosts
        kh.parent.mkdir(parents=True, exist_ok=True)
        with open(kh, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            keep = [ln for ln in f.read().splitlines() if ln and ln.split()[0] != self.ip]
            if line is not None:
                keep.append(line)
            f.seek(0)
            f.truncate()
            f.write("".join(f"{ln}\n" for ln in keep))

    def ssh_argv(self, user: str, key_path: Path, connect_timeout: float = 5.0) -> list[str]:
        """The OpenSSH client invocation (without the command) that reaches this host safely."""
        return ["ssh", "-F", "/dev/null", "-i", str(key_path), "-l", user,
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(connect_timeout))}",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.network.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "PasswordAuthentication=no",
                "-o", "KbdInteractiveAuthentication=no", "-o", "ControlMaster=no", "-o", "ControlPath=none",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
                self.ip]

    def ssh(self, cmd: str | Sequence[str], *, user: str, key_path: Path, input: bytes | None = None,
            timeout: float = 60, check: bool = False,
            connect_timeout: float = 5.0) -> subprocess.CompletedProcess[bytes]:
        """Run a command over SSH; rc 255 means SSH itself failed (host down, network cut, auth)."""
        self._require_bridge()
        if not self._has_pinned_key() and self.is_running():
            self.record_host_key()
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        argv = [*self.ssh_argv(user, key_path, connect_timeout), "--", remote]
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, check=False,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"host {self.name}: ssh {remote!r} timed out after {timeout:g}s") from exc
        if check and proc.returncode != 0:
            raise LabError(f"host {self.name}: ssh {remote!r} exit {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        return proc

    def exec(self, argv: Sequence[str], input: bytes | None = None, timeout: float = 60,
             check: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside the container (all its namespaces and root), independent of sshd."""
        pid1 = self.leader_pid()
        if pid1 is None:
            raise LabError(f"host {self.name}: not running; cannot exec {argv[0]!r}")
        env_args = [f"{k}={v}" for k, v in GUEST_ENV.items()]
        full = ["nsenter", "-t", str(pid1), "-a", "-r", "-w", "/usr/bin/env", "-i", *env_args, *argv]
        try:
            proc = subprocess.run(full, input=input, capture_output=True, timeout=timeout, check=False,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"host {self.name}: exec {argv[0]!r} timed out after {timeout:g}s") from exc
        if check and proc.returncode != 0:
            raise LabError(f"host {self.name}: exec {shlex.join(argv)!r} exit {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        return proc

    def journal(self, unit: str | None = None) -> str:
        """The guest's journal (all boots), read inside if running, else from the disk."""
        sel = ["-u", unit] if unit else []
        if self.is_running():
            return self.exec(["journalctl", "--no-pager", "-o", "short-iso", *sel]).stdout.decode(
                errors="replace")
        journal_dir = self.merged / "var/log/journal"
        if not journal_dir.is_dir():
            return ""
        return run(["journalctl", "--no-pager", "-o", "short-iso", f"--directory={journal_dir}", *sel],
                   check=False).stdout.decode(errors="replace")

    # ---- faults --------------------------------------------------------------------------------------

    def cut_network(self) -> None:
        """Unplug the cable: the host's veth goes down (SSH then fails with rc 255)."""
        self._cut = True
        if Path(f"/sys/class/net/{self.veth}").exists():
            run(["ip", "link", "set", self.veth, "down"])

    def restore_network(self) -> None:
        self._cut = False
        if self.is_running():
            run(["ip", "link", "set", self.veth, "up"])

    def partition(self, peer_ip: str) -> None:
        """Silently drop IPv4 between this host and ``peer_ip`` (another host, a client or the bridge).

        Rules live in a bridge-family nft table in the operator's netns, matching this host's bridge
        port: the guest cannot see them, and its own ``nftables.service`` (``flush ruleset``) cannot
        undo them. ARP still works, so it looks like a silent partition, not a dead link.
        """
        if peer_ip != self.network.bridge_ip:
            self.network.check_ip(peer_ip, f"host {self.name}: partition peer")
        self._peers.add(peer_ip)
        self._apply_partition()

    def heal(self, peer_ip: str | None = None) -> None:
        """Lift the partition from ``peer_ip``, or all partitions of this host."""
        if peer_ip is None:
            self._peers.clear()
        else:
            self._peers.discard(peer_ip)
        self._apply_partition()

    # ---- internals ---------------------------------------------------------------------------------

    def _apply_partition(self) -> None:
        table = f"table bridge {self.partition_table}"
        script = f"{table}\ndelete {table}\n"
        if self._peers:
            peers = ", ".join(sorted(self._peers))
            v = self.veth
            script += (
                f"{table} {{\n"
                f" chain forward {{ type filter hook forward priority -200; policy accept;\n"
                f"  iifname \"{v}\" ip daddr {{ {peers} }} drop\n"
                f"  oifname \"{v}\" ip saddr {{ {peers} }} drop\n }}\n"
                f" chain input {{ type filter hook input priority -200; policy accept;\n"
                f"  iifname \"{v}\" ip daddr {{ {peers} }} drop\n }}\n"
                f" chain output {{ type filter hook output priority -200; policy accept;\n"
                f"  oifname \"{v}\" ip saddr {{ {peers} }} drop\n }}\n"
                f"}}\n")
        elif not self._table_exists():
            return
        run(["nft", "-f", "-"], input=script.encode())

    def _table_exists(self) -> bool:
        return run(["nft", "list", "table", "bridge", self.partition_table], check=False).returncode == 0

    def _plumb(self) -> None:
        for d in (self.upper, self.work, self.merged):
            d.mkdir(parents=True, exist_ok=True)
        run(["ip", "netns", "add", self.netns])
        make_veth_into_netns(self.veth, self.netns)
        _disable_ipv6(self.veth)
        run(["ip", "link", "set", self.veth, "master", self.network.bridge])
        if not self._cut:
            run(["ip", "link", "set", self.veth, "up"])
        self._mount_overlay()
        cgroups.create(self.cgroup)

    def _mount_overlay(self) -> None:
        opts = f"lowerdir={self.base_image},upperdir={self.upper},workdir={self.work}"
        run(["mount", "-t", "overlay", self.overlay, "-o", opts, str(self.merged)])

    def _umount(self) -> None:
        for _ in range(20):
            if run(["umount", str(self.merged)], check=False).returncode == 0:
                return
            time.sleep(0.2)
        run(["umount", "-l", str(self.merged)])  # last resort: detach; freed when the last user goes

    def _write_seed(self, user_data: str, meta_data: dict, extra_files: dict[str, bytes]) -> None:
        seed = self.merged / "var/lib/cloud/seed/nocloud"
        seed.mkdir(parents=True, exist_ok=True)
        meta = {"instance-id": f"iid-{self.name}-{uuid.uuid4().hex[:12]}", "local-hostname": self.name,
                **meta_data}
        net = {"version": 2, "ethernets": {"eth0": {"addresses": [f"{self.ip}/{self.network.prefixlen}"]}}}
        # JSON is YAML: no YAML dependency, no quoting surprises.
        (seed / "meta-data").write_text(json.dumps(meta, indent=1) + "\n")
        (seed / "network-config").write_text(json.dumps(net, indent=1) + "\n")
        (seed / "user-data").write_text(user_data)
        root = self.merged.resolve()
        for guest_path, data in extra_files.items():
            target = self.merged / PurePosixPath(guest_path).relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.parent.resolve().is_relative_to(root):
                raise LabError(f"host {self.name}: extra_files path {guest_path!r} leaves the guest rootfs "
                               "through an absolute symlink; use the real path")
            if target.is_symlink():
                target.unlink()
            target.write_bytes(data)

    def _nspawn_argv(self) -> list[str]:
        return ["systemd-nspawn", "--quiet", "-D", str(self.merged), "-M", self.machine,
                f"--hostname={self.name}", "--boot", "--register=no", "--keep-unit",
                f"--network-namespace-path={NETNS_DIR / self.netns}", "--capability=CAP_NET_ADMIN",
                "--console=pipe", "--resolv-conf=off", "--timezone=off", "--link-journal=no",
                *(f"--bind={src}:{dst}" for src, dst in sorted(self.binds.items()))]

    def _cgroup_dirs(self) -> list[Path]:
        return cgroups.host_dirs(self.cgroup)

    def _start(self) -> None:
        self._stop_file.unlink(missing_ok=True)
        self._pid_file.unlink(missing_ok=True)
        procs = cgroups.create(self.cgroup)
        env = {"PATH": HOST_PATH, "LANG": "C.UTF-8", "QP_CGROUP_PROCS": " ".join(str(p) for p in procs)}
        with open(self.console_log, "ab") as console:
            self._proc = subprocess.Popen(
                [*cgroups.launcher_prefix(self.cgroup), "sh", "-c", _SUPERVISOR, "qp-lab-launcher",
                 str(self._stop_file), str(self._pid_file), *self._nspawn_argv()],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)  # a Ctrl-C in the test runner must not kill hosts mid-test
        deadline = time.monotonic() + 20
        while self.leader_pid() is None:
            if self._proc.poll() is not None:
                raise LabError(f"host {self.name}: nspawn exited {self._proc.returncode} at start; "
                               f"console: {self._console_tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"host {self.name}: container init did not start in 20s; "
                               f"console: {self._console_tail()}")
            time.sleep(0.05)

    def _wait_launcher_exit(self, timeout: float) -> bool:
        if self._proc is None:
            return True
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _reap_launcher(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self.last_exit = self._proc.returncode
            self._proc = None

    def _require_bridge(self) -> None:
        """Refuse to talk to the host's address without the lab bridge: the packets would follow the
        operator's default route out of the machine instead."""
        if not Path(f"/sys/class/net/{self.network.bridge}").exists():
            raise LabError(f"host {self.name}: lab network {self.network.name} is down (no bridge "
                           f"{self.network.bridge}); create() it first")

    def _has_pinned_key(self) -> bool:
        kh = self.network.known_hosts
        return kh.exists() and any(ln.split()[:1] == [self.ip] for ln in kh.read_text().splitlines())

    def _console_tail(self, lines: int = 8) -> str:
        with contextlib.suppress(FileNotFoundError):
            tail = self.console_log.read_bytes()[-4000:].decode(errors="replace").strip().splitlines()
            return " | ".join(tail[-lines:]) or "(empty)"
        return "(no console log)"

    def _cloud_init_tail(self, lines: int = 12) -> str:
        """Why cloud-init failed: its own verdict plus the log tail without the host-key noise."""
        detail = ""
        if self.is_running():
            long = self.exec(["cloud-init", "status", "--long"], timeout=30).stdout.decode(errors="replace")
            detail = long.partition("detail:")[2].strip()
        path = self.merged / "var/log/cloud-init-output.log"
        try:
            text = path.read_text(errors="replace")
        except (FileNotFoundError, PermissionError):
            return f"detail: {detail or '?'}; (no cloud-init-output.log)"
        keep, in_keys = [], False
        for ln in text.splitlines():
            if "-----BEGIN SSH HOST KEY" in ln:
                in_keys = True
            if not in_keys and "ci-info:" not in ln and "#####" not in ln and ln.strip():
                keep.append(ln)
            if "-----END SSH HOST KEY" in ln:
                in_keys = False
        return f"detail: {detail or '?'}; cloud-init-output.log tail: {' | '.join(keep[-lines:])}"
