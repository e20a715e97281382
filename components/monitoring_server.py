"""`MonitoringServer`: Prometheus, Alertmanager, Grafana, the contract exporter and a node exporter.

Receiver secrets (Discord, Telegram, PagerDuty), Grafana's admin password and its TLS key travel over SSH
into files referenced by `*_file` settings; user-data is first boot only (packages, volume); the
configuration is the `monitoring-config` bundle (cloud_init/monitoring/files.py), re-applied on every
`pulumi up` that changes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
import pulumi_random as random
import pulumi_tls as tls

from cloud_init import exporter_deploy
from cloud_init.host_tools import digest
from cloud_init.monitoring import START_MONITORING_SCRIPT, monitoring_bundle, render_monitoring_user_data
from components import bootstrap, host_identity
from components.host_server import create_host_server
from components.network import Network
from components.pulumi_config import StackSecrets
from core import ports
from core.config import StackConfig

#: stack secret key -> host secret file name (cloud_init/secrets_table.py)
RECEIVER_SECRETS = {
    "discordWebhookUrl": "alertmanager-discord-webhook",
    "telegramBotToken": "alertmanager-telegram-token",
    "pagerdutyRoutingKey": "alertmanager-pagerduty-key",
    "heartbeatWebhookUrl": "alertmanager-heartbeat-url",
}
#: pip downloads and installs the exporter's wheels on first install.
EXPORTER_STEP_TIMEOUT = "20m"


@dataclass(frozen=True)
class MonitoringServerArgs:
    config: StackConfig
    network: Network
    secrets: StackSecrets
    ssh_key_ids: list[pulumi.Input[str]]
    deploy_public_key: pulumi.Input[str]
    deploy_private_key: pulumi.Input[str]
    #: the key hosts that ship backups here: name -> {"address", "public_key"} (host_identity.ship_senders)
    ship_senders: pulumi.Input[dict[str, dict[str, str]]]
    #: the host's SSH host key (components/host_identity.py)
    host_key: tls.PrivateKey | None = None



def grafana_dns_names(cfg: StackConfig) -> list[str]:
    names = [cfg.monitoring_host().name]
    if cfg.monitoring.grafana_dns_name:
        names.insert(0, cfg.monitoring.grafana_dns_name)
    return names


def grafana_url(cfg: StackConfig, public_ipv4: pulumi.Output[str]) -> pulumi.Output[str]:
    """The URL users open; Grafana's certificate names exactly its host (DNS name if set, else the IPv4)."""
    if cfg.monitoring.grafana_dns_name:
        return pulumi.Output.from_input(f"https://{cfg.monitoring.grafana_dns_name}:{ports.GRAFANA}")
    return public_ipv4.apply(lambda ip: f"https://{ip}:{ports.GRAFANA}")


class MonitoringServer(pulumi.ComponentResource):
    server: hcloud.Server
    volume: hcloud.Volume
    grafana_ca_cert: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str]
    host_key: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("quantapool:infra:MonitoringServer", name, None, opts)
        cfg = args.config
        host = cfg.monitoring_host()
        child = pulumi.ResourceOptions(parent=self)
        # The host's SSH host key exists before the host: user-data installs it, every step verifies it.
        host_key = args.host_key or host_identity.host_ssh_key(name)
        self.host_key = host_identity.public_line(host_key)
        hs = create_host_server(
            self, name, cfg, host, volume_suffix="tsdb", volume_gib=cfg.monitoring.volume_gib,
            protect_volume=cfg.hetzner.protection, render_user_data=render_monitoring_user_data,
            firewall_id=args.network.monitoring_firewall.id, network=args.network.network,
            subnet=args.network.subnet, ssh_key_ids=args.ssh_key_ids, deploy_public_key=args.deploy_public_key,
            protect_server=False, host_key=host_identity.host_key_of(host_key))
        self.volume, self.server, attachment = hs.volume, hs.server, hs.attachment

        # Grafana: admin password and a TLS certificate signed by a stack-local CA (the CA is an output so
        # operators can trust it in their browsers).
        password = random.RandomPassword(f"{name}-grafana-admin", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self,
                                                                     additional_secret_outputs=["result"]))
        self.grafana_admin_password = pulumi.Output.secret(password.result)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256",
                                opts=pulumi.ResourceOptions(parent=self,
                                                            additional_secret_outputs=["privateKeyPem"]))
        ca = tls.SelfSignedCert(
            f"{name}-ca", private_key_pem=ca_key.private_key_pem, is_ca_certificate=True,
            validity_period_hours=24 * 365 * 5, allowed_uses=["cert_signing", "crl_signing"],
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"QuantaPool {cfg.environment} monitoring CA",
                                                  organization="QuantaPool"), opts=child)
        key = tls.PrivateKey(f"{name}-grafana-key", algorithm="ECDSA", ecdsa_curve="P256",
                             opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["privateKeyPem"]))
        csr = tls.CertRequest(
            f"{name}-grafana-csr", private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=cfg.monitoring.grafana_dns_name or host.name,
                                               organization="QuantaPool"),
            # every name a browser may open: the exported URL (DNS name if configured, else the public IPv4),
            # the host name and the private address
            dns_names=grafana_dns_names(cfg),
            ip_addresses=[self.server.ipv4_address, host.private_ip], opts=child)
        cert = tls.LocallySignedCert(
            f"{name}-grafana-cert", cert_request_pem=csr.cert_request_pem, ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem, validity_period_hours=24 * 365,
            early_renewal_hours=24 * 30, allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child)
        self.grafana_ca_cert = ca.cert_pem
        self.grafana_url = grafana_url(cfg, self.server.ipv4_address)

        conn = bootstrap.connection(self.server.ipv4_address, args.deploy_private_key, self.host_key)
        steps = bootstrap.Steps(name, self, conn, self.server.id)
        steps.last = attachment
        steps.wait_ready()
        steps.host_env(self.server.ipv4_address)
        bootstrap.base_bundles(steps, cfg, host, args.deploy_public_key)
        steps.host_tools(cfg, host, args.ship_senders)
        receiver_steps = []
        for stack_key, file_name in RECEIVER_SECRETS.items():
            value = args.secrets.get(stack_key)
            if value is not None:
                receiver_steps.append(steps.secret_file(file_name, value))
        admin = self.grafana_admin_password
        steps.secret_file("grafana-admin-password", admin)
        tls_key = pulumi.Output.secret(key.private_key_pem)
        steps.secret_file("grafana-tls-key", tls_key)
        steps.secret_file("grafana-tls-cert", cert.cert_pem)
        # Every Prometheus, Alertmanager and Grafana file: re-runs exactly when one of them changes; checked
        # on the host (promtool, amtool, with the secrets above) before anything is replaced, then reloaded.
        # Explicitly after every receiver secret: the check renders the Alertmanager template with them.
        steps.bundle(monitoring_bundle(cfg), depends_on=receiver_steps)
        steps.add("start-monitoring", f"sudo {START_MONITORING_SCRIPT}")
        if cfg.pool_contracts is not None:
            # The contract exporter: source, hash-locked requirements, config and unit as one non-secret bundle
            # (qpool render shows every file); its installer builds the venv and starts the unit.
            bundle = exporter_deploy.bundle_b64(cfg)
            steps.add("contract-exporter", exporter_deploy.INSTALL_COMMAND, stdin=bundle,
                      triggers=[digest(bundle)], timeout=EXPORTER_STEP_TIMEOUT)

        self.register_outputs({
            "server_id": self.server.id,
            "ipv4_address": self.server.ipv4_address,
            "grafana_ca_cert": self.grafana_ca_cert,
        })
