"""`ValidatorNode` (primary) and `BackupNode` (hot standby): one implementation, two roles.

Both hold the pair's keys and run the same synced execution client and beacon node; both have the
validator unit installed and locked. The backup differs only in role (its validator unit is also disabled),
so a failover moves signing between two hosts that were built by the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
import pulumi_random as random
import pulumi_tls as tls

from cloud_init import HostRenderInputs
from cloud_init.bundles import bundle_tar_b64
from cloud_init.host_tools import digest
from cloud_init.key_host import (
    CLIENTS_STEP_COMMAND,
    HEALTH_GATE_SECONDS,
    IMPORT_KEYS,
    START_CLIENTS,
    clients_bundle,
    render_key_host_user_data,
)
from components import bootstrap, host_identity
from components.host_server import create_host_server
from components.network import Network
from core.config import HostSpec, StackConfig


@dataclass(frozen=True)
class KeyHostArgs:
    config: StackConfig
    host: HostSpec
    network: Network
    ssh_key_ids: list[pulumi.Input[str]]
    deploy_public_key: pulumi.Input[str]
    deploy_private_key: pulumi.Input[str]
    #: the hosts allowed to ship backups here: name -> {"address", "public_key"} (host_identity.ship_senders)
    ship_senders: pulumi.Input[dict[str, dict[str, str]]]
    #: THIS host's own shipping key (`qp-backup-ship-key-<host>`), delivered to this host only
    ship_private_key: pulumi.Output[str]
    #: the host's SSH host key (components/host_identity.py) and the known_hosts of its backup targets
    host_key: tls.PrivateKey | None = None
    ship_known_hosts: pulumi.Input[str] = ""
    #: base64 of a tar (keystore-*.json + keystore-password.txt), secret; None: no keys yet
    validator_keys_tar_b64: pulumi.Output[str] | None = None
    #: The pair's STANDBY `clients` step, passed to the ACTIVE host: its own `clients` step (restarts of the
    #: execution client and beacon node) waits until the standby's step, health gate included, succeeded.
    clients_after: pulumi.Resource | None = None


class _KeyHost(pulumi.ComponentResource):
    server: hcloud.Server
    volume: hcloud.Volume
    jwt: random.RandomBytes
    host_key: pulumi.Output[str]
    #: `<host>-bundle-clients`: units, pins and scripts; installs, restarts what changed, health gate.
    clients_step: pulumi.Resource

    def __init__(self, type_name: str, name: str, args: KeyHostArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(type_name, name, None, opts)
        cfg, host = args.config, args.host
        pair = cfg.pair(host.pair or "")
        # Chain data, wallet and slashing-protection DB live on the volume: protected regardless of stack
        # settings, so deleting the stack never silently deletes slashing history (unprotect to tear down).
        # The host's SSH host key exists before the host: user-data installs it, every step verifies it.
        host_key = args.host_key or host_identity.host_ssh_key(name)
        self.host_key = host_identity.public_line(host_key)
        hs = create_host_server(
            self, name, cfg, host, volume_suffix="chain", volume_gib=pair.chain_volume_gib, protect_volume=True,
            render_user_data=render_key_host_user_data, firewall_id=args.network.validator_firewall.id,
            network=args.network.network, subnet=args.network.subnet, ssh_key_ids=args.ssh_key_ids,
            deploy_public_key=args.deploy_public_key, protect_server=cfg.hetzner.protection,
            host_key=host_identity.host_key_of(host_key),
            placement_group_id=args.network.placement_group_id(pair.name))
        self.volume, self.server, attachment = hs.volume, hs.server, hs.attachment

        # Engine API secret shared by this host's execution client and beacon node.
        self.jwt = random.RandomBytes(f"{name}-jwt", length=32,
                                      opts=pulumi.ResourceOptions(parent=self,
                                                                  additional_secret_outputs=["hex", "base64"]))
        jwt_hex = pulumi.Output.secret(self.jwt.hex)

        conn = bootstrap.connection(self.server.ipv4_address, args.deploy_private_key, self.host_key)
        steps = bootstrap.Steps(name, self, conn, self.server.id)
        steps.last = attachment
        steps.wait_ready()
        # The `clients` bundle (cloud_init/key_host.py): before host-env, secrets and keys, whose scripts it
        # carries. Plain, non-secret stdin; re-runs exactly when the bundle changes (or the server is new).
        clients = bundle_tar_b64(clients_bundle(HostRenderInputs(config=cfg, host=host, deploy_public_key="",
                                                                 volume_device=None)))
        # Bounded: installs (downloads) plus at most two restarts and the health gate.
        self.clients_step = steps.add("bundle-clients", CLIENTS_STEP_COMMAND, stdin=clients, triggers=[digest(clients)],
                                      depends_on=[args.clients_after] if args.clients_after is not None else [],
                                      timeout=f"{HEALTH_GATE_SECONDS // 60 + 15}m")
        steps.host_env(self.server.ipv4_address)
        bootstrap.base_bundles(steps, cfg, host, args.deploy_public_key)
        steps.host_tools(cfg, host, args.ship_senders, args.ship_known_hosts)
        steps.secret_file("backup-ship-key", args.ship_private_key)
        steps.secret_file("jwt", jwt_hex)
        if args.validator_keys_tar_b64 is not None:
            keys = args.validator_keys_tar_b64
            # The validator stays locked: qp-import-keys refuses to run unless the lock exists and the
            # validator unit is inactive.
            steps.add("import-keys", f"sudo {IMPORT_KEYS} --base64", stdin=keys, secret=True,
                      triggers=[keys.apply(digest)])
        steps.add("start-clients", f"sudo {START_CLIENTS}")

        self.register_outputs({
            "server_id": self.server.id,
            "ipv4_address": self.server.ipv4_address,
            "private_ip": host.private_ip,
            "host_key": self.host_key,
        })


class ValidatorNode(_KeyHost):
    """The pair's primary: the host stack config names active at creation. Locked until `qpool activate`."""

    def __init__(self, name: str, args: KeyHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("quantapool:infra:ValidatorNode", name, args, opts)


class BackupNode(_KeyHost):
    """The pair's hot standby: same synced clients and keys, validator disabled and locked."""

    def __init__(self, name: str, args: KeyHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("quantapool:infra:BackupNode", name, args, opts)
