"""Read the stack config from `pulumi.Config` into the validated model, and secrets as secret Outputs."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi.runtime import config as runtime_config

from core.config import (
    NAMESPACE,
    SECRET_KEYS,
    ConfigError,
    ConfigIssue,
    StackConfig,
    load_stack_config,
)

#: Top-level (camelCase) keys the model accepts, derived from the model so the two never drift apart.
TOP_LEVEL_KEYS: tuple[str, ...] = tuple(
    info.alias or name for name, info in StackConfig.model_fields.items() if name != "secrets_present"
)


@dataclass(frozen=True)
class StackSecrets:
    """Secret config values as secret Outputs; None when the operator has not set one."""

    values: dict[str, pulumi.Output[str] | None]

    def get(self, key: str) -> pulumi.Output[str] | None:
        return self.values.get(key)


def _all_config_keys() -> set[str]:
    keys = set(runtime_config.CONFIG.get())
    keys |= set(runtime_config.get_config_env() or {})
    return keys


def read_stack_config() -> tuple[StackConfig, StackSecrets]:
    cfg = pulumi.Config(NAMESPACE)
    raw = {}
    for key in TOP_LEVEL_KEYS:
        value = cfg.get(key)
        if value is None:
            continue
        # Objects and lists arrive JSON-encoded; scalars as strings that pydantic coerces.
        raw[key] = cfg.get_object(key) if value.lstrip()[:1] in ("{", "[") else value
    secrets = {key: cfg.get_secret(key) for key in SECRET_KEYS}
    present = {key for key, value in secrets.items() if value is not None}

    known = set(TOP_LEVEL_KEYS) | set(SECRET_KEYS)
    unknown = sorted(
        k.partition(":")[2] for k in _all_config_keys()
        if k.startswith(f"{NAMESPACE}:") and k.partition(":")[2] not in known
    )
    try:
        stack_config = load_stack_config(raw, secrets_present=present)
    except ConfigError as exc:
        raise ConfigError([ConfigIssue(path=k, message="unknown key") for k in unknown] + exc.issues) from None
    if unknown:
        raise ConfigError([ConfigIssue(path=k, message="unknown key; check the spelling against the README's "
                                       "config reference") for k in unknown])
    return stack_config, StackSecrets(values=secrets)
