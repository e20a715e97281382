"""Read the stack config from `pulumi.Config` into the validated model, and secrets as secret Outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import config as runtime_config

from core.config import (
    KEYS_PASSPHRASE_ENV,
    NAMESPACE,
    SECRET_KEYS,
    ConfigError,
    ConfigIssue,
    StackConfig,
    load_stack_config,
    raw_config_from_stack_file,
)

#: Where the `Pulumi.<stack>.yaml` files live when not next to `Pulumi.yaml` (tests point it at fixture copies).
STACK_DIR_ENV = "QPOOL_STACK_DIR"
PROJECT_DIR = Path(__file__).resolve().parent.parent


def stack_dir() -> Path:
    """The directory holding the project's stack files: $QPOOL_STACK_DIR, else the project directory."""
    return Path(os.environ[STACK_DIR_ENV]) if os.environ.get(STACK_DIR_ENV) else PROJECT_DIR


def other_stacks_operator_keys(stack: str, directory: Path | None = None,
                               exclude: Path | None = None) -> dict[str, tuple[Any, Any]]:
    """name -> (environment, operatorSshKeys) of every other `Pulumi.<name>.yaml` in the stack directory
    (unreadable files are skipped: their own `qpool validate` reports them)."""
    out: dict[str, tuple[Any, Any]] = {}
    for path in sorted((directory or stack_dir()).glob("Pulumi.*.yaml")):
        name = path.name[len("Pulumi."):-len(".yaml")]
        if name == stack or (exclude is not None and path.resolve() == exclude.resolve()):
            continue
        try:
            doc = yaml.safe_load(path.read_text()) or {}
            raw = raw_config_from_stack_file(doc)
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        out[name] = (raw.get("environment"), raw.get("operatorSshKeys"))
    return out

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


def plaintext_secret_issues(present: set[str]) -> list[ConfigIssue]:
    """Secret keys the engine did not hand over as secrets: they sit in plain text in the stack file.

    `qpool validate` sees `{secure: ...}` in the file; the program only sees decrypted values, so it asks the
    engine which keys were secret. A plain value here would otherwise be accepted and reach the state file.
    """
    return [ConfigIssue(path=key, message="is a secret but stored in plain text; remove it and run "
                        f"`pulumi config set --secret {key} ...`")
            for key in sorted(present) if not runtime_config.is_config_secret(f"{NAMESPACE}:{key}")]


#: The hcloud provider's token, per stack (one Hetzner project per environment): stack config, secret.
PROVIDER_TOKEN_KEY = "hcloud:token"  # noqa: S105 - a config key, not a secret


def provider_token_problems(value: str | None, is_secret: bool) -> list[str]:
    """Why this stack's `hcloud:token` is unusable: one line per problem (none: fine)."""
    if value is None:
        return [f"{PROVIDER_TOKEN_KEY}: not set in this stack; run `pulumi config set --secret {PROVIDER_TOKEN_KEY} "
                "<API token of this stack's Hetzner project>` (the ambient HCLOUD_TOKEN is not accepted)"]
    if not is_secret:
        return [f"{PROVIDER_TOKEN_KEY}: stored in plain text; remove it and run `pulumi config set --secret "
                f"{PROVIDER_TOKEN_KEY} ...`"]
    return []


def refuse_ambient_provider_token() -> None:
    """Stop a real preview/up, before any resource, unless `hcloud:token` is a secret of this stack.

    Why not the ambient HCLOUD_TOKEN: one shell variable serves whichever stack is selected, so a testnet
    session could change mainnet's project (or the reverse). A per-stack secret ties the token to its stack
    and its Hetzner project. Not checked under `qpool plan`'s mocks, which need no token.
    """
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.settings import get_monitor

    if isinstance(get_monitor(), MockMonitor):
        return
    problems = provider_token_problems(pulumi.Config("hcloud").get("token"),
                                       runtime_config.is_config_secret(PROVIDER_TOKEN_KEY))
    for line in problems:
        pulumi.log.error(line)
    if problems:
        raise pulumi.RunError(f"{PROVIDER_TOKEN_KEY} is not usable; nothing was changed")


async def _value(value: Any) -> Any:
    return value


def keys_passphrase(secrets: StackSecrets) -> pulumi.Output[str] | None:
    """The sealed bundle's passphrase: the stack secret if set, else $QPOOL_KEYS_PASSPHRASE (issue 13).

    Why the variable: a stack secret is readable by anything that can preview the stack (CI included); the
    variable exists only in the operator's `pulumi up` shell. Without either, a preview gets an unknown value
    (the key imports show as unknown, never as deleted); a real `up` was already stopped by
    `refuse_missing_keys_passphrase`, before any resource.
    """
    from_stack = secrets.get("validatorKeysPassphrase")
    if from_stack is not None:
        return from_stack
    from_env = os.environ.get(KEYS_PASSPHRASE_ENV)
    if from_env:
        return pulumi.Output.secret(from_env)
    if secrets.get("validatorKeys") is None:
        return None
    pulumi.log.warn(f"validatorKeys: no passphrase in this preview ({KEYS_PASSPHRASE_ENV} unset): the key "
                    "import steps are shown with unknown input")
    return pulumi.Output(set(), _value(None), _value(False), _value(True))


def refuse_missing_keys_passphrase(secrets: StackSecrets) -> None:
    """A real `up` with a key bundle but no passphrase (stack secret or $QPOOL_KEYS_PASSPHRASE) stops here,
    before any resource, naming what to export. Previews go on (see `keys_passphrase`)."""
    if (secrets.get("validatorKeys") is None or secrets.get("validatorKeysPassphrase") is not None
            or os.environ.get(KEYS_PASSPHRASE_ENV) or pulumi.runtime.is_dry_run()):
        return
    raise pulumi.RunError(f"validatorKeysPassphrase: not in the stack and {KEYS_PASSPHRASE_ENV} is not set; export "
                          "it (from your password manager) for this `pulumi up`; nothing was changed")


def read_stack_config() -> tuple[StackConfig, StackSecrets]:
    """The validated config of the running stack (its name keys the mainnet guardrails) and its secrets."""
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
    plaintext = plaintext_secret_issues(present)
    try:
        stack = pulumi.get_stack()
        stack_config = load_stack_config(raw, secrets_present=present, stack=stack,
                                         other_stacks_keys=other_stacks_operator_keys(stack))
    except ConfigError as exc:
        raise ConfigError([ConfigIssue(path=k, message="unknown key") for k in unknown] + exc.issues
                          + plaintext) from None
    if plaintext:
        raise ConfigError(plaintext)
    if unknown:
        raise ConfigError([ConfigIssue(path=k, message="unknown key; check the spelling against the README's "
                                       "config reference") for k in unknown])
    return stack_config, StackSecrets(values=secrets)
