"""Where each secret lives on a host: the single table behind `qp-install-secret` and the Pulumi bootstrap.

Why one table: the bootstrap (which pipes a secret over SSH into `sudo qp-install-secret NAME`) and the
script on the host (which decides path, mode and owner) must never disagree. The script's case statement is
generated from this table (`install_secret_script`), so a new secret is added here and nowhere else.

Owners: the JWT is read by the execution and beacon clients (group `qp-jwt`); Debian's
`prometheus-alertmanager` runs as user `prometheus` (group `prometheus`), Grafana's package as `grafana`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud_init.render import render

SECRETS_DIR = "/etc/quantapool/secrets"
#: Created by qp-import-keys on first import (random, never leaves the host); NOT installable over SSH,
#: because replacing it would make the existing wallet unreadable.
WALLET_PASSWORD_FILE = f"{SECRETS_DIR}/wallet-password"
WALLET_PASSWORD_OWNER = "root:qp-validator"  # noqa: S105 - an owner, not a password
WALLET_PASSWORD_MODE = "0640"  # noqa: S105 - a file mode, not a password

KEY_HOST_ROLES = frozenset({"primary", "backup"})
MONITORING_ROLES = frozenset({"monitoring"})


@dataclass(frozen=True)
class SecretFile:
    """A secret's target file; `roles` are the host roles that accept it."""

    path: str
    mode: str
    owner: str  # user:group
    roles: frozenset[str]
    description: str

    @property
    def user(self) -> str:
        return self.owner.split(":", 1)[0]

    @property
    def group(self) -> str:
        return self.owner.split(":", 1)[1]


SECRET_FILES: dict[str, SecretFile] = {
    "jwt": SecretFile(f"{SECRETS_DIR}/jwt.hex", "0640", "root:qp-jwt", KEY_HOST_ROLES,
                      "Engine API JWT shared by the execution client and the beacon node"),
    "backup-ship-key": SecretFile(f"{SECRETS_DIR}/backup-ship-key", "0600", "root:root", KEY_HOST_ROLES,
                                  "this host's own key that ships its slashing-protection backups (receivers: "
                                  "one forced-command line per sender)"),
    "alertmanager-discord-webhook": SecretFile(
        f"{SECRETS_DIR}/alertmanager-discord-webhook", "0640", "root:prometheus", MONITORING_ROLES,
        "Discord webhook URL (Alertmanager webhook_url_file)"),
    "alertmanager-telegram-token": SecretFile(
        f"{SECRETS_DIR}/alertmanager-telegram-token", "0640", "root:prometheus", MONITORING_ROLES,
        "Telegram bot token (Alertmanager bot_token_file)"),
    "alertmanager-pagerduty-key": SecretFile(
        f"{SECRETS_DIR}/alertmanager-pagerduty-key", "0640", "root:prometheus", MONITORING_ROLES,
        "PagerDuty routing key (Alertmanager routing_key_file)"),
    "alertmanager-heartbeat-url": SecretFile(
        f"{SECRETS_DIR}/alertmanager-heartbeat-url", "0640", "root:prometheus", MONITORING_ROLES,
        "External dead-man's-switch URL (Alertmanager webhook url, filled in by qp-alertmanager-config)"),
    "grafana-admin-password": SecretFile(
        f"{SECRETS_DIR}/grafana-admin-password", "0640", "root:grafana", MONITORING_ROLES,
        "Grafana admin password (admin_password = $__file{...})"),
    "grafana-tls-key": SecretFile(f"{SECRETS_DIR}/grafana-tls.key", "0640", "root:grafana", MONITORING_ROLES,
                                  "Grafana HTTPS private key"),
    "grafana-tls-cert": SecretFile(f"{SECRETS_DIR}/grafana-tls.crt", "0644", "root:grafana", MONITORING_ROLES,
                                   "Grafana HTTPS certificate (public, kept beside its key)"),
}


def secrets_for_role(role: str) -> dict[str, SecretFile]:
    """The secrets a host of this role accepts (key hosts refuse Grafana's key, and vice versa)."""
    return {name: s for name, s in SECRET_FILES.items() if role in s.roles}


def install_secret_script(role: str) -> str:
    """`/usr/local/sbin/qp-install-secret` for a host of `role`, its name table generated from SECRET_FILES."""
    return render("qp-install-secret.sh.j2", secrets=secrets_for_role(role), secrets_dir=SECRETS_DIR)
