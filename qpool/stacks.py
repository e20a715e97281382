"""Find and validate a stack's config offline, straight from its `Pulumi.<stack>.yaml`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.pulumi_config import other_stacks_operator_keys, stack_dir
from core.config import (
    SECRET_KEYS,
    ConfigError,
    ConfigIssue,
    StackConfig,
    load_stack_config,
    raw_config_from_stack_file,
    stack_requires_mainnet,
)
from qpool.errors import QpoolError


@dataclass(frozen=True)
class LoadedStack:
    name: str
    path: Path
    raw: dict[str, Any]
    config: StackConfig


def stack_file(name: str, config_file: Path | None = None) -> Path:
    """`--config-file`, else `Pulumi.<name>.yaml` in the stack directory ($QPOOL_STACK_DIR or the project)."""
    path = config_file or stack_dir() / f"Pulumi.{name}.yaml"
    if not path.is_file():
        raise QpoolError(f"stack config {path} not found; create it or pass --config-file")
    return path


#: What a mainnet stack file's `secretsprovider:` may name: a key the operator controls (docs/operations.md
#: "State backend and secrets provider"); not Pulumi Cloud's default key, not a missing entry.
MAINNET_SECRETS_PROVIDERS = ("hashivault://", "awskms://", "azurekeyvault://", "gcpkms://", "passphrase")


def secrets_provider_issues(doc: dict[str, Any], config: StackConfig, name: str) -> list[ConfigIssue]:
    """A mainnet stack file must name its secrets provider (issue 13): the state and the file alone must
    decrypt nothing. Checked offline like every other key (`qpool validate`, `plan`)."""
    if not (config.environment == "mainnet" or stack_requires_mainnet(name)):
        return []
    provider = str(doc.get("secretsprovider") or "")
    if provider.startswith(MAINNET_SECRETS_PROVIDERS):
        return []
    return [ConfigIssue(path="secretsprovider", message=f"the mainnet stack file names {provider or 'no'} secrets "
                        "provider; create the stack with `pulumi stack init --secrets-provider=...` (Vault, KMS or "
                        "passphrase: docs/operations.md) or `pulumi stack change-secrets-provider`")]


def load_stack(name: str, config_file: Path | None = None, *, preflight: bool = False) -> LoadedStack:
    """Parse and validate; ConfigError carries one line per bad key.

    `preflight`: also run the program's pre-`up` checks (components.stack.preflight_issues: renders every
    host's user-data to size it), as `qpool validate` and `qpool plan` do; the program runs them itself too.
    """
    path = stack_file(name, config_file)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise QpoolError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc}); fix the syntax") from None
    if not isinstance(doc, dict):
        raise QpoolError(f"{path}: expected a mapping with a `config:` section")
    raw = raw_config_from_stack_file(doc)
    present = {k for k in raw if k in SECRET_KEYS}
    config = load_stack_config(raw, secrets_present=present, stack=name,
                               other_stacks_keys=other_stacks_operator_keys(name, exclude=path))
    provider_issues = secrets_provider_issues(doc, config, name)
    if provider_issues:
        raise ConfigError(provider_issues)
    if preflight:
        from components.stack import preflight_issues

        issues = preflight_issues(config)
        if issues:
            raise ConfigError(issues)
    return LoadedStack(name=name, path=path, raw=raw, config=config)


__all__ = ["ConfigError", "LoadedStack", "load_stack", "stack_file"]
