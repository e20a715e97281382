"""The Network component against the architecture's firewall table, under Pulumi's mocks."""

from __future__ import annotations

import copy

from components.network import Network, NetworkArgs
from core.config import load_stack_config

ANY = ["0.0.0.0/0", "::/0"]


def _rules(run, name):
    fw = run.by_name(name)
    return sorted((r["port"], r["protocol"], tuple(r["sourceIps"])) for r in fw.plain_inputs()["rules"])


def build(pulumi_mocks, raw):
    cfg = load_stack_config(raw)
    return pulumi_mocks(lambda: Network("qp", NetworkArgs(config=cfg)), raw)


def test_validator_firewall_exact_rules(pulumi_mocks, testnet_raw):
    run = build(pulumi_mocks, testnet_raw)
    ssh = tuple(testnet_raw["network"]["sshAllowedCidrs"])
    assert _rules(run, "qp-fw-validator") == sorted([
        ("22", "tcp", ssh),
        ("30303", "tcp", tuple(ANY)), ("30303", "udp", tuple(ANY)),
        ("13000", "tcp", tuple(ANY)), ("12000", "udp", tuple(ANY)),
    ])


def test_monitoring_firewall_exact_rules(pulumi_mocks, testnet_raw):
    run = build(pulumi_mocks, testnet_raw)
    assert _rules(run, "qp-fw-monitoring") == sorted([
        ("22", "tcp", tuple(testnet_raw["network"]["sshAllowedCidrs"])),
        ("3000", "tcp", tuple(testnet_raw["network"]["grafanaAllowedCidrs"])),
    ])


def test_private_ports_never_opened(pulumi_mocks, mainnet_raw):
    run = build(pulumi_mocks, mainnet_raw)
    opened = {int(r["port"]) for fw in run.of_type("hcloud:index/firewall:Firewall")
              for r in fw.plain_inputs()["rules"]}
    assert opened == {22, 3000, 30303, 13000, 12000}
    for fw in run.of_type("hcloud:index/firewall:Firewall"):
        for rule in fw.plain_inputs()["rules"]:
            assert rule["direction"] == "in" and rule["description"]


def test_empty_trusted_list_opens_no_ssh(pulumi_mocks, testnet_raw):
    testnet_raw["network"]["sshAllowedCidrs"] = []
    run = build(pulumi_mocks, testnet_raw)
    assert all(r[0] != "22" for r in _rules(run, "qp-fw-validator"))


def test_network_subnet_and_labels(pulumi_mocks, testnet_raw):
    run = build(pulumi_mocks, testnet_raw)
    net = run.by_name("qp-net").plain_inputs()
    assert net["ipRange"] == "10.42.0.0/16" and net["labels"] == {"app": "quantapool", "env": "testnet",
                                                                   "role": "network"}
    subnet = run.by_name("qp-subnet").plain_inputs()
    assert subnet["ipRange"] == "10.42.1.0/24" and subnet["networkZone"] == "eu-central"
    assert subnet["networkId"] == int(run.by_name("qp-net").id)  # hcloud wants an int id
    for res in run.resources:
        if res.custom and "labels" in res.plain_inputs():
            labels = res.plain_inputs()["labels"]
            assert {"app", "env", "role"} <= set(labels), res.name


def test_spread_placement_group_only_for_same_location_pairs(pulumi_mocks, mainnet_raw):
    """A spread group separates physical hosts within a location; a pair across locations gets none."""
    groups = "hcloud:index/placementGroup:PlacementGroup"
    run = build(pulumi_mocks, mainnet_raw)  # p1 fsn1+nbg1, p2 hel1+fsn1: already on different hosts
    assert run.of_type(groups) == []
    raw = copy.deepcopy(mainnet_raw)
    raw["validatorPairs"][1]["backup"]["location"] = raw["validatorPairs"][1]["primary"]["location"]
    run = build(pulumi_mocks, raw)
    assert [(g.name, g.plain_inputs()["type"], g.plain_inputs()["labels"]["pair"]) for g in run.of_type(groups)] \
        == [("qp-pg-p2", "spread", "p2")]


def test_children_parented_and_named_from_component(pulumi_mocks, testnet_raw):
    run = build(pulumi_mocks, testnet_raw)
    component = run.by_name("qp")
    assert component.type == "quantapool:infra:Network"
    for res in run.resources:
        if res is not component:
            assert res.parent_urn == component.urn and res.name.startswith("qp-")


def test_network_protection_follows_config(pulumi_mocks, mainnet_raw):
    run = build(pulumi_mocks, mainnet_raw)
    net = run.by_name("qp-net")
    assert net.options["protect"] is True and net.plain_inputs()["deleteProtection"] is True
