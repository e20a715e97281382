"""Exporter configuration: a YAML file validated with pydantic.

Bad config must stop the process with one line per bad key (exit code 2 in ``__main__``), never
start an exporter that reads the wrong contracts or the wrong chain.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from exporter.addresses import PROFILES, Profile, parse_address

CONTRACT_KEYS = ("deposit_pool", "stqrl", "validator_manager")


class ConfigError(Exception):
    """The config file is missing, unreadable or invalid; ``lines`` holds one message per bad key."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class Contracts(BaseModel):
    """Addresses of the pool's contracts, in the profile's text form (checked against the profile)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deposit_pool: str
    stqrl: str
    validator_manager: str

    @field_validator(*CONTRACT_KEYS)
    @classmethod
    def _check_prefix(cls, value: str, info: ValidationInfo) -> str:
        # The profile comes through the validation context (see parse_config) so that a bad address
        # is reported under its own key even when other keys are bad too.
        profile = (info.context or {}).get("profile")
        if isinstance(profile, Profile):
            parse_address(value, profile)
        return value


class ExporterConfig(BaseModel):
    """Everything the exporter needs; defaults suit the monitoring server's systemd unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Literal["gzond", "gqrl"]
    # One endpoint (rpc_url) or an ordered fallback list (rpc_urls), exactly one of the two: each cycle
    # uses the first endpoint that answers with a current head (exporter/endpoints.py).
    rpc_url: str | None = None
    rpc_urls: list[str] | None = Field(None, min_length=1, max_length=32)
    contracts: Contracts
    listen_address: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes over the private network
    listen_port: int = Field(9101, ge=0, le=65535)
    interval_seconds: float = Field(30.0, gt=0, le=3600)
    rpc_timeout_seconds: float = Field(10.0, gt=0, le=300)
    rpc_retries: int = Field(2, ge=0, le=10)
    rpc_retry_backoff_seconds: float = Field(0.5, ge=0, le=60)
    state_dir: Path = Path("/var/lib/quantapool-exporter")
    log_max_block_range: int = Field(1000, ge=1, le=1_000_000)
    log_max_ranges_per_cycle: int = Field(20, ge=1, le=10_000)
    reorg_depth: int = Field(64, ge=0, le=100_000)
    start_block: int = Field(0, ge=0)
    # A head that has not advanced for this long is stale: the next endpoint is tried for a newer one,
    # and while every endpoint is stale the cycle does not count as a success (quantapool_exporter_up 0).
    head_stale_seconds: float = Field(300.0, gt=0, le=86_400)

    @field_validator("rpc_url")
    @classmethod
    def _check_rpc_url(cls, value: str | None) -> str | None:
        return value if value is None else _check_url(value)

    @field_validator("rpc_urls")
    @classmethod
    def _check_rpc_urls(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        for url in value:
            _check_url(url)
        if len(set(value)) != len(value):
            raise ValueError("lists an endpoint twice; keep each URL once, in the order to try them")
        return value

    @field_validator("listen_address")
    @classmethod
    def _check_listen_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be an IP address (e.g. 0.0.0.0 or 10.0.0.5), got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _check_profile_dependent(self) -> ExporterConfig:
        problems: list[str] = []
        if (self.rpc_url is None) == (self.rpc_urls is None):
            problems.append("rpc_url: set exactly one of rpc_url (one endpoint) or rpc_urls (a fallback list)")
        parsed: dict[str, bytes] = {}
        for key in CONTRACT_KEYS:
            try:
                parsed[key] = parse_address(getattr(self.contracts, key), self.profile_info)
            except ValueError as exc:
                problems.append(f"contracts.{key}: {exc}")
        if len(parsed) == len(CONTRACT_KEYS) and len(set(parsed.values())) != len(parsed):
            problems.append("contracts: deposit_pool, stqrl and validator_manager must be distinct addresses")
        # Each cycle re-reads the last reorg_depth blocks; the per-cycle budget must reach past them
        # or the cursor could never advance.
        if self.log_max_block_range * self.log_max_ranges_per_cycle <= self.reorg_depth:
            problems.append(
                "log_max_ranges_per_cycle: log_max_block_range * log_max_ranges_per_cycle must exceed "
                f"reorg_depth ({self.reorg_depth}); raise either value"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def endpoints(self) -> list[str]:
        """The RPC endpoints in the order to try them."""
        return list(self.rpc_urls) if self.rpc_urls is not None else [str(self.rpc_url)]

    @property
    def profile_info(self) -> Profile:
        return PROFILES[self.profile]

    def address_bytes(self, key: str) -> bytes:
        """20-byte address of contract ``key`` (one of CONTRACT_KEYS)."""
        return parse_address(getattr(self.contracts, key), self.profile_info)


def _check_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"must be an http(s) URL like http://127.0.0.1:8545, got {value!r}")
    return value


def _format_errors(exc: ValidationError) -> list[str]:
    lines: list[str] = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = "unknown key; remove it or fix its spelling"
        elif err["type"] == "missing":
            msg = "required key is missing"
        if key:
            lines.append(f"{key}: {msg}")
        else:
            lines.extend(msg.splitlines())
    return lines


def parse_config(data: Any) -> ExporterConfig:
    """Validate already-loaded YAML data; raises ConfigError with one line per bad key."""
    if not isinstance(data, dict):
        raise ConfigError(["config: top level must be a mapping of keys to values"])
    context = {"profile": PROFILES.get(data["profile"]) if isinstance(data.get("profile"), str) else None}
    try:
        return ExporterConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_config(path: Path) -> ExporterConfig:
    """Read and validate the YAML config at ``path``; raises ConfigError on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config {path}: cannot read ({exc.strerror}); pass an existing file"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"config {path}: invalid YAML{where}; fix the syntax"]) from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError([f"config {path}: {line}" for line in exc.lines]) from None
