"""`Network`: the private network, the Hetzner firewalls and a spread placement group per same-location pair."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud

from components.firewall_rules import FirewallRule, monitoring_rules, validator_rules
from core.config import APP_LABEL, StackConfig, ValidatorPair


@dataclass(frozen=True)
class NetworkArgs:
    config: StackConfig


def _rule_args(rules: list[FirewallRule]) -> list[hcloud.FirewallRuleArgs]:
    return [
        hcloud.FirewallRuleArgs(direction="in", protocol=r.protocol, port=str(r.port),
                                source_ips=list(r.source_ips), description=r.description)
        for r in rules
    ]


def needs_placement_group(pair: ValidatorPair) -> bool:
    """A spread group is only useful (and only placeable) when both hosts of the pair share a location."""
    return pair.primary.location == pair.backup.location


class Network(pulumi.ComponentResource):
    """Everything the servers attach to; created before any server so the subnet exists at boot."""

    network: hcloud.Network
    subnet: hcloud.NetworkSubnet
    validator_firewall: hcloud.Firewall
    monitoring_firewall: hcloud.Firewall
    placement_groups: dict[str, hcloud.PlacementGroup]  # only pairs that need one (needs_placement_group)

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
        # A spread group only guarantees that its servers run on different physical hosts (Hetzner docs,
        # "Placement Groups"). That matters for a pair whose primary and backup share a location: without it
        # one hardware fault could take out both the signer and its standby. A pair split across locations
        # (fsn1 + nbg1) is on different hosts by construction, so a group adds nothing there, and group
        # members are placed within one location (third-party Hetzner guides state it; unverified in
        # Hetzner's own docs), which would make the second server's creation fail. So: a group only for
        # same-location pairs (see needs_placement_group; docs/operations.md, "Placement").
        self.placement_groups = {
            pair.name: hcloud.PlacementGroup(
                f"{name}-pg-{pair.name}", name=f"qp-{env}-{pair.name}", type="spread",
                labels={**labels("placement"), "pair": pair.name}, opts=child)
            for pair in cfg.validator_pairs if needs_placement_group(pair)
        }
        self.register_outputs({
            "network_id": self.network.id,
            "subnet_id": self.subnet.id,
            "validator_firewall_id": self.validator_firewall.id,
            "monitoring_firewall_id": self.monitoring_firewall.id,
        })

    def placement_group_id(self, pair: str) -> pulumi.Output[str] | None:
        """The pair's spread group id, or None when its hosts are in different locations (no group)."""
        group = self.placement_groups.get(pair)
        return group.id if group is not None else None
