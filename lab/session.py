"""A running lab: the deployment plus the services only the lab has (the fake Hetzner API), and the
inventory that lets every `qpool` command operate on it exactly as on a real stack.

The process that owns a session owns the hosts: they live while it lives (`qpool lab up` stays in the
foreground, or detaches into the background, until `qpool lab down`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_init.base import DEPLOY_USER
from lab.deploy import LabDeployment, teardown
from lab.fake_hcloud import FakeHetzner
from lab.hosts import LabHost

APP_LABEL = "quantapool"


class LabHostPower:
    """Wires the fake API's power actions to a real lab host: a fence really kills it."""

    def __init__(self, host: LabHost) -> None:
        self.host = host

    def power_off(self) -> None:
        self.host.power_off(hard=True)

    def power_on(self) -> None:
        self.host.power_on()

    def is_running(self) -> bool:
        return self.host.is_running()


@dataclass
class LabSession:
    dep: LabDeployment
    api: FakeHetzner | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    server_ids: dict[str, int] = field(default_factory=dict)
    endpoint: str = ""

    @property
    def inventory_path(self) -> Path:
        return self.dep.state_dir / "inventory.json"

    def start(self) -> LabSession:
        self.api = FakeHetzner(self.token)
        self.endpoint = self.api.start()
        for spec in self.dep.config.hosts():
            self._add_server(spec.name)
        config_copy = self.dep.state_dir / f"Pulumi.{self.dep.stack}.yaml"
        if not config_copy.exists():
            shutil.copyfile(self.dep.config_source, config_copy)
        token_file = self.dep.state_dir / "hcloud_token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        for host in self.dep.hosts.values():
            with contextlib.suppress(Exception):
                host.record_host_key()
        self.write_inventory()
        return self

    def _add_server(self, name: str) -> None:
        assert self.api is not None
        spec = self.dep.spec(name)
        labels = {"app": APP_LABEL, "env": self.dep.stack, "role": spec.role}
        if spec.pair:
            labels["pair"] = spec.pair
        self.server_ids[spec.name] = self.api.add_server(
            spec.name, labels, public_ipv4=spec.private_ip, private_ip=spec.private_ip,
            backend=LabHostPower(self.dep.hosts[spec.name]))

    def host_added(self, name: str) -> None:
        """A host `lab apply` booted: known to the fake API and the inventory, like a server `pulumi up` adds."""
        if self.api is not None and name not in self.server_ids:
            self._add_server(name)
        self.write_inventory()

    def config_applied(self, config_file: Path) -> None:
        """After `lab apply`: the stack file qpool reads (active hosts, pairs) is the applied one."""
        shutil.copyfile(config_file, self.dep.state_dir / f"Pulumi.{self.dep.stack}.yaml")
        self.write_inventory()

    def write_inventory(self) -> None:
        """The inventory every `qpool` command reads: the hosts of the current config that run in the lab."""
        config_copy = self.dep.state_dir / f"Pulumi.{self.dep.stack}.yaml"
        token_file = self.dep.state_dir / "hcloud_token"
        specs = [s for s in self.dep.config.hosts() if s.name in self.dep.hosts and s.name in self.server_ids]
        inventory: dict[str, Any] = {
            "stack": self.dep.stack,
            "ssh": {"user": DEPLOY_USER, "key": str(self.dep.deploy_key),
                    "known_hosts": str(self.dep.network.known_hosts)},
            "hosts": {spec.name: {"role": spec.role, "pair": spec.pair, "address": spec.private_ip,
                                  "private_ip": spec.private_ip, "server_id": self.server_ids[spec.name]}
                      for spec in specs},
            "config_file": str(config_copy),
            "hcloud_endpoint": self.endpoint,
            "extra": {"lab_bridge": self.dep.network.bridge, "hcloud_token_file": str(token_file),
                      "journal_dir": str(self.dep.state_dir / "qpool-state")},
        }
        tmp = self.inventory_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(inventory, indent=2) + "\n")
        tmp.replace(self.inventory_path)

    def close(self, destroy: bool = True) -> None:
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.stop()
            self.api = None
        if destroy:
            teardown(self.dep)
