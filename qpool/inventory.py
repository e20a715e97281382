"""Where a stack's hosts are and how to reach them: the inventory `qpool` operates on.

Sources, first match wins:
1. `--inventory FILE` / `QPOOL_INVENTORY`, else the local lab's `<lab root>/<stack>/inventory.json` (lab root:
   `QPOOL_LAB_ROOT`, default /var/lib/quantapool-lab; tests point it at their own directory);
2. the stack's Pulumi outputs (`pulumi stack output --json --show-secrets`) when the Pulumi CLI is present;
3. the Hetzner API: servers labelled `app=quantapool,env=<stack>` (needs `HCLOUD_TOKEN`, `QPOOL_SSH_KEY` and
   `QPOOL_KNOWN_HOSTS` — the known_hosts recorded at bootstrap, from the `hostKeys` stack output).
SSH host keys are always pinned: a host whose key is not in the inventory's known_hosts is not contacted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_init.base import ADMIN_USER
from qpool import secret_files
from qpool.errors import QpoolError

LAB_ROOT_ENV = "QPOOL_LAB_ROOT"
DEFAULT_LAB_ROOT = Path("/var/lib/quantapool-lab")


def lab_root() -> Path:
    """Where `qpool lab up` keeps its state (and an inventory per stack): $QPOOL_LAB_ROOT or the default."""
    return Path(os.environ[LAB_ROOT_ENV]) if os.environ.get(LAB_ROOT_ENV) else DEFAULT_LAB_ROOT


@dataclass(frozen=True)
class HostRecord:
    name: str
    role: str  # primary | backup | monitoring
    pair: str | None
    address: str  # what SSH connects to
    private_ip: str
    server_id: int | None = None


@dataclass(frozen=True)
class Inventory:
    stack: str
    hosts: dict[str, HostRecord]
    ssh_user: str
    ssh_key: Path
    known_hosts: Path
    config_file: Path | None = None
    hcloud_endpoint: str | None = None
    alert_webhook: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def pair_hosts(self, pair: str) -> list[HostRecord]:
        hosts = [h for h in self.hosts.values() if h.pair == pair and h.role in ("primary", "backup")]
        if not hosts:
            raise QpoolError(f"stack {self.stack} has no pair {pair!r}; pairs: {', '.join(self.pairs())}")
        return sorted(hosts, key=lambda h: h.role != "primary")

    def pairs(self) -> list[str]:
        return sorted({h.pair for h in self.hosts.values() if h.pair})

    def monitoring(self) -> HostRecord | None:
        return next((h for h in self.hosts.values() if h.role == "monitoring"), None)


def load_inventory_file(path: Path) -> Inventory:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise QpoolError(f"inventory {path}: cannot read it ({exc}); pass a valid --inventory file") from None
    base = path.parent

    def rel(value: str | None) -> Path | None:
        return None if value is None else (base / value if not os.path.isabs(value) else Path(value))

    try:
        hosts = {name: HostRecord(name=name, role=h["role"], pair=h.get("pair"), address=h["address"],
                                  private_ip=h.get("private_ip", h["address"]), server_id=h.get("server_id"))
                 for name, h in doc["hosts"].items()}
        return Inventory(stack=doc["stack"], hosts=hosts, ssh_user=doc["ssh"]["user"],
                         ssh_key=rel(doc["ssh"]["key"]), known_hosts=rel(doc["ssh"]["known_hosts"]),  # type: ignore[arg-type]
                         config_file=rel(doc.get("config_file")), hcloud_endpoint=doc.get("hcloud_endpoint"),
                         alert_webhook=doc.get("alert_webhook"), extra=doc.get("extra", {}))
    except (KeyError, TypeError) as exc:
        raise QpoolError(f"inventory {path}: missing field {exc}; see README (Operating: inventory)") from None


def _from_pulumi(stack: str) -> Inventory | None:
    """Stack outputs hold the hosts, pinned host keys and the deploy key (a secret output)."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return None
    proc = subprocess.run([pulumi, "stack", "output", "--json", "--show-secrets", "-s", stack],
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise QpoolError(f"`pulumi stack output -s {stack}` failed: "
                         f"{proc.stderr.decode(errors='replace').strip()[:300]}")
    out = json.loads(proc.stdout)
    private = secret_files.private_dir(f"qpool-{stack}-")  # removed when this command ends, however it ends
    key = secret_files.write_private(private, "deploy_ed25519", out["deployPrivateKey"])
    known = private / "known_hosts"
    lines = []
    hosts = {}
    for name, h in out["hosts"].items():
        hosts[name] = HostRecord(name=name, role=h["role"], pair=h.get("pair"), address=h["publicIpv4"],
                                 private_ip=h["privateIp"], server_id=int(h["serverId"]))
        host_key = out.get("hostKeys", {}).get(name)
        if host_key:
            lines.append(f"{h['publicIpv4']} {' '.join(host_key.split()[:2])}")
    known.write_text("\n".join(lines) + "\n")
    return Inventory(stack=stack, hosts=hosts, ssh_user=ADMIN_USER, ssh_key=key, known_hosts=known)


def _from_hetzner(stack: str) -> Inventory | None:
    """Servers labelled app=quantapool,env=<stack>: works from any operator machine with the token, the deploy
    key (QPOOL_SSH_KEY) and the host keys recorded at bootstrap (QPOOL_KNOWN_HOSTS, from the `hostKeys` output)."""
    key, known = os.environ.get("QPOOL_SSH_KEY"), os.environ.get("QPOOL_KNOWN_HOSTS")
    if not (os.environ.get("HCLOUD_TOKEN") and key and known):
        return None
    from qpool.hetzner import find_stack_servers, make_client

    servers = find_stack_servers(make_client(), app="quantapool", env=stack)
    hosts = {}
    for info in servers:
        role = info.labels.get("role")
        if role not in ("primary", "backup", "monitoring") or not info.public_ipv4:
            continue
        hosts[info.name] = HostRecord(name=info.name, role=role, pair=info.labels.get("pair"),
                                      address=info.public_ipv4,
                                      private_ip=info.private_ips[0] if info.private_ips else info.public_ipv4,
                                      server_id=info.id)
    if not hosts:
        raise QpoolError(f"no Hetzner servers labelled app=quantapool,env={stack}; check HCLOUD_TOKEN's project")
    return Inventory(stack=stack, hosts=hosts, ssh_user=ADMIN_USER, ssh_key=Path(key), known_hosts=Path(known))


def resolve_inventory(stack: str, inventory: Path | None = None) -> Inventory:
    path = inventory or (Path(os.environ["QPOOL_INVENTORY"]) if os.environ.get("QPOOL_INVENTORY") else None)
    if path is None:
        lab = lab_root() / stack / "inventory.json"
        if lab.exists():
            path = lab
    if path is not None:
        inv = load_inventory_file(path)
        if inv.stack != stack:
            raise QpoolError(f"inventory {path} is for stack {inv.stack}, not {stack}")
        return inv
    inv = _from_pulumi(stack) or _from_hetzner(stack)
    if inv is not None:
        return inv
    raise QpoolError(f"no inventory for stack {stack}: pass --inventory FILE, install the Pulumi CLI and log in so "
                     "qpool can read the stack outputs, or export HCLOUD_TOKEN, QPOOL_SSH_KEY and QPOOL_KNOWN_HOSTS")
