"""The server every host role stands on: a data volume, the server with rendered user-data, the attachment.

One implementation for key hosts and the monitoring server, so a host's placement, protection and
`ignore_changes` can never differ between roles by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud

from cloud_init.base import HostRenderInputs
from cloud_init.host_keys import HostKey
from core.config import HostSpec, StackConfig

#: Never re-create a running host because a template or the key list changed.
IGNORE_CHANGES = ["userData", "sshKeys", "image"]
#: A server-type change is a Hetzner resize: the server is powered off. The pair's active host (stack
#: config `active`) would come back locked and the pair would stop signing, so on that host the change is
#: deferred; the standby takes it at once. Path for the signer: `qpool failover`, `pulumi up`, failback
#: (docs/operations.md "Day-2 changes"). `qpool plan` lists the deferral (qpool/review.py).
ACTIVE_HOST_IGNORE_CHANGES = ["serverType"]


def ignore_changes_for(host: HostSpec) -> list[str]:
    return [*IGNORE_CHANGES, *(ACTIVE_HOST_IGNORE_CHANGES if host.active else [])]


def volume_device(volume_id: str) -> str:
    """Hetzner exposes an attached volume under a stable by-id path; the fstab entry uses it."""
    return f"/dev/disk/by-id/scsi-0HC_Volume_{volume_id}"


@dataclass(frozen=True)
class HostServer:
    volume: hcloud.Volume
    server: hcloud.Server
    attachment: hcloud.VolumeAttachment


def create_host_server(parent: pulumi.ComponentResource, name: str, cfg: StackConfig, host: HostSpec, *,
                       volume_suffix: str, volume_gib: int, protect_volume: bool,
                       render_user_data: Callable[[HostRenderInputs], str], firewall_id: pulumi.Input[str],
                       network: hcloud.Network, subnet: hcloud.NetworkSubnet,
                       ssh_key_ids: list[pulumi.Input[str]], deploy_public_key: pulumi.Input[str],
                       protect_server: bool, host_key: pulumi.Output[HostKey],
                       placement_group_id: pulumi.Input[str] | None = None) -> HostServer:
    labels = {**host.labels, "env": cfg.environment}
    volume = hcloud.Volume(
        f"{name}-{volume_suffix}", name=f"{host.name}-{volume_suffix}", size=volume_gib, location=host.location,
        labels=labels, delete_protection=cfg.hetzner.protection,
        opts=pulumi.ResourceOptions(parent=parent, protect=protect_volume))
    # user-data carries the host's SSH host key (components/host_identity.py): a secret Output
    user_data = pulumi.Output.secret(pulumi.Output.all(deploy_public_key, volume.id, host_key).apply(
        lambda v: render_user_data(HostRenderInputs(
            config=cfg, host=host, deploy_public_key=v[0], volume_device=volume_device(v[1]), host_key=v[2]))))
    server = hcloud.Server(
        f"{name}-server", name=host.name, server_type=host.server_type, location=host.location,
        image=cfg.hetzner.image, labels=labels, user_data=user_data, ssh_keys=ssh_key_ids,
        placement_group_id=pulumi.Output.from_input(placement_group_id).apply(int) if placement_group_id else None,
        firewall_ids=[pulumi.Output.from_input(firewall_id).apply(int)],
        # subnet_id pins the attachment to our subnet: with network_id alone the provider attaches to the
        # network's last subnet by ip_range, which is unpredictable once a network has more than one.
        networks=[hcloud.ServerNetworkArgs(network_id=network.id.apply(int), subnet_id=subnet.id,
                                           ip=host.private_ip)],
        public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
        backups=cfg.hetzner.backups, delete_protection=cfg.hetzner.protection,
        rebuild_protection=cfg.hetzner.protection,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[subnet], ignore_changes=ignore_changes_for(host),
                                    protect=protect_server))
    attachment = hcloud.VolumeAttachment(
        f"{name}-{volume_suffix}-attach", server_id=server.id.apply(int), volume_id=volume.id.apply(int),
        automount=False, opts=pulumi.ResourceOptions(parent=parent))
    return HostServer(volume, server, attachment)
