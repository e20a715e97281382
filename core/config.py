"""The stack configuration: one pydantic model, validated before any resource exists.

Why one model: every component, `qpool` command and the local lab read the same validated object, so a
bad trusted-IP list or a duplicated private IP is caught once, with one clear line naming the config key,
instead of surfacing as a half-applied `pulumi up`.

The raw input is a dict of top-level config keys without the `quantapool:` namespace, taken either from
`pulumi.Config` (inside the program) or from a `Pulumi.<stack>.yaml` file (offline in `qpool`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from core import catalog

NAMESPACE = "quantapool"
PROJECT = "quantapool"
APP_LABEL = "quantapool"

#: Config keys that hold secrets: set with `pulumi config set --secret KEY`, never in plain YAML.
SECRET_KEYS: tuple[str, ...] = (
    "discordWebhookUrl",
    "telegramBotToken",
    "pagerdutyRoutingKey",
    "heartbeatWebhookUrl",
    "validatorKeys",
    "validatorKeysPassphrase",
)
#: The sealed key bundle's passphrase for `pulumi up` when it is not a stack secret (recommended: a stack
#: secret is readable by anything that can preview the stack, CI included). `qpool keys seal/unseal` read it too.
KEYS_PASSPHRASE_ENV = "QPOOL_KEYS_PASSPHRASE"  # noqa: S105 - an env var name, not a secret

ALL_TRAFFIC = {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}
#: On mainnet a trusted-address entry may not be wider than this (prefix length per IP version). A trusted
#: operator is a host, an office or a VPN egress range (IPv4 /24../32, IPv6 /48../128); an IPv4 /15 or an IPv6
#: /31 is a provider's or a country's space, and a few such entries add up to "most of the internet" without
#: any one of them, or their union, being the whole space. Testnet stacks are not limited.
MAINNET_MIN_PREFIX = {4: 16, 6: 32}
_ADDRESS_RE = {"gzond": re.compile(r"^Z[0-9a-fA-F]{40}$"), "gqrl": re.compile(r"^Q[0-9a-fA-F]{40}$")}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
UNSET_SHA256 = "0" * 64


class ConfigIssue(BaseModel):
    """One problem with one config key: where, what is wrong, how to fix it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{NAMESPACE}:{self.path}: {self.message}"


class ConfigError(Exception):
    """Raised with every issue found, so an operator fixes them all in one pass."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ClientPin(_Model):
    """A client binary pinned by version and checksum: installed only if the sha256 matches."""

    version: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://\S+$")
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        if not _SHA256_RE.match(value):
            raise ValueError("must be 64 lowercase hex characters (the output of `sha256sum FILE`)")
        return value

    def resolved_url(self) -> str:
        return self.url.replace("{version}", self.version)


class NetworkFile(_Model):
    """A chain file (config.yml, genesis.ssz, genesis.json) pinned by checksum."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(pattern=r"^https?://\S+$")
    sha256: str

    _check_sha = field_validator("sha256")(ClientPin._sha256.__func__)  # type: ignore[attr-defined]


#: Where QuantaPool publishes the client binaries it builds from the tagged upstream sources. The
#: checksums are the all-zero marker until a release is vetted: the host install refuses such a binary.
_MIRROR = "https://releases.quantapool.example/clients"
DEFAULT_PINS: dict[str, dict[str, ClientPin]] = {
    "gzond": {
        "execution": ClientPin(version="v0.2.2", url=_MIRROR + "/gzond-{version}-linux-amd64", sha256=UNSET_SHA256),
        "beacon": ClientPin(version="v0.2.2", url=_MIRROR + "/beacon-chain-{version}-linux-amd64",
                            sha256=UNSET_SHA256),
        "validator": ClientPin(version="v0.2.2", url=_MIRROR + "/validator-{version}-linux-amd64",
                               sha256=UNSET_SHA256),
    },
    "gqrl": {
        "execution": ClientPin(version="v0.3.0", url=_MIRROR + "/gqrl-{version}-linux-amd64", sha256=UNSET_SHA256),
        "beacon": ClientPin(version="v0.3.0", url=_MIRROR + "/beacon-chain-{version}-linux-amd64",
                            sha256=UNSET_SHA256),
        "validator": ClientPin(version="v0.3.0", url=_MIRROR + "/validator-{version}-linux-amd64",
                               sha256=UNSET_SHA256),
    },
}


