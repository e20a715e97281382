"""Wires validated config into components and exports what operators and `qpool` need.

Validation runs first and stops the program before any resource is registered, so bad config never
leaves a half-applied stack: the config model's checks, then `preflight_issues` (what Hetzner would refuse
mid-`up`), all synchronously, never inside an `apply` that waits for an output `pulumi preview` does not know.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Sequence

import pulumi
import pulumi_hcloud as hcloud
import pulumi_tls as tls

from cloud_init import HostRenderInputs
from cloud_init.base import USER_DATA_LIMIT_BYTES
from cloud_init.host_keys import PLACEHOLDER_HOST_KEY
from cloud_init.key_host import render_key_host_user_data
from cloud_init.monitoring import render_monitoring_user_data
from components import host_identity
from components.host_server import volume_device
from components.key_host import BackupNode, KeyHostArgs, ValidatorNode
from components.monitoring_server import MonitoringServer, MonitoringServerArgs
from components.network import Network, NetworkArgs
from components.pulumi_config import (
    StackSecrets,
    keys_passphrase,
    read_stack_config,
    refuse_ambient_provider_token,
    refuse_missing_keys_passphrase,
)
from core.config import APP_LABEL, ConfigError, ConfigIssue, StackConfig, deployment_issues

#: (sealed bundle as base64, passphrase, pair names) -> pair -> base64 tar of the keys its hosts import.
#: Injected by the program's entry point (qpool.keys.host_bundle.host_key_tars_b64): components never
#: import the operator package that owns the sealing.
OpenKeyBundle = Callable[[str, str, list[str]], dict[str, str]]

#: The longest volume id Hetzner can hand out (ids are 64-bit integers): the device path in the fstab entry
#: is then as long as it can get, so a user-data that fits with it fits with any real id.
PLACEHOLDER_VOLUME_ID = str(2**63 - 1)
#: An ED25519 OpenSSH public key line as the tls provider writes the deploy key (fixed length, trailing newline);
#: all-0xff key bytes, no private half exists. Used only to size user-data before the real key is known.
PLACEHOLDER_DEPLOY_KEY = "ssh-ed25519 " + base64.b64encode(
    b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + b"\xff" * 32).decode() + "\n"


def operator_key_slug(key: str) -> str:
    """A Hetzner SshKey name part derived from the key itself: 12 hex digits of its SHA-256 fingerprint.

    Why not the list position: removing or rotating one key would rename (replace) every key after it, and
    a replacement is created before the old key is deleted, which Hetzner refuses for the same public key.
    A rotated key has a new fingerprint, so its replacement never collides with the key it replaces.
    """
    return hashlib.sha256(base64.b64decode(key.split()[1])).hexdigest()[:12]


def operator_key_slugs(keys: Sequence[str]) -> dict[str, str]:
    """slug -> key, in config order; a key listed twice is a config error (Hetzner registers it once)."""
    out: dict[str, str] = {}
    for key in keys:
        slug = operator_key_slug(key)
        if slug in out:
            raise pulumi.RunError(f"operatorSshKeys lists the same key twice (SHA-256 {slug}...): remove one; "
                                  "nothing was changed")
        out[slug] = key
    return out


def preflight_issues(cfg: StackConfig) -> list[ConfigIssue]:
    """What `pulumi up` would otherwise learn from Hetzner after resources exist, checked now.

    User-data size: every host's user-data is rendered with the placeholder deploy key, a placeholder SSH
    host key at least as long as a real one and the longest possible volume id, outside any `apply`, so
    `pulumi preview` and `qpool validate` run the check too.
    """
    too_big: dict[str, list[str]] = {}  # config section -> "host (N bytes)"
    for host in cfg.hosts():
        render = render_monitoring_user_data if host.role == "monitoring" else render_key_host_user_data
        try:
            render(HostRenderInputs(config=cfg, host=host, deploy_public_key=PLACEHOLDER_DEPLOY_KEY,
                                    volume_device=volume_device(PLACEHOLDER_VOLUME_ID), host_key=PLACEHOLDER_HOST_KEY))
        except ValueError as exc:
            size = re.search(r"(\d+) bytes", str(exc))
            section = "monitoring" if host.role == "monitoring" else "validatorPairs"
            too_big.setdefault(section, []).append(f"{host.name} ({size.group(1) if size else '?'} bytes)")
    return [ConfigIssue(path=section, message=f"user-data of {', '.join(hosts)} is over Hetzner's "
                        f"{USER_DATA_LIMIT_BYTES}-byte limit; shorten what lands in it (`qpool render` lists each "
                        "host's user-data files; e.g. fewer network.sshAllowedCidrs)")
            for section, hosts in too_big.items()]


def _validator_keys(secrets: StackSecrets, pairs: list[str],
                    open_bundle: OpenKeyBundle) -> dict[str, pulumi.Output[str]]:
    """Per pair, the keys its two hosts import (each pair its own keys; see qpool/keys/host_bundle.py)."""
    bundle, passphrase = secrets.get("validatorKeys"), keys_passphrase(secrets)  # stack secret or env (issue 13)
    if bundle is None or passphrase is None:
        return {}
    tars = pulumi.Output.all(bundle, passphrase).apply(lambda v: open_bundle(v[0], v[1], pairs))
    return {pair: pulumi.Output.secret(tars.apply(lambda t, p=pair: t[p])) for pair in pairs}


def _refuse_unmonitored_deploy(cfg: StackConfig) -> None:
    """A real mainnet deployment stops here, before any resource, when nobody would be paged.

    `qpool plan/render` run this program under Pulumi's mocks (they create nothing): there the same issues
    are printed as warnings by `warnings_for`, so a proposed config can still be reviewed.
    """
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.settings import get_monitor

    issues = deployment_issues(cfg)
    if not issues or isinstance(get_monitor(), MockMonitor):
        return
    for issue in issues:
        pulumi.log.error(str(issue))
    raise pulumi.RunError(f"mainnet alerting is incomplete ({len(issues)} problem(s)); nothing was changed")


def build_stack(open_key_bundle: OpenKeyBundle) -> None:
    try:
        cfg, secrets = read_stack_config()
        issues = preflight_issues(cfg)
        if issues:
            raise ConfigError(issues)
    except ConfigError as exc:
        for issue in exc.issues:
            pulumi.log.error(str(issue))
        raise pulumi.RunError(f"stack config has {len(exc.issues)} problem(s); nothing was changed") from None
    _refuse_unmonitored_deploy(cfg)
    refuse_ambient_provider_token()  # hcloud:token per stack (issue 13)
    refuse_missing_keys_passphrase(secrets)  # the passphrase may come from the environment (issue 13)
    operator_key_slugs(cfg.operator_ssh_keys)  # a duplicate key stops here, before any resource

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
    ssh_keys += [
        hcloud.SshKey(f"qp-operator-{slug}", name=f"qp-{env}-operator-{slug}", public_key=key, labels=labels,
                      # adopts keys registered under the old positional names (a one-time, no-op migration
                      # as long as that `pulumi up` does not also change the key list; docs/operations.md)
                      opts=pulumi.ResourceOptions(aliases=[pulumi.Alias(name=f"qp-operator-{i}")]))
        for i, (slug, key) in enumerate(operator_key_slugs(cfg.operator_ssh_keys).items())
    ]
    ssh_key_ids = [k.id for k in ssh_keys]

    # One backup-shipping key per key host (issue 12 item 3): a receiver's authorized_keys has one line per
    # allowed sender, whose forced command names that sender, so who shipped a copy is the key that
    # authenticated (and its from= address), never the sender's own words. Each private key goes to its
    # own host only (the `secret-backup-ship-key` step); receivers get the public halves (host tools).
    ship_keys = {host.name: host_identity.ship_key(host.name) for host in cfg.key_hosts()}
    ship_public = {name: key.public_key_openssh for name, key in ship_keys.items()}

    keys_tars = _validator_keys(secrets, [p.name for p in cfg.validator_pairs], open_key_bundle)
    host_keys = host_identity.host_ssh_keys(cfg)  # before any host: key hosts pin their targets' keys
    key_hosts = {}
    # Client restarts per pair: the STANDBY's `clients` step (with its health gate) before the ACTIVE's.
    standby_clients: dict[str, pulumi.Resource] = {}
    for host in sorted(cfg.key_hosts(), key=lambda h: h.role == cfg.pair(h.pair or "").active):  # standbys first
        node_class = ValidatorNode if host.role == "primary" else BackupNode
        is_active = host.role == cfg.pair(host.pair or "").active
        key_hosts[host.name] = node_class(host.name, KeyHostArgs(
            config=cfg, host=host, network=network, ssh_key_ids=ssh_key_ids,
            deploy_public_key=deploy_key.public_key_openssh, deploy_private_key=deploy_private,
            ship_senders=host_identity.ship_senders(cfg.backup_senders_of(host), ship_public),
            ship_private_key=pulumi.Output.secret(ship_keys[host.name].private_key_openssh),
            host_key=host_keys[host.name], ship_known_hosts=host_identity.ship_known_hosts(cfg, host, host_keys),
            validator_keys_tar_b64=keys_tars.get(host.pair or ""),
            clients_after=standby_clients.get(host.pair or "") if is_active else None))
        if not is_active:
            standby_clients[host.pair or ""] = key_hosts[host.name].clients_step
    monitoring = MonitoringServer(cfg.monitoring_host().name, MonitoringServerArgs(
        config=cfg, network=network, secrets=secrets, ssh_key_ids=ssh_key_ids,
        deploy_public_key=deploy_key.public_key_openssh, deploy_private_key=deploy_private,
        ship_senders=host_identity.ship_senders(cfg.backup_senders_of(cfg.monitoring_host()), ship_public),
        host_key=host_keys[cfg.monitoring_host().name]))

    pulumi.export("environment", cfg.environment)
    pulumi.export("networkId", network.network.id)
    servers = {**{name: node.server for name, node in key_hosts.items()},
               cfg.monitoring_host().name: monitoring.server}
    pulumi.export("hosts", {h.name: {"role": h.role, "pair": h.pair, "privateIp": h.private_ip,
                                     "publicIpv4": servers[h.name].ipv4_address, "serverId": servers[h.name].id}
                            for h in cfg.hosts()})
    # Generated by the program before the hosts exist (components/host_identity.py) and verified on every
    # bootstrap step; qpool pins them (the monitoring host too: failover alerts and backups use it).
    pulumi.export("hostKeys", {**{name: node.host_key for name, node in key_hosts.items()},
                               cfg.monitoring_host().name: monitoring.host_key})
    pulumi.export("grafanaCaCert", monitoring.grafana_ca_cert)
    pulumi.export("grafanaUrl", monitoring.grafana_url)
    pulumi.export("grafanaAdminPassword", monitoring.grafana_admin_password)
    pulumi.export("deployPrivateKey", deploy_private)
    pulumi.export("activeSigners", {p.name: f"qp-{cfg.environment}-{p.name}-{p.active}"
                                    for p in cfg.validator_pairs})
