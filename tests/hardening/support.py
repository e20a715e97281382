"""Rendered hosts of the repository's testnet stack, for the SSH and firewall hardening tests."""

from __future__ import annotations

from cloud_init import HostRenderInputs
from cloud_init.base import SSHD_DROPIN, ssh_access_bundle
from cloud_init.nftables import key_host_ruleset
from core.config import HostSpec
from qpool.stacks import load_stack

DEPLOY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeployKeyForTestsOnly0000000000000000000 pulumi-deploy"


def stack_inputs() -> list[HostRenderInputs]:
    cfg = load_stack("testnet").config
    return [HostRenderInputs(config=cfg, host=host, deploy_public_key=DEPLOY_KEY, volume_device=None)
            for host in cfg.hosts()]


def host_of_role(role: str) -> HostRenderInputs:
    return next(i for i in stack_inputs() if i.host.role == role)


def sshd_dropin(inputs: HostRenderInputs) -> str:
    """The drop-in the ssh-access bundle installs (user-data's first-boot copy is the same text)."""
    return next(f.content for f in ssh_access_bundle(inputs).files if f.path == SSHD_DROPIN)


def spec(inputs: HostRenderInputs) -> HostSpec:
    return inputs.host


__all__ = ["host_of_role", "key_host_ruleset", "spec", "sshd_dropin", "stack_inputs"]