class Clients(_Model):
    """Execution-client profile and pinned binaries. `gzond`: Testnet V1; `gqrl`: QRL 2.0 testnet V2."""

    profile: Literal["gzond", "gqrl"] = "gzond"
    arch: Literal["amd64", "arm64"] = "amd64"
    execution: ClientPin | None = None
    beacon: ClientPin | None = None
    validator: ClientPin | None = None
    network_files: tuple[NetworkFile, ...] = ()
    execution_network_flag: Literal["testnet", "betanet", "none"] = "testnet"
    chain_id: int = Field(default=32382, gt=0)
    beacon_bootstrap_nodes: tuple[str, ...] = ()
    checkpoint_sync_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    genesis_beacon_api_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    execution_max_peers: int = Field(default=50, ge=1, le=500)
    beacon_max_peers: int = Field(default=70, ge=1, le=500)

    def pins(self) -> dict[str, ClientPin]:
        """The pinned releases, the profile's defaults filling what the stack leaves out (testnet only)."""
        defaults = DEFAULT_PINS[self.profile]
        return {name: getattr(self, name) or defaults[name] for name in ("execution", "beacon", "validator")}

    @property
    def rpc_namespace(self) -> str:
        return "zond" if self.profile == "gzond" else "qrl"

    @property
    def address_prefix(self) -> str:
        return "Z" if self.profile == "gzond" else "Q"

    @property
    def beacon_rest_prefix(self) -> str:
        return f"/{self.rpc_namespace}/v1"


def _known_server_type(value: str) -> str:
    if value in catalog.RETIRED_SERVER_TYPES:
        raise ValueError(f"{value} was retired by Hetzner in {catalog.RETIRED_WHEN} (server creation fails); "
                         f"use {catalog.RETIRED_SERVER_TYPES[value]}")
    if value not in catalog.SERVER_TYPES:
        fitting = (t for t, st in catalog.SERVER_TYPES.items() if st.memory_gib >= 16 and st.arch == "amd64")
        examples = ", ".join(sorted(fitting)[:6])
        raise ValueError(f"unknown Hetzner server type {value!r}; e.g. {examples}")
    return value


def _known_location(value: str) -> str:
    if value not in catalog.LOCATIONS:
        raise ValueError(f"unknown Hetzner location {value!r}; one of {', '.join(sorted(catalog.LOCATIONS))}")
    return value


class HostPlacement(_Model):
    server_type: str
    location: str
    private_ip: str

    _server_type = field_validator("server_type")(_known_server_type)
    _location = field_validator("location")(_known_location)

    @field_validator("private_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address (e.g. 10.42.1.11)") from None
        return value


