"""The Hetzner firewall rule sets as plain data.

Kept apart from the Pulumi resources so that tests, `qpool plan` and the README's table all compare against
one definition. Hetzner firewalls deny every inbound packet that no rule allows, but they do not filter the
private network: the hosts' own nftables rules cover that (see cloud_init/).
"""

from __future__ import annotations

from dataclasses import dataclass

from core import ports
from core.config import StackConfig

ANYWHERE = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True)
class FirewallRule:
    port: int
    protocol: str
    source_ips: tuple[str, ...]
    description: str


def validator_rules(cfg: StackConfig) -> list[FirewallRule]:
    """Key hosts: SSH from trusted addresses, the clients' P2P ports from anywhere, nothing else."""
    rules = []
    if cfg.network.ssh_allowed_cidrs:
        rules.append(FirewallRule(ports.SSH, "tcp", tuple(cfg.network.ssh_allowed_cidrs),
                                  "SSH from trusted operator addresses"))
    rules += [FirewallRule(p.port, p.protocol, ANYWHERE, p.description) for p in ports.P2P_PORTS]
    return rules


def monitoring_rules(cfg: StackConfig) -> list[FirewallRule]:
    """Monitoring: SSH and Grafana from trusted addresses; Prometheus and Alertmanager stay private."""
    rules = []
    if cfg.network.ssh_allowed_cidrs:
        rules.append(FirewallRule(ports.SSH, "tcp", tuple(cfg.network.ssh_allowed_cidrs),
                                  "SSH from trusted operator addresses"))
    if cfg.network.grafana_allowed_cidrs:
        rules.append(FirewallRule(ports.GRAFANA, "tcp", tuple(cfg.network.grafana_allowed_cidrs),
                                  "Grafana (TLS) from trusted addresses"))
    return rules
