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

from cloud_init.base import ADMIN_USER
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

    @property
    def inventory_path(self) -> Path:
        return self.dep.state_dir / "inventory.json"

    def start(self) -> LabSession:
        self.api = FakeHetzner(self.token)
        endpoint = self.api.start()
        for spec in self.dep.config.hosts():
            labels = {"app": APP_LABEL, "env": self.dep.stack, "role": spec.role}
            if spec.pair:
                labels["pair"] = spec.pair
            self.server_ids[spec.name] = self.api.add_server(
                spec.name, labels, public_ipv4=spec.private_ip, private_ip=spec.private_ip,
                backend=LabHostPower(self.dep.hosts[spec.name]))
        config_copy = self.dep.state_dir / f"Pulumi.{self.dep.stack}.yaml"
        if not config_copy.exists():
            shutil.copyfile(self.dep.config_source, config_copy)
        token_file = self.dep.state_dir / "hcloud_token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        inventory: dict[str, Any] = {
            "stack": self.dep.stack,
            "ssh": {"user": ADMIN_USER, "key": str(self.dep.deploy_key),
                    "known_hosts": str(self.dep.network.known_hosts)},
            "hosts": {spec.name: {"role": spec.role, "pair": spec.pair, "address": spec.private_ip,
                                  "private_ip": spec.private_ip, "server_id": self.server_ids[spec.name]}
                      for spec in self.dep.config.hosts()},
            "config_file": str(config_copy),
            "hcloud_endpoint": endpoint,
            "extra": {"lab_bridge": self.dep.network.bridge, "hcloud_token_file": str(token_file),
                      "journal_dir": str(self.dep.state_dir / "qpool-state")},
        }
        for host in self.dep.hosts.values():
            with contextlib.suppress(Exception):
                host.record_host_key()
        self.inventory_path.write_text(json.dumps(inventory, indent=2) + "\n")
        return self

    def close(self, destroy: bool = True) -> None:
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.stop()
            self.api = None
        if destroy:
            teardown(self.dep)