class ValidatorPair(_Model):
    """A primary and a hot standby holding the same keys; exactly one of them may ever sign."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,11}$")
    active: Literal["primary", "backup"] = "primary"
    primary: HostPlacement
    backup: HostPlacement
    fee_recipient: str
    graffiti: str = Field(default="quantapool", max_length=32)
    doppelganger: bool = True
    chain_volume_gib: int = Field(default=300, ge=10, le=10240)


class Monitoring(_Model):
    server_type: str = "cx33"
    location: str = "fsn1"
    private_ip: str
    volume_gib: int = Field(default=50, ge=10, le=10240)
    grafana_version: str = "11.6.1"
    #: A DNS name (A record -> the monitoring server's IPv4) for Grafana's URL and certificate; optional.
    grafana_dns_name: str | None = Field(
        default=None, max_length=253, pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
    contract_exporter_rpc_url: str | None = Field(default=None, pattern=r"^https?://\S+$")

    _ip = field_validator("private_ip")(HostPlacement._ip.__func__)  # type: ignore[attr-defined]
    _server_type = field_validator("server_type")(_known_server_type)
    _location = field_validator("location")(_known_location)


class PoolContracts(_Model):
    deposit_pool: str
    stqrl: str
    validator_manager: str
    #: the pool is intentionally paused (e.g. before a migration): the paused alert stays quiet
    expect_paused: bool = False


class Alerting(_Model):
    """Where alerts go and what they compare against. Receiver secrets are top-level secret keys.

    The heartbeat (DeadMansSwitch) goes to the secret `heartbeatWebhookUrl`: an external dead-man's-switch
    service (healthchecks-style ping URL, PagerDuty heartbeat, ...) that alerts when the pings stop, i.e.
    when Prometheus, Alertmanager or the monitoring server dies. `expectedActiveKeys` is the number of keys
    per pair that must be active on the pair's signing host (ValidatorKeysNotActive).
    """

    telegram_chat_id: str | None = None
    runbook_base_url: str = "https://github.com/quantapool/quantapool-infra/blob/main/docs/runbooks"
    expected_active_keys: dict[str, int] = Field(default_factory=dict)

    @field_validator("expected_active_keys")
    @classmethod
    def _counts(cls, value: dict[str, int]) -> dict[str, int]:
        for pair, count in value.items():
            if count < 1:
                raise ValueError(f"{pair}: {count} is not a key count; give the number of keys (>= 1) the pair "
                                 "signs with, or leave the pair out")
        return value


#: Secret keys that hold an Alertmanager integration's credential or URL.
RECEIVER_SECRETS = ("discordWebhookUrl", "telegramBotToken", "pagerdutyRoutingKey")
HEARTBEAT_SECRET = "heartbeatWebhookUrl"  # noqa: S105 - a config key name


def alerting_issues(cfg: StackConfig) -> list[ConfigIssue]:
    """Alerting settings that contradict the topology (checked for every stack)."""
    pairs = {p.name for p in cfg.validator_pairs}
    return [ConfigIssue(path=f"alerting.expectedActiveKeys.{name}", message=f"no validator pair {name!r}; "
                        f"use one of {', '.join(sorted(pairs))}")
            for name in cfg.alerting.expected_active_keys if name not in pairs]


def deployment_issues(cfg: StackConfig) -> list[ConfigIssue]:
    """What a mainnet stack must have before `pulumi up` may create anything: someone must be paged.

    Without PagerDuty critical alerts reach nobody at night; without the heartbeat nobody learns that the
    monitoring server or Alertmanager died; without expected key counts a validator that runs but holds no
    keys is noticed hours later. Testnet gets the same points as warnings (warnings_for).
    """
    if cfg.environment != "mainnet":
        return []
    issues = []
    if "pagerdutyRoutingKey" not in cfg.secrets_present:
        issues.append(ConfigIssue(path="pagerdutyRoutingKey", message="mainnet pages critical alerts through "
                                  "PagerDuty; run `pulumi config set --secret pagerdutyRoutingKey KEY`"))
    if HEARTBEAT_SECRET not in cfg.secrets_present:
        issues.append(ConfigIssue(path=HEARTBEAT_SECRET, message="mainnet needs an external dead-man's switch; "
                                  f"run `pulumi config set --secret {HEARTBEAT_SECRET} https://...` (docs/runbooks/"
                                  "DeadMansSwitch.md)"))
    for pair in cfg.validator_pairs:
        if pair.name not in cfg.alerting.expected_active_keys:
            issues.append(ConfigIssue(path=f"alerting.expectedActiveKeys.{pair.name}", message="mainnet needs the "
                                      "number of keys this pair signs with (ValidatorKeysNotActive); "
                                      f"pulumi config set --path 'alerting.expectedActiveKeys.{pair.name}' N"))
    return issues


class NetworkSettings(_Model):
    cidr: str = "10.42.0.0/16"
    subnet: str = "10.42.1.0/24"
    ssh_allowed_cidrs: tuple[str, ...] = ()
    grafana_allowed_cidrs: tuple[str, ...] = ()

    @field_validator("cidr", "subnet")
    @classmethod
    def _v4_network(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 network in CIDR form ({exc}); e.g. 10.42.1.0/24") from None
        if not net.is_private:
            raise ValueError(f"{value!r} is not a private range; use RFC 1918 space such as 10.42.0.0/16")
        return value

    @field_validator("ssh_allowed_cidrs", "grafana_allowed_cidrs")
    @classmethod
    def _cidrs(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise ValueError(
                    f"{value!r} is not a CIDR ({exc}); write a host as 203.0.113.7/32 or 2001:db8::1/128"
                ) from None
        return values


class Hetzner(_Model):
    image: str = catalog.DEBIAN_IMAGE
    network_zone: str = "eu-central"
    backups: bool = True
    protection: bool = True


class StackConfig(_Model):
    environment: Literal["testnet", "mainnet"]
    hetzner: Hetzner = Hetzner()
    network: NetworkSettings = NetworkSettings()
    clients: Clients = Clients()
    validator_pairs: tuple[ValidatorPair, ...]
    monitoring: Monitoring
    pool_contracts: PoolContracts | None = None
    alerting: Alerting = Alerting()
    operator_ssh_keys: tuple[str, ...] = Field(min_length=1)
    #: which secret keys are set (values never enter this model; the program reads them as secrets)
    secrets_present: frozenset[str] = frozenset()

    @field_validator("operator_ssh_keys")
    @classmethod
    def _keys(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not re.match(r"^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]{40,}( .*)?$", value):
                raise ValueError(f"{value[:30]!r}... is not an OpenSSH public key line (ssh-ed25519 AAAA... comment)")
        return values

    # -- derived views -------------------------------------------------------------------------------
    def hosts(self) -> list[HostSpec]:
        """Every server of the stack, in a stable order: pairs first, monitoring last."""
        out: list[HostSpec] = []
        for pair in self.validator_pairs:
            for role in ("primary", "backup"):
                placement: HostPlacement = getattr(pair, role)
                out.append(HostSpec(
                    name=f"qp-{self.environment}-{pair.name}-{role}", role=role, pair=pair.name,
                    server_type=placement.server_type, location=placement.location,
                    private_ip=placement.private_ip, active=(pair.active == role)))
        mon = self.monitoring
        out.append(HostSpec(name=f"qp-{self.environment}-monitoring", role="monitoring", pair=None,
                            server_type=mon.server_type, location=mon.location, private_ip=mon.private_ip,
                            active=False))
        return out

    def key_hosts(self, pair: str | None = None) -> list[HostSpec]:
        return [h for h in self.hosts() if h.role != "monitoring" and (pair is None or h.pair == pair)]

    def monitoring_host(self) -> HostSpec:
        return self.hosts()[-1]

    def backup_senders_of(self, host: HostSpec) -> list[HostSpec]:
        """The key hosts allowed to ship slashing-protection backups to `host`: its pair partner on a key host,
        every key host on the monitoring server (the mirror of a key host's `backup_targets`)."""
        if not host.is_key_host:
            return self.key_hosts()
        return [h for h in self.key_hosts(host.pair) if h.name != host.name]

    def pair(self, name: str) -> ValidatorPair:
        for pair in self.validator_pairs:
            if pair.name == name:
                return pair
        raise KeyError(name)


@dataclass(frozen=True)
class HostSpec:
    """One server, as every consumer (components, render, lab, qpool) names and addresses it."""

    name: str
    role: str  # primary | backup | monitoring
    pair: str | None
    server_type: str
    location: str
    private_ip: str
    active: bool  # the pair's configured signer

    @property
    def is_key_host(self) -> bool:
        return self.role in ("primary", "backup")

    @property
    def labels(self) -> dict[str, str]:
        labels = {"app": APP_LABEL, "role": self.role}
        if self.pair:
            labels["pair"] = self.pair
        return labels


# ---------------------------------------------------------------------------------------------------
# Semantic checks across fields: each returns issues instead of raising, so all are reported at once.
# ---------------------------------------------------------------------------------------------------

def stack_requires_mainnet(stack: str | None) -> bool:
    """Guardrails key on the stack name too: a `mainnet*` stack is mainnet whatever its config says."""
    return stack is not None and stack.startswith("mainnet")


def _stack_issues(cfg: StackConfig, stack: str | None) -> list[ConfigIssue]:
    """The stack name and `environment` must agree: the mainnet guardrails, host names and the `env` label
    (which `qpool` uses to find a stack's servers) all follow `environment`."""
    if stack is None:
        return []
    if stack_requires_mainnet(stack) and cfg.environment != "mainnet":
        return [ConfigIssue(path="environment", message=f"is {cfg.environment} but the stack is {stack}: that would "
                            "turn every mainnet guardrail off; set quantapool:environment to mainnet")]
    if stack == "testnet" and cfg.environment != "testnet":
        return [ConfigIssue(path="environment", message=f"is {cfg.environment} but the stack is testnet; set "
                            "quantapool:environment to testnet, or use a stack named mainnet")]
    return []


def _semantic_issues(cfg: StackConfig, *, mainnet: bool) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    add = lambda path, msg: issues.append(ConfigIssue(path=path, message=msg))  # noqa: E731

    seen_keys: dict[str, int] = {}
    for i, key in enumerate(cfg.operator_ssh_keys):
        blob = _key_blob(key)
        if blob in seen_keys:
            add(f"operatorSshKeys[{i}]", f"is the same public key as operatorSshKeys[{seen_keys[blob]}]; Hetzner "
                "refuses a second SSH key with the same fingerprint: list each key once")
        seen_keys.setdefault(blob, i)

    cidr = ipaddress.IPv4Network(cfg.network.cidr)
    subnet = ipaddress.IPv4Network(cfg.network.subnet)
    if not subnet.subnet_of(cidr):
        add("network.subnet", f"{subnet} is not inside network.cidr {cidr}; pick a subnet of it")
    gateway = next(cidr.hosts())  # Hetzner routes private traffic through the network's first address

    if cfg.hetzner.network_zone not in set(catalog.LOCATIONS.values()):
        add("hetzner.networkZone", f"unknown network zone {cfg.hetzner.network_zone!r}; one of "
            + ", ".join(sorted(set(catalog.LOCATIONS.values()))))

    if not cfg.validator_pairs:
        add("validatorPairs", "at least one validator pair (primary + backup) is required")
    seen_ips: dict[str, str] = {}
    placements: list[tuple[str, str, str, str, str]] = []  # path, role, type, location, ip
    pair_names: set[str] = set()
    for i, pair in enumerate(cfg.validator_pairs):
        base = f"validatorPairs[{i}]"
        if pair.name in pair_names:
            add(f"{base}.name", f"pair name {pair.name!r} is used twice; pair names must be unique")
        pair_names.add(pair.name)
        if not _ADDRESS_RE[cfg.clients.profile].match(pair.fee_recipient):
            add(f"{base}.feeRecipient", f"{pair.fee_recipient!r} is not a {cfg.clients.profile} address; it must be "
                f"{cfg.clients.address_prefix} followed by 40 hex characters")
        for role in ("primary", "backup"):
            p: HostPlacement = getattr(pair, role)
            placements.append((f"{base}.{role}", role, p.server_type, p.location, p.private_ip))
        if pair.chain_volume_gib < catalog.STORAGE.minimum_volume_gib:
            add(f"{base}.chainVolumeGib", f"{pair.chain_volume_gib} GiB is below one year of chain growth plus "
                f"headroom ({catalog.STORAGE.minimum_volume_gib} GiB); raise it")
    placements.append(("monitoring", "monitoring", cfg.monitoring.server_type, cfg.monitoring.location,
                       cfg.monitoring.private_ip))

    for path, role, server_type, location, ip in placements:
        st = catalog.SERVER_TYPES[server_type]
        needs = catalog.ROLE_NEEDS[role]
        if st.memory_gib < needs.min_memory_gib or st.vcpus < needs.min_vcpus:
            add(f"{path}.serverType", f"{server_type} has {st.vcpus} vCPU/{st.memory_gib} GiB; a {role} host "
                f"needs at least {needs.min_vcpus} vCPU/{needs.min_memory_gib} GiB")
        if role != "monitoring" and st.arch != cfg.clients.arch:
            add(f"{path}.serverType", f"{server_type} is {st.arch} but clients.arch is {cfg.clients.arch}; "
                "pick a server type matching the pinned binaries")
        zone = catalog.LOCATIONS[location]
        if zone != cfg.hetzner.network_zone:
            add(f"{path}.location", f"{location} is in network zone {zone} but the private network's subnet is in "
                f"{cfg.hetzner.network_zone}; pick a location in {cfg.hetzner.network_zone}")
        addr = ipaddress.IPv4Address(ip)
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            add(f"{path}.privateIp", f"{ip} is not a usable address of network.subnet {subnet}")
        elif addr == gateway:
            add(f"{path}.privateIp", f"{ip} is the network gateway (reserved by Hetzner); use another address")
        if ip in seen_ips:
            add(f"{path}.privateIp", f"{ip} is already used by {seen_ips[ip]}; private IPs must be unique")
        seen_ips.setdefault(ip, path)

    if cfg.pool_contracts is not None:
        for field in ("deposit_pool", "stqrl", "validator_manager"):
            value = getattr(cfg.pool_contracts, field)
            if not _ADDRESS_RE[cfg.clients.profile].match(value):
                add(f"poolContracts.{to_camel(field)}", f"{value!r} is not a {cfg.clients.profile} address "
                    f"({cfg.clients.address_prefix} + 40 hex)")

    issues.extend(_client_issues(cfg, mainnet=mainnet))
    issues.extend(alerting_issues(cfg))
    if mainnet:
        issues.extend(_mainnet_issues(cfg))
    return issues


def _client_issues(cfg: StackConfig, *, mainnet: bool) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    c = cfg.clients
    for name in ("execution", "beacon", "validator"):
        if getattr(c, name) is None and mainnet:
            issues.append(ConfigIssue(path=f"clients.{name}", message="mainnet requires an explicit pinned "
                                      "release: set version, url and sha256 (README: Pinning client releases)"))
    if c.profile == "gqrl" and c.execution_network_flag == "betanet":
        issues.append(ConfigIssue(path="clients.executionNetworkFlag",
                                  message="betanet is a gzond network; gqrl stacks use testnet or none"))
    return issues


def _mainnet_issues(cfg: StackConfig) -> list[ConfigIssue]:
    """Guardrails that make a mainnet stack refuse settings that are merely convenient on testnet."""
    issues: list[ConfigIssue] = []
    add = lambda path, msg: issues.append(ConfigIssue(path=path, message=msg))  # noqa: E731
    for key, values in (("sshAllowedCidrs", cfg.network.ssh_allowed_cidrs),
                        ("grafanaAllowedCidrs", cfg.network.grafana_allowed_cidrs)):
        if not values:
            add(f"network.{key}", "mainnet needs at least one trusted CIDR; "
                f"pulumi config set --path 'network.{key}[0]' YOUR.IP/32")
        issues.extend(_trusted_cidr_issues(f"network.{key}", values))
    if not cfg.hetzner.protection:
        add("hetzner.protection", "mainnet requires delete and rebuild protection; set it to true")
    if not cfg.hetzner.backups:
        add("hetzner.backups", "mainnet requires Hetzner backups; set it to true")
    # An all-zero pin is installed by nobody: the hosts refuse it during `pulumi up`, after servers exist.
    for name in ("execution", "beacon", "validator"):
        pin = getattr(cfg.clients, name)
        if pin is not None and pin.sha256 == UNSET_SHA256:
            add(f"clients.{name}.sha256", "is the all-zero \"not vetted\" marker, which the hosts refuse to install; "
                "set the `sha256sum` of the release you vetted")
    for i, nf in enumerate(cfg.clients.network_files):
        if nf.sha256 == UNSET_SHA256:
            add(f"clients.networkFiles[{i}].sha256", f"{nf.name}: the all-zero marker is refused on the hosts; set "
                "the `sha256sum` of the published file")
    if not cfg.clients.beacon_bootstrap_nodes:
        add("clients.beaconBootstrapNodes", "is empty: the mainnet beacon node would find no peers; list the "
            "network's published bootstrap records (qnr:...)")
    return issues


def _trusted_cidr_issues(path: str, values: tuple[str, ...]) -> list[ConfigIssue]:
    """Refuse trusted-address lists that open a port to (nearly) everyone, by address-space arithmetic.

    Per IP version the entries are collapsed (`ipaddress.collapse_addresses` merges adjacent and overlapping
    networks), so 0.0.0.0/1 + 128.0.0.0/1, or any set of entries whose union is the whole space, is refused
    like 0.0.0.0/0. Each entry must also be no wider than MAINNET_MIN_PREFIX.
    """
    issues: list[ConfigIssue] = []
    nets = [ipaddress.ip_network(v) for v in values]
    whole = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
    covered: set[int] = set()
    for version, everything in whole.items():
        same = [n for n in nets if n.version == version]
        if same and everything in ipaddress.collapse_addresses(same):  # type: ignore[arg-type]
            covered.add(version)
            if everything not in same:  # a single 0.0.0.0/0 is reported on its own entry below
                issues.append(ConfigIssue(path=path, message=f"{', '.join(str(n) for n in same)} together cover "
                                          f"the whole IPv{version} internet; list trusted addresses only"))
    for i, net in enumerate(nets):
        if net in ALL_TRAFFIC:
            issues.append(ConfigIssue(path=f"{path}[{i}]", message=f"{net} opens the port to the whole internet; "
                                      "list trusted addresses only"))
        elif net.version not in covered and net.prefixlen < MAINNET_MIN_PREFIX[net.version]:
            issues.append(ConfigIssue(path=f"{path}[{i}]", message=f"{net} is wider than the mainnet limit "
                                      f"/{MAINNET_MIN_PREFIX[net.version]}; list your hosts' or office's range"))
    return issues


def warnings_for(cfg: StackConfig) -> list[str]:
    """Things that are allowed but that an operator should know before `pulumi up`."""
    out: list[str] = []
    if not (set(RECEIVER_SECRETS) & cfg.secrets_present):
        out.append("no alert receiver configured (discordWebhookUrl, telegramBotToken or pagerdutyRoutingKey): "
                   "alerts will only show in Alertmanager")
    if HEARTBEAT_SECRET not in cfg.secrets_present:
        out.append(f"{HEARTBEAT_SECRET} is not set: nobody learns when Alertmanager or the monitoring server dies")
    if cfg.environment != "mainnet" and (missing := [p.name for p in cfg.validator_pairs
                                                       if p.name not in cfg.alerting.expected_active_keys]):
        out.append(f"alerting.expectedActiveKeys has no count for {', '.join(missing)}: ValidatorKeysNotActive "
                   "stays quiet for those pairs")
    if "telegramBotToken" in cfg.secrets_present and not cfg.alerting.telegram_chat_id:
        out.append("telegramBotToken is set but alerting.telegramChatId is not: Telegram stays disabled")
    for name, pin in cfg.clients.pins().items():
        if pin.sha256 == UNSET_SHA256:
            out.append(f"clients.{name}.sha256 is the all-zero marker: the install on the host will refuse the "
                       "binary until you pin the real checksum")
    if not cfg.clients.beacon_bootstrap_nodes:
        out.append("clients.beaconBootstrapNodes is empty: the beacon node will not find peers")
    if "validatorKeys" not in cfg.secrets_present:
        out.append("validatorKeys is not set: hosts are provisioned without validator keys")
    elif "validatorKeysPassphrase" not in cfg.secrets_present:
        out.append(f"validatorKeysPassphrase is not in the stack (as recommended: CI previews cannot read it): "
                   f"export {KEYS_PASSPHRASE_ENV} for `pulumi up`; previews show the key imports as unknown")
    if not cfg.network.ssh_allowed_cidrs:
        out.append("network.sshAllowedCidrs is empty: nobody can reach SSH, including `pulumi up`'s bootstrap")
    return out


# ---------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------

def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic_issues(exc: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        path = _loc_to_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against the README's config reference"
        elif err["type"] == "missing":
            msg = "required but not set"
        elif err["type"] == "literal_error":
            msg = f"got {err.get('input')!r}; {msg.lower()}"
        elif err["type"] == "string_pattern_mismatch":
            msg = f"{err.get('input')!r} has the wrong form ({msg.lower()})"
        issues.append(ConfigIssue(path=path or "(root)", message=msg))
    return issues


def _key_blob(key: str) -> str:
    """Type + base64 of an OpenSSH public key line: what Hetzner's fingerprint covers (not the comment)."""
    return " ".join(str(key).split()[:2])


def shared_operator_key_issues(environment: str, keys: tuple[str, ...],
                               others: Mapping[str, tuple[Any, Any]]) -> list[ConfigIssue]:
    """Operator keys this stack shares with a stack file of the other environment.

    `others`: stack name -> (environment, operatorSshKeys) of the project's other stack files. Hetzner refuses
    a second SSH key with the same fingerprint in one project, so the second stack's first `up` would fail
    after its network and firewalls exist; and a testnet key must never open mainnet. Each environment gets
    its own operator keys and its own Hetzner project (docs/operations.md). Stacks of the same environment
    (the lab's copies of the testnet file) may share keys.
    """
    issues = []
    for i, key in enumerate(keys):
        for other, (other_env, other_keys) in sorted(others.items()):
            if other_env == environment or not isinstance(other_keys, list | tuple):
                continue
            if _key_blob(key) in {_key_blob(k) for k in other_keys}:
                issues.append(ConfigIssue(path=f"operatorSshKeys[{i}]", message=f"is also an operator key of the "
                                          f"{other_env} stack {other} (Pulumi.{other}.yaml); give each "
                                          "environment its own key"))
                break
    return issues


def load_stack_config(raw: Mapping[str, Any], secrets_present: set[str] | frozenset[str] = frozenset(),
                      stack: str | None = None,
                      other_stacks_keys: Mapping[str, tuple[Any, Any]] | None = None) -> StackConfig:
    """Validate raw top-level config values; raise ConfigError listing every issue.

    `stack` is the Pulumi stack name when known (always, in the program and in `qpool`): a `mainnet*` stack
    gets the mainnet guardrails whatever `environment` says, and a mismatch is itself an error.
    `other_stacks_keys`: name -> (environment, operatorSshKeys) of the project's other stack files.
    """
    data = {k: v for k, v in raw.items() if k not in SECRET_KEYS}
    misplaced = [k for k in raw if k in SECRET_KEYS and not _looks_encrypted(raw[k])]
    data["secretsPresent"] = frozenset(secrets_present) | {k for k in raw if k in SECRET_KEYS}
    try:
        cfg = StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_issues(exc)) from None
    # Keyed on the stack as well: a mainnet stack gets the guardrails even while `environment` is wrong.
    mainnet = cfg.environment == "mainnet" or stack_requires_mainnet(stack)
    issues = _stack_issues(cfg, stack) + _semantic_issues(cfg, mainnet=mainnet)
    issues += shared_operator_key_issues(cfg.environment, cfg.operator_ssh_keys, other_stacks_keys or {})
    if "validatorKeysPassphrase" in cfg.secrets_present and "validatorKeys" not in cfg.secrets_present:
        issues.append(ConfigIssue(path="validatorKeysPassphrase", message="is set but validatorKeys is not; set "
                                  "the sealed bundle with `pulumi config set --secret validatorKeys ...` or remove it"))
    for key in misplaced:
        issues.append(ConfigIssue(path=key, message="is a secret but stored in plain text; remove it and run "
                                  f"`pulumi config set --secret {key} ...`"))
    if issues:
        raise ConfigError(issues)
    return cfg


def _looks_encrypted(value: Any) -> bool:
    """Stack files store secrets as `{secure: ...}`; the program sees them already decrypted."""
    return isinstance(value, dict) and set(value) == {"secure"}


def raw_config_from_stack_file(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys of this project from a parsed Pulumi.<stack>.yaml (`config:` section)."""
    config = doc.get("config") or {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        ns, _, name = key.partition(":")
        if not name:
            ns, name = NAMESPACE, key
        if ns == NAMESPACE:
            out[name] = value
    return out
