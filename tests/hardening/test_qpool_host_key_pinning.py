"""`qpool` pins the host keys the program generated (the `hostKeys` output) and refuses any other key.

Real OpenSSH client (qpool.remote.Ssh), a real SSH server on a loopback address of its own (paramiko,
presenting a chosen ED25519 host key), and a fake `pulumi` on PATH that answers `stack output` like a stack
would. With the pinned key the command runs; with a different key `qpool` stops with a clear message naming
the host, and the server sees neither an authentication attempt nor a command: nothing was sent.
"""

from __future__ import annotations

import io
import json
import os
import random
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qpool.errors import QpoolError
from qpool.inventory import resolve_inventory
from qpool.remote import HostKeyMismatch, Ssh

paramiko = pytest.importorskip("paramiko")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="qpool's ssh connects to port 22: needs root to listen")

HOST = "qp-testnet-p1-primary"


def _keypair() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


@dataclass
class FakeHost:
    """One SSH server on <address>:22 with a given host key; records what clients did."""

    address: str
    host_private: str
    client_public: str
    auth_attempts: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


class _Iface(paramiko.ServerInterface):
    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.exec_event = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.host.auth_attempts.append(username)
        offered = f"{key.get_name()} {key.get_base64()}"
        ok = offered == " ".join(self.host.client_public.split()[:2])
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.host.commands.append(command.decode())
        self.exec_event.set()
        return True


def _serve(listener: socket.socket, host: FakeHost, stop: threading.Event) -> None:
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        transport = paramiko.Transport(conn)
        transport.add_server_key(paramiko.Ed25519Key.from_private_key(io.StringIO(host.host_private)))
        iface = _Iface(host)
        try:
            transport.start_server(server=iface)
            chan = transport.accept(timeout=10)
            if chan is not None and iface.exec_event.wait(10):
                chan.sendall(json.dumps({"ok": True, "host": HOST}).encode())
                chan.send_exit_status(0)
                chan.shutdown_write()
                chan.close()
                for _ in range(100):  # let the client read the status and hang up first
                    if not transport.is_active():
                        break
                    stop.wait(0.05)
        except (paramiko.SSHException, EOFError, OSError):
            pass  # e.g. the client dropped the connection after refusing the host key
        finally:
            transport.close()


@pytest.fixture
def fake_host() -> Iterator[FakeHost]:
    host_private, _host_public = _keypair()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(20):  # an address of its own in 127/8: parallel tests never share one
        address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        try:
            listener.bind((address, 22))
            break
        except OSError:
            continue
    listener.listen(4)
    host = FakeHost(address=address, host_private=host_private, client_public="")
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, host, stop), daemon=True)
    thread.start()
    try:
        yield host
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _fake_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: FakeHost, pinned_public: str | None) -> None:
    deploy_private, deploy_public = _keypair()
    host.client_public = deploy_public
    outputs = {
        "deployPrivateKey": deploy_private,
        "hosts": {HOST: {"role": "primary", "pair": "p1", "publicIpv4": host.address, "privateIp": "10.42.1.11",
                         "serverId": 7}},
        "hostKeys": {HOST: pinned_public} if pinned_public else {},
    }
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(f"#!/bin/sh\ncat {tmp_path / 'outputs.json'}\n")
    pulumi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("QPOOL_INVENTORY", raising=False)


def _public_of(private_openssh: str) -> str:
    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def test_the_pinned_host_key_is_accepted(fake_host: FakeHost, tmp_path: Path, monkeypatch) -> None:
    _fake_pulumi(tmp_path, monkeypatch, fake_host, _public_of(fake_host.host_private) + " comment")
    inv = resolve_inventory("testnet")
    doc = Ssh(inv).status(inv.hosts[HOST])
    assert doc == {"ok": True, "host": HOST}
    assert len(fake_host.commands) == 1 and fake_host.commands[0].endswith("qp-validator-ctl status")


def test_a_different_host_key_stops_qpool_before_anything_is_sent(fake_host: FakeHost, tmp_path: Path,
                                                                  monkeypatch) -> None:
    _other_private, other_public = _keypair()
    _fake_pulumi(tmp_path, monkeypatch, fake_host, other_public)
    inv = resolve_inventory("testnet")
    with pytest.raises(HostKeyMismatch) as raised:
        Ssh(inv).status(inv.hosts[HOST])
    message = str(raised.value)
    assert HOST in message and "does not match the pinned key" in message and "\n" not in message
    assert fake_host.auth_attempts == [] and fake_host.commands == [], "something was sent to the impostor"


def test_a_host_without_a_pinned_key_is_refused_up_front(fake_host: FakeHost, tmp_path: Path,
                                                         monkeypatch) -> None:
    _fake_pulumi(tmp_path, monkeypatch, fake_host, None)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with pytest.raises(QpoolError, match=f"hostKeys has no ssh-ed25519 key for {HOST}; run `pulumi up`"):
        resolve_inventory("testnet")
    assert list(tmp.iterdir()) == [], "the deploy key was written although the command was refused"
    assert fake_host.auth_attempts == [] and fake_host.commands == []


def test_known_hosts_command_prints_the_pinned_keys_without_secrets(tmp_path: Path, monkeypatch) -> None:
    """`qpool known-hosts` (for QPOOL_KNOWN_HOSTS) asks Pulumi for the public outputs only."""
    from click.testing import CliRunner

    from qpool.cli import main

    _private, public = _keypair()
    outputs = {"hosts": {HOST: {"role": "primary", "pair": "p1", "publicIpv4": "198.51.100.7",
                                "privateIp": "10.42.1.11", "serverId": 7}},
               "hostKeys": {HOST: public}}
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pulumi = bin_dir / "pulumi"
    # answers only without --show-secrets: the command must not ask for secrets
    pulumi.write_text(f"#!/bin/sh\ncase \"$*\" in *--show-secrets*) exit 9;; esac\ncat {tmp_path / 'outputs.json'}\n")
    pulumi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = CliRunner().invoke(main, ["known-hosts", "--stack", "testnet"])
    assert result.exit_code == 0, result.output
    assert result.output == f"198.51.100.7 {' '.join(public.split()[:2])}\n"
