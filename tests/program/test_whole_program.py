"""The whole program (`__main__.py`) under mocks, for both stacks."""

from __future__ import annotations

import pulumi
import pytest


@pytest.mark.parametrize("stack", ["testnet", "mainnet"])
def test_stack_plans(run_stack, stack, testnet_raw, mainnet_raw):
    raw = testnet_raw if stack == "testnet" else mainnet_raw
    run = run_stack(raw, stack=stack)
    types = {r.type for r in run.resources}
    assert "quantapool:infra:Network" in types
    assert run.outputs["environment"] == stack
    pairs = [p["name"] for p in raw["validatorPairs"]]
    assert sorted(run.outputs["activeSigners"]) == sorted(pairs)
    assert len(run.outputs["hosts"]) == 2 * len(pairs) + 1


def test_bad_config_stops_before_any_resource(run_stack, testnet_raw):
    testnet_raw["network"]["sshAllowedCidrs"] = ["300.1.1.1/32"]
    with pytest.raises(pulumi.RunError, match="stack config has 1 problem"):
        run_stack(testnet_raw)


def test_unknown_top_level_key_stops_program(run_stack, testnet_raw):
    testnet_raw["validatorPair"] = []
    with pytest.raises(pulumi.RunError):
        run_stack(testnet_raw)


def test_runs_are_isolated(run_stack, testnet_raw, mainnet_raw):
    first = run_stack(mainnet_raw, stack="mainnet")
    second = run_stack(testnet_raw)
    assert len(first.outputs["hosts"]) == 5 and len(second.outputs["hosts"]) == 3


def test_config_secrets_are_secret(pulumi_mocks, testnet_raw):
    """The mock honours secret config: a value read with get_secret stays secret end to end."""
    seen = {}

    def body():
        value = pulumi.Config("quantapool").require_secret("discordWebhookUrl")
        pulumi.export("webhook", value)
        seen["out"] = value

    run = pulumi_mocks(body, testnet_raw, {"discordWebhookUrl": "https://discord.example/hook"})
    assert "webhook" in run.secret_outputs
