"""Wires validated config into components and exports what operators and `qpool` need.

Validation runs first and stops the program before any resource is registered, so bad config never
leaves a half-applied stack.
"""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud
import pulumi_tls as tls

from components.config import APP_LABEL, ConfigError
from components.key_host import BackupNode, KeyHostArgs, ValidatorNode
from components.monitoring_server import MonitoringServer, MonitoringServerArgs
from components.network import Network, NetworkArgs
from components.pulumi_config import StackSecrets, read_stack_config
from components.validator_keys import host_key_tars_b64


def _validator_keys(secrets: StackSecrets, pairs: list[str]) -> dict[str, pulumi.Output[str]]:
    """Per pair, the keys its two hosts import (each pair its own keys; see validator_keys.py)."""
    bundle, passphrase = secrets.get("validatorKeys"), secrets.get("validatorKeysPassphrase")
    if bundle is None or passphrase is None:
        return {}
    tars = pulumi.Output.all(bundle, passphrase).apply(lambda v: host_key_tars_b64(v[0], v[1], pairs))
    return {pair: pulumi.Output.secret(tars.apply(lambda t, p=pair: t[p])) for pair in pairs}


def build_stack() -> None:
    try:
        cfg, secrets = read_stack_config()
    except ConfigError as exc:
        for issue in exc.issues:
            pulumi.log.error(str(issue))
        raise pulumi.RunError(f"stack config has {len(exc.issues)} problem(s); nothing was changed") from None

    env = cfg.environment
    network = Network("qp", NetworkArgs(config=cfg))

    # The deploy key lets `pulumi up` bootstrap hosts over SSH; it is registered with Hetzner as well so
    # the rescue console can use it. Operators' own keys come from config.
    deploy_key = tls.PrivateKey("qp-deploy-key", algorithm="ED25519",
                                opts=pulumi.ResourceOptions(additional_secret_outputs=["privateKeyOpenssh",
                                                                                       "privateKeyPem"]))
    deploy_private = pulumi.Output.secret(deploy_key.private_key_openssh)
    labels = {"app": APP_LABEL, "env": env, "role": "access"}
    ssh_keys = [hcloud.SshKey("qp-deploy-sshkey", name=f"qp-{env}-deploy", public_key=deploy_key.public_key_openssh,
                              labels=labels)]
    ssh_keys += [hcloud.SshKey(f"qp-operator-{i}", name=f"qp-{env}-operator-{i}", public_key=key, labels=labels)
                 for i, key in enumerate(cfg.operator_ssh_keys)]
    ssh_key_ids = [k.id for k in ssh_keys]

    # Ships slashing-protection backups; receivers accept it only for their forced `receive-backup` command.
    ship_key = tls.PrivateKey("qp-backup-ship-key", algorithm="ED25519",
                              opts=pulumi.ResourceOptions(additional_secret_outputs=["privateKeyOpenssh",
                                                                                     "privateKeyPem"]))
    ship_private = pulumi.Output.secret(ship_key.private_key_openssh)

    keys_tars = _validator_keys(secrets, [p.name for p in cfg.validator_pairs])
    key_hosts = {}
    for host in cfg.key_hosts():
        node_class = ValidatorNode if host.role == "primary" else BackupNode
        key_hosts[host.name] = node_class(host.name, KeyHostArgs(
            config=cfg, host=host, network=network, ssh_key_ids=ssh_key_ids,
            deploy_public_key=deploy_key.public_key_openssh, deploy_private_key=deploy_private,
            ship_public_key=ship_key.public_key_openssh, ship_private_key=ship_private,
            validator_keys_tar_b64=keys_tars.get(host.pair or "")))
    monitoring = MonitoringServer(cfg.monitoring_host().name, MonitoringServerArgs(
        config=cfg, network=network, secrets=secrets, ssh_key_ids=ssh_key_ids,
        deploy_public_key=deploy_key.public_key_openssh, deploy_private_key=deploy_private,
        ship_public_key=ship_key.public_key_openssh))

    pulumi.export("environment", cfg.environment)
    pulumi.export("networkId", network.network.id)
    servers = {**{name: node.server for name, node in key_hosts.items()},
               cfg.monitoring_host().name: monitoring.server}
    pulumi.export("hosts", {h.name: {"role": h.role, "pair": h.pair, "privateIp": h.private_ip,
                                     "publicIpv4": servers[h.name].ipv4_address, "serverId": servers[h.name].id}
                            for h in cfg.hosts()})
    # Recorded at first contact; qpool pins them (the monitoring host too: failover alerts and backups use it).
    pulumi.export("hostKeys", {**{name: node.host_key for name, node in key_hosts.items()},
                               cfg.monitoring_host().name: monitoring.host_key})
    pulumi.export("grafanaCaCert", monitoring.grafana_ca_cert)
    pulumi.export("grafanaUrl", monitoring.grafana_url)
    pulumi.export("grafanaAdminPassword", monitoring.grafana_admin_password)
    pulumi.export("deployPrivateKey", deploy_private)
    pulumi.export("activeSigners", {p.name: f"qp-{cfg.environment}-{p.name}-{p.active}"
                                    for p in cfg.validator_pairs})
