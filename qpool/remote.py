"""SSH to stack hosts with pinned host keys, and the calls to each key host's `qp-validator-ctl`.

Unreachable and "host key changed" are different answers: an unreachable primary may be fenced; a host
whose key changed is never treated as unreachable (it may be an impostor or a rebuilt machine), and the
operation stops with a clear message instead.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

from cloud_init.host_tools import CTL_PATH as CTL
from qpool.errors import QpoolError
from qpool.inventory import HostRecord, Inventory
from qpool.reachability import classify_ssh_failure
from qpool.replicas import one_line_cause


class Unreachable(QpoolError):
    """SSH could not reach the host (down, network cut, powered off)."""


class HostKeyMismatch(QpoolError):
    """The host answered with a key that is not the pinned one."""


class AuthFailure(QpoolError):
    """The host answered but refused our key (wrong or unauthorised deploy key): an error, never "unreachable"."""


class Refused(QpoolError):
    """The host refused a step because a local precondition does not hold; nothing changed there."""


@dataclass(frozen=True)
class RemoteResult:
    rc: int
    stdout: bytes
    stderr: bytes


#: Where every tool the deploy identity may run as root lives (cloud_init/base.py deploy_sudo_commands).
DEPLOY_TOOL_DIR = "/usr/local/sbin"


def deploy_command_problem(command: str) -> str | None:
    """Why `command` is not a single `sudo /usr/local/sbin/qp-<tool> ARGS...` call, or None if it is.

    The deploy user's sudo reaches only the root-owned qp-* tools; a command that is anything else (a
    shell pipeline, `sudo sh -c`, `sudo cat`, a plain `curl`) would be refused by sudo on the host or run
    unprivileged with a shell, so qpool never sends one (Ssh.run checks every command)."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        return f"unparsable ({exc})"
    if shlex.join(words) != command:
        # Every word quoted as shlex.join quotes it: no pipe, list, redirection, expansion or glob is left.
        return "not one quoted argument list (shell syntax outside quotes)"
    if len(words) < 2 or words[0] != "sudo":
        return "does not start with sudo"
    tool = words[1]
    if not (tool.startswith(f"{DEPLOY_TOOL_DIR}/qp-") and "/" not in tool[len(DEPLOY_TOOL_DIR) + 1:]):
        return f"runs {tool!r}, not a {DEPLOY_TOOL_DIR}/qp-* tool"
    return None


def ctl_command(*args: str) -> str:
    """The remote command line of one qp-validator-ctl call: the deploy identity's sudo reaches only the
    root-owned qp-* tools by absolute path (cloud_init/base.py DEPLOY_SUDOERS), never a shell."""
    return shlex.join(["sudo", CTL, *args])


class Ssh:
    def __init__(self, inventory: Inventory, connect_timeout: float = 5.0) -> None:
        self.inv = inventory
        self.connect_timeout = connect_timeout

    def argv(self, host: HostRecord) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-i", str(self.inv.ssh_key), "-l", self.inv.ssh_user,
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.connect_timeout)}",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.inv.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "PasswordAuthentication=no",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
                host.address]

    def _guard_lab_route(self, host: HostRecord) -> None:
        """A lab inventory may only ever reach its own bridge: never let a lab address leak to a real route."""
        bridge = self.inv.extra.get("lab_bridge")
        if not bridge:
            return
        proc = subprocess.run(["ip", "-o", "route", "get", host.address], capture_output=True, timeout=10)
        words = proc.stdout.decode().split()
        dev = words[words.index("dev") + 1] if "dev" in words else None
        if proc.returncode != 0 or dev != bridge:
            raise Unreachable(f"{host.name} ({host.address}): the lab bridge {bridge} is gone (route via {dev}); "
                              "refusing to send lab traffic anywhere else")

    def run(self, host: HostRecord, command: str, *, input: bytes | None = None, timeout: float = 120) -> RemoteResult:
        problem = deploy_command_problem(command)
        if problem is not None:  # a programming error: never reaches the host
            raise QpoolError(f"refusing to send {command[:80]!r} to {host.name}: {problem}; the deploy identity "
                             f"runs only `sudo {DEPLOY_TOOL_DIR}/qp-*` tools")
        self._guard_lab_route(host)
        try:
            # Without input, never let ssh read the operator's terminal (it would swallow keystrokes or pipes).
            proc = subprocess.run([*self.argv(host), command], input=input if input is not None else b"",
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Unreachable(f"{host.name} ({host.address}): no answer within {timeout:.0f}s") from None
        if proc.returncode == 255:
            err = proc.stderr.decode(errors="replace")
            kind = classify_ssh_failure(err)
            if kind == "hostkey":
                raise HostKeyMismatch(
                    f"{host.name} ({host.address}): SSH host key does not match the pinned key in "
                    f"{self.inv.known_hosts}; stop and find out why (rebuilt host or impostor) before retrying")
            if kind == "auth":
                raise AuthFailure(
                    f"{host.name} ({host.address}): SSH authentication failed ({err.strip()[-160:]}): the host is up "
                    f"but refuses the deploy key {self.inv.ssh_key}; fix the key/inventory (nothing was changed)")
            raise Unreachable(f"{host.name} ({host.address}): SSH failed ({kind}): "
                              f"{err.strip()[-200:] or 'no answer'}")
        return RemoteResult(proc.returncode, proc.stdout, proc.stderr)

    def tcp_probe(self, host: HostRecord, port: int, timeout: float) -> str | None:
        """TCP connect to `port` on the host: None if it connected, else why not (for qpool.reachability)."""
        self._guard_lab_route(host)
        try:
            with socket.create_connection((host.address, port), timeout=timeout):
                return None
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror or exc}"

    # -- qp-validator-ctl -----------------------------------------------------------------------------
    def ctl(self, host: HostRecord, *args: str, input: bytes | None = None, timeout: float = 180) -> dict[str, Any]:
        res = self.run(host, ctl_command(*args), input=input, timeout=timeout)
        try:
            doc = json.loads(res.stdout.decode() or "null")
        except ValueError:
            raise QpoolError(f"{host.name}: qp-validator-ctl {args[0]} gave no JSON (rc {res.rc}): "
                             f"{one_line_cause(res.stderr.decode(errors='replace'))}") from None
        if res.rc != 0:
            reason = doc.get("error") if isinstance(doc, dict) else None
            why = " ".join(str(reason).split()) if reason else one_line_cause(res.stderr.decode(errors="replace"))
            raise Refused(f"{host.name}: {args[0]} refused: {why}")
        return doc

    def status(self, host: HostRecord) -> dict[str, Any]:
        return self.ctl(host, "status", timeout=60)

    def export_bytes(self, host: HostRecord, *args: str) -> tuple[bytes, str]:
        """Run an export; return the bytes and the sha256 the host computed, after checking they agree."""
        res = self.run(host, ctl_command(*args), timeout=600)
        if res.rc != 0:
            try:
                why = " ".join(str(json.loads(res.stdout).get("error")).split())
            except (ValueError, AttributeError):
                why = one_line_cause(res.stderr.decode(errors="replace"))
            raise Refused(f"{host.name}: {args[0]} refused: {why}")
        claimed = next((line.split("=", 1)[1] for line in res.stderr.decode().splitlines()
                        if line.startswith("sha256=")), None)
        actual = hashlib.sha256(res.stdout).hexdigest()
        if claimed != actual:
            raise QpoolError(f"{host.name}: slashing-protection export arrived with sha256 {actual} but the host "
                             f"computed {claimed}: corrupted in transit; nothing was imported")
        return res.stdout, actual
