"""One test per validation rule: the message names the key, what is wrong and how to fix it."""

from __future__ import annotations

from typing import Any

import pytest

from core.config import ConfigError, load_stack_config


def issues_for(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_stack_config(raw)
    return [str(i) for i in info.value.issues]


def only_issue(raw: dict[str, Any]) -> str:
    issues = issues_for(raw)
    assert len(issues) == 1, issues
    return issues[0]


def test_both_stack_files_are_valid(testnet_raw, mainnet_raw):
    assert len(load_stack_config(testnet_raw).hosts()) == 3
    assert len(load_stack_config(mainnet_raw).hosts()) == 5


def test_bad_cidr_names_key_and_fix(testnet_raw):
    testnet_raw["network"]["sshAllowedCidrs"] = ["203.0.113.7/33"]
    msg = only_issue(testnet_raw)
    assert msg.startswith("quantapool:network.sshAllowedCidrs:")
    assert "203.0.113.7/33" in msg and "/32" in msg


def test_cidr_with_host_bits_rejected(testnet_raw):
    testnet_raw["network"]["grafanaAllowedCidrs"] = ["203.0.113.7/24"]
    assert "network.grafanaAllowedCidrs" in only_issue(testnet_raw)


def test_ipv6_trusted_cidrs_accepted(testnet_raw):
    testnet_raw["network"]["sshAllowedCidrs"] = ["2001:db8::1/128"]
    assert load_stack_config(testnet_raw).network.ssh_allowed_cidrs == ("2001:db8::1/128",)


def test_private_network_must_be_private(testnet_raw):
    testnet_raw["network"]["cidr"] = "8.8.0.0/16"
    assert any("network.cidr" in m and "private" in m for m in issues_for(testnet_raw))


def test_subnet_inside_network(testnet_raw):
    testnet_raw["network"]["subnet"] = "10.99.1.0/24"
    issues = issues_for(testnet_raw)
    assert any(m.startswith("quantapool:network.subnet:") and "inside network.cidr" in m for m in issues)


def test_private_ip_outside_subnet(testnet_raw):
    testnet_raw["validatorPairs"][0]["backup"]["privateIp"] = "10.42.2.12"
    msg = only_issue(testnet_raw)
    assert msg.startswith("quantapool:validatorPairs[0].backup.privateIp:") and "10.42.1.0/24" in msg


def test_private_ip_must_be_unique(testnet_raw):
    testnet_raw["monitoring"]["privateIp"] = "10.42.1.11"
    msg = only_issue(testnet_raw)
    assert msg.startswith("quantapool:monitoring.privateIp:") and "validatorPairs[0].primary" in msg


def test_private_ip_not_gateway(testnet_raw):
    testnet_raw["network"]["subnet"] = "10.42.0.0/24"
    testnet_raw["validatorPairs"][0]["primary"]["privateIp"] = "10.42.0.1"
    testnet_raw["validatorPairs"][0]["backup"]["privateIp"] = "10.42.0.12"
    testnet_raw["monitoring"]["privateIp"] = "10.42.0.20"
    assert "gateway" in only_issue(testnet_raw)


def test_private_ip_syntax(testnet_raw):
    testnet_raw["monitoring"]["privateIp"] = "10.42.1"
    assert only_issue(testnet_raw).startswith("quantapool:monitoring.privateIp:")


def test_unknown_server_type(testnet_raw):
    testnet_raw["validatorPairs"][0]["primary"]["serverType"] = "cx99"
    msg = only_issue(testnet_raw)
    assert "validatorPairs[0].primary.serverType" in msg and "unknown Hetzner server type 'cx99'" in msg


def test_memory_minimum_for_validator_hosts(testnet_raw):
    testnet_raw["validatorPairs"][0]["backup"]["serverType"] = "cx33"
    msg = only_issue(testnet_raw)
    assert "validatorPairs[0].backup.serverType" in msg and "16 GiB" in msg


def test_arm_server_needs_arm_binaries(testnet_raw):
    testnet_raw["validatorPairs"][0]["primary"]["serverType"] = "cax31"
    assert "arm64" in only_issue(testnet_raw)


def test_unknown_location(testnet_raw):
    testnet_raw["monitoring"]["location"] = "fra1"
    assert "unknown Hetzner location 'fra1'" in only_issue(testnet_raw)


def test_network_zone_consistency(testnet_raw):
    testnet_raw["validatorPairs"][0]["backup"]["location"] = "ash"
    msg = only_issue(testnet_raw)
    assert "validatorPairs[0].backup.location" in msg and "us-east" in msg and "eu-central" in msg


def test_unknown_network_zone(testnet_raw):
    testnet_raw["hetzner"]["networkZone"] = "mars-1"
    assert any("hetzner.networkZone" in m for m in issues_for(testnet_raw))


def test_pair_names_unique(mainnet_raw):
    mainnet_raw["validatorPairs"][1]["name"] = "p1"
    assert any("validatorPairs[1].name" in m and "twice" in m for m in issues_for(mainnet_raw))


def test_fee_recipient_prefix_follows_profile(testnet_raw):
    testnet_raw["validatorPairs"][0]["feeRecipient"] = "Z8e01Ea0bC7e337806154573A5B46Bb37F50Ea8fC"
    msg = only_issue(testnet_raw)
    assert "feeRecipient" in msg and "Q followed by 40 hex" in msg


def test_pool_contract_addresses_follow_profile(testnet_raw):
    testnet_raw["clients"]["profile"] = "gzond"
    testnet_raw["validatorPairs"][0]["feeRecipient"] = "Z8e01Ea0bC7e337806154573A5B46Bb37F50Ea8fC"
    issues = issues_for(testnet_raw)
    assert {m.split(":")[1] for m in issues} == {
        "poolContracts.depositPool", "poolContracts.stqrl", "poolContracts.validatorManager"}


def test_chain_volume_covers_a_year_of_growth(testnet_raw):
    testnet_raw["validatorPairs"][0]["chainVolumeGib"] = 100
    assert "one year of chain growth" in only_issue(testnet_raw)


def test_unknown_key_is_named(testnet_raw):
    testnet_raw["network"]["sshAllowedCidr"] = ["203.0.113.7/32"]
    msg = only_issue(testnet_raw)
    assert msg.startswith("quantapool:network.sshAllowedCidr:") and "unknown key" in msg


def test_missing_required_key(testnet_raw):
    del testnet_raw["monitoring"]
    assert only_issue(testnet_raw) == "quantapool:monitoring: required but not set"


def test_bad_profile(testnet_raw):
    testnet_raw["clients"]["profile"] = "geth"
    msg = only_issue(testnet_raw)
    assert "clients.profile" in msg and "gzond" in msg and "gqrl" in msg


def test_bad_sha256(testnet_raw):
    testnet_raw["clients"]["beacon"]["sha256"] = "abc"
    assert "clients.beacon.sha256" in only_issue(testnet_raw)


def test_operator_key_format(testnet_raw):
    testnet_raw["operatorSshKeys"] = ["not a key"]
    assert "operatorSshKeys" in only_issue(testnet_raw)


def test_secret_in_plain_text_is_refused(testnet_raw):
    testnet_raw["discordWebhookUrl"] = "https://discord.example/webhook"
    msg = only_issue(testnet_raw)
    assert "discordWebhookUrl" in msg and "--secret" in msg


def test_encrypted_secret_counts_as_present(testnet_raw):
    testnet_raw["pagerdutyRoutingKey"] = {"secure": "v1:abc"}
    assert "pagerdutyRoutingKey" in load_stack_config(testnet_raw).secrets_present


def test_all_issues_reported_at_once(testnet_raw):
    testnet_raw["monitoring"]["location"] = "fra1"
    testnet_raw["validatorPairs"][0]["primary"]["serverType"] = "cx99"
    testnet_raw["network"]["sshAllowedCidrs"] = ["nope"]
    paths = sorted(m.split(":")[1] for m in issues_for(testnet_raw))
    assert paths == ["monitoring.location", "network.sshAllowedCidrs", "validatorPairs[0].primary.serverType"]


# -- mainnet guardrails ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["sshAllowedCidrs", "grafanaAllowedCidrs"])
def test_mainnet_trusted_lists_non_empty(mainnet_raw, key):
    mainnet_raw["network"][key] = []
    msg = only_issue(mainnet_raw)
    assert msg.startswith(f"quantapool:network.{key}:") and "pulumi config set --path" in msg


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_mainnet_refuses_whole_internet(mainnet_raw, cidr):
    mainnet_raw["network"]["sshAllowedCidrs"].append(cidr)
    msg = only_issue(mainnet_raw)
    assert "network.sshAllowedCidrs[2]" in msg and "whole internet" in msg


def test_testnet_allows_open_grafana(testnet_raw):
    testnet_raw["network"]["grafanaAllowedCidrs"] = ["0.0.0.0/0"]
    load_stack_config(testnet_raw)


def test_mainnet_requires_protection(mainnet_raw):
    mainnet_raw["hetzner"]["protection"] = False
    assert "hetzner.protection" in only_issue(mainnet_raw)


def test_mainnet_requires_backups(mainnet_raw):
    mainnet_raw["hetzner"]["backups"] = False
    assert "hetzner.backups" in only_issue(mainnet_raw)


def test_mainnet_requires_explicit_client_pins(mainnet_raw):
    del mainnet_raw["clients"]["validator"]
    msg = only_issue(mainnet_raw)
    assert msg.startswith("quantapool:clients.validator:") and "explicit" in msg


def test_testnet_falls_back_to_profile_default_pins(testnet_raw):
    del testnet_raw["clients"]["validator"]
    cfg = load_stack_config(testnet_raw)
    assert cfg.clients.pins()["validator"].version == "v0.3.0"
