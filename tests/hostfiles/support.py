"""Shared helpers for the host-file tests: every (profile, role, volume) variant of a key host, rendered.

Configs: the real testnet stack (gqrl) and a gzond variant built from the same raw YAML, both carrying
canaries: secret config keys set (encrypted form) to distinct strings that must never reach user-data, a
graffiti that needs systemd quoting, bootstrap records and a checkpoint URL, so optional flags render.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cloud_init import HostRenderInputs
from cloud_init.base import decoded_write_files, host_bundles
from cloud_init.key_host import key_host_cloud_config, render_key_host_user_data
from core.config import StackConfig, load_stack_config
from qpool.stacks import load_stack

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeployKeyForTestsOnly0000000000000000000 pulumi-deploy"
VOLUME = "/dev/disk/by-id/scsi-0HC_Volume_31337"
#: secret config keys -> canary values; they enter the config only in encrypted form ({secure: ...})
CANARIES = {
    "discordWebhookUrl": "https://discord.example/api/webhooks/CANARY-discord-5f1e",
    "telegramBotToken": "CANARY-telegram-77aa:tok",
    "pagerdutyRoutingKey": "CANARY-pagerduty-0c3d",
    "validatorKeys": "CANARY-validator-keys-b64-9e9e",
    "validatorKeysPassphrase": "CANARY-passphrase-4242",
}
GRAFFITI = 'qp 50% $HOME "x"'
BOOTNODES = {
    "gzond": ["enr:-MS4QHXYrd6dpqbtJUzM5MntcOanZNUCt6bAcgZB1p3LMjrfeyz6U0X-jiBsK9UyEFXTvAnZ7KBkmNkcMT6DnkFH5-1ABh",
              "enr:-MS4QGcHBZAnpu6qvVKYA_JNAAH9uQJLc8S3Bv8bs_y3yk7uTjPbyMd9xPG4PBoKZdbdBA1Ovv8e2dvVBvKPAg1c3uxrB"],
    "gqrl": ["qnr:-MS4QHXYrd6dpqbtJUzM5MntcOanZNUCt6bAcgZB1p3LMjrfeyz6U0X-jiBsK9UyEFXTvAnZ7KBkmNkcMT6DnkFH5-1ABh"],
}


def _raw_testnet() -> dict:
    return copy.deepcopy(load_stack("testnet").raw)


def make_config(profile: str, *, ssh_cidrs: list[str] | None = None, doppelganger: bool = True,
                checkpoint: bool = True) -> StackConfig:
    raw = _raw_testnet()
    clients = raw["clients"]
    if profile == "gzond":
        clients["profile"] = "gzond"
        clients["chainId"] = 32382
        for name in ("execution", "beacon", "validator"):
            clients[name]["version"] = "v0.2.2"
        clients["execution"]["url"] = "https://releases.quantapool.example/clients/gzond-{version}-linux-amd64"
        for pair in raw["validatorPairs"]:
            pair["feeRecipient"] = "Z" + pair["feeRecipient"][1:]
        raw["poolContracts"] = {k: ("Z" + v[1:] if isinstance(v, str) else v)
                                for k, v in raw["poolContracts"].items()}
    clients["beaconBootstrapNodes"] = BOOTNODES[profile]
    if checkpoint:
        clients["checkpointSyncUrl"] = "https://checkpoint.example/qp%20sync"
    for pair in raw["validatorPairs"]:
        pair["graffiti"] = GRAFFITI
        pair["doppelganger"] = doppelganger
    if ssh_cidrs is not None:
        raw["network"]["sshAllowedCidrs"] = ssh_cidrs
    for key, value in CANARIES.items():
        raw[key] = {"secure": value}
    return load_stack_config(raw)


@dataclass(frozen=True)
class Rendered:
    profile: str
    role: str
    volume: bool
    inputs: HostRenderInputs
    user_data: str
    doc: dict
    files: dict[str, str]  # decoded write_files: path -> content
    bundles: dict[str, str]  # the base bundles' files (firewall, ssh-access, base): path -> content

    @property
    def id(self) -> str:
        return f"{self.profile}-{self.role}-{'volume' if self.volume else 'lab'}"


def render_variant(profile: str, role: str, volume: bool, cfg: StackConfig | None = None) -> Rendered:
    cfg = cfg or make_config(profile)
    host = next(h for h in cfg.key_hosts() if h.role == role)
    inputs = HostRenderInputs(cfg, host, DEPLOY_KEY, VOLUME if volume else None)
    user_data = render_key_host_user_data(inputs)
    doc = yaml.safe_load(user_data)
    assert doc == yaml.safe_load(render_key_host_user_data(inputs))
    assert key_host_cloud_config(inputs)["hostname"] == host.name
    bundled = {f.path: f.content for b in host_bundles(inputs) for f in b.files}
    return Rendered(profile, role, volume, inputs, user_data, doc, decoded_write_files(doc), bundled)


VARIANTS = [(p, r, v) for p in ("gzond", "gqrl") for r in ("primary", "backup") for v in (True, False)]


def need_tool(name: str) -> str:
    """Path of a Debian tool, or a loud skip naming the package to install."""
    path = shutil.which(name)
    if path is None:
        pkg = {"cloud-init": "cloud-init", "systemd-analyze": "systemd", "shellcheck": "shellcheck",
               "nft": "nftables", "apt-config": "apt", "unshare": "util-linux"}.get(name, name)
        pytest.skip(f"REAL TOOL MISSING: {name} not on PATH (apt-get install {pkg}); this check did not run")
    return path
