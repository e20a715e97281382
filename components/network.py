"""`Network`: the private network, the Hetzner firewalls and one spread placement group per pair."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud

from components.firewall_rules import FirewallRule, monitoring_rules, validator_rules
from core.config import APP_LABEL, StackConfig


@dataclass(frozen=True)
class NetworkArgs:
    config: StackConfig


def _rule_args(rules: list[FirewallRule]) -> list[hcloud.FirewallRuleArgs]:
    return [
        hcloud.FirewallRuleArgs(direction="in", protocol=r.protocol, port=str(r.port),
                                source_ips=list(r.source_ips), description=r.description)
        for r in rules
    ]


class Network(pulumi.ComponentResource):
    """Everything the servers attach to; created before any server so the subnet exists at boot."""

    network: hcloud.Network
    subnet: hcloud.NetworkSubnet
    validator_firewall: hcloud.Firewall
    monitoring_firewall: hcloud.Firewall
    placement_groups: dict[str, hcloud.PlacementGroup]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("quantapool:infra:Network", name, None, opts)
        cfg = args.config
        env = cfg.environment
        child = pulumi.ResourceOptions(parent=self)
        # The private network carries slashing-protection copies and metrics: deleting it by accident
        # would cut replication, so it is protected whenever the stack asks for protection.
        stateful = pulumi.ResourceOptions(parent=self, protect=cfg.hetzner.protection)

        def labels(role: str) -> dict[str, str]:
            return {"app": APP_LABEL, "env": env, "role": role}

        self.network = hcloud.Network(
            f"{name}-net", name=f"qp-{env}", ip_range=cfg.network.cidr, labels=labels("network"),
            delete_protection=cfg.hetzner.protection, opts=stateful)
        self.subnet = hcloud.NetworkSubnet(
            f"{name}-subnet", network_id=self.network.id.apply(int), type="cloud",
            network_zone=cfg.hetzner.network_zone, ip_range=cfg.network.subnet,
            opts=pulumi.ResourceOptions(parent=self))
        self.validator_firewall = hcloud.Firewall(
            f"{name}-fw-validator", name=f"qp-{env}-validator", labels=labels("validator"),
            rules=_rule_args(validator_rules(cfg)), opts=child)
        self.monitoring_firewall = hcloud.Firewall(
            f"{name}-fw-monitoring", name=f"qp-{env}-monitoring", labels=labels("monitoring"),
            rules=_rule_args(monitoring_rules(cfg)), opts=child)
        # A spread group puts the pair's primary and backup on different physical machines, so one
        # hardware fault cannot take out both the signer and its standby.
        self.placement_groups = {
            pair.name: hcloud.PlacementGroup(
                f"{name}-pg-{pair.name}", name=f"qp-{env}-{pair.name}", type="spread",
                labels={**labels("placement"), "pair": pair.name}, opts=child)
            for pair in cfg.validator_pairs
        }
        self.register_outputs({
            "network_id": self.network.id,
            "subnet_id": self.subnet.id,
            "validator_firewall_id": self.validator_firewall.id,
            "monitoring_firewall_id": self.monitoring_firewall.id,
        })
