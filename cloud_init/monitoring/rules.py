"""Alert rules: the YAML groups in rules/, fitted to the stack (runbook URLs, pool rules)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cloud_init.monitoring.layout import RULES_FILE, RULES_SRC
from core.config import StackConfig


@cache
def _rule_sources() -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(RULES_SRC.glob("*.yml"))}


def alert_rule_groups(cfg: StackConfig) -> list[dict[str, Any]]:
    """The rule groups, with runbook_url filled in and the pool rules fitted to the stack.

    The pool group exists only when the stack has contracts to watch; PoolPaused is left out when the pool is
    paused on purpose (an alert that fires for months trains people to ignore the channel). One file holds
    every group: user-data is limited to 32 KiB and one gzip stream compresses the repeated text far better.
    """
    base = cfg.alerting.runbook_base_url.rstrip("/")
    groups: list[dict[str, Any]] = []
    for stem, doc in _rule_sources().items():
        if stem == "pool" and cfg.pool_contracts is None:
            continue
        for group in copy.deepcopy(doc["groups"]):
            rules = group["rules"]
            if cfg.pool_contracts is not None and cfg.pool_contracts.expect_paused:
                rules = [r for r in rules if r.get("alert") != "PoolPaused"]
            for rule in rules:
                rule["annotations"]["runbook_url"] = f"{base}/{rule['alert']}.md"
            group["rules"] = rules
            groups.append(group)
    groups += expected_keys_groups(cfg)
    return groups


#: Recorded per pair from alerting.expectedActiveKeys; ValidatorKeysNotActive compares the signer with it.
EXPECTED_KEYS_METRIC = "quantapool_validator_expected_active_keys"


def expected_keys_groups(cfg: StackConfig) -> list[dict[str, Any]]:
    """alerting.expectedActiveKeys as one recording rule per pair, for ValidatorKeysNotActive to compare with."""
    counts = cfg.alerting.expected_active_keys
    if not counts:
        return []
    return [{"name": "quantapool-expected-keys", "rules": [
        {"record": EXPECTED_KEYS_METRIC, "expr": f"vector({counts[pair.name]})", "labels": {"pair": pair.name}}
        for pair in cfg.validator_pairs if pair.name in counts]}]


def alert_rule_files(cfg: StackConfig) -> dict[str, dict[str, Any]]:
    """Rule files by file name (one file today)."""
    return {Path(RULES_FILE).name: {"groups": alert_rule_groups(cfg)}}


def alert_rules(cfg: StackConfig) -> list[dict[str, Any]]:
    """Every rendered alerting rule, flat (recording rules left out)."""
    return [r for doc in alert_rule_files(cfg).values() for g in doc["groups"] for r in g["rules"] if "alert" in r]


def all_alert_names() -> list[str]:
    """Every alert the project defines (whatever the stack renders): each needs a runbook and tests."""
    return [r["alert"] for doc in _rule_sources().values() for g in doc["groups"] for r in g["rules"]]
