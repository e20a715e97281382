"""Everything that lands on a validator key host. Primary and backup share this one implementation; they
differ only by `HostSpec.role` (the `/etc/quantapool/role` file) — see DESIGN.md §4 for the safety model.

Safety properties rendered here (each has a test in tests/hostfiles/):
- the validator unit is installed but never enabled (no [Install]); two independent gates refuse to start
  it while `/etc/quantapool/VALIDATOR_LOCKED` exists, and a boot-time unit re-creates that file each boot;
- nothing rendered here removes the lock or starts the validator (qp-start-clients starts only the
  execution client and the beacon node);
- no `--clear-db`/`--force-clear-db`, no `engine` on the HTTP API, only flags the clients accept;
- no secret in user-data: JWT, wallet password and keystores arrive later over SSH.

Where each file travels (issue 11): user-data is FIRST BOOT ONLY and carries what keeps the validator
locked from the first second (lock unit, lock arm/check scripts, role file) plus qp-wait-ready. Everything a
stack-config edit can change (the three client units and their flags, clients.json with the pins, the
scripts the bootstrap calls) is the `clients` bundle (`clients_bundle`), delivered over SSH by the
`<host>-bundle-clients` step, which then runs qp-clients-apply: install and verify the pins, restart the
execution client / beacon node only if what they run changed, health gate; never the validator (a changed
validator binary or unit on a running validator is recorded as "restart pending" for `qpool`).
"""

from __future__ import annotations

import json
import re

from cloud_init import HostFile, HostRenderInputs
from cloud_init.base import NODE_EXPORTER_TEXTFILE_DIR, ServiceUser, base_cloud_config, to_user_data
from cloud_init.bundles import INSTALL_COMMAND as BUNDLE_INSTALL_COMMAND
from cloud_init.bundles import Bundle, Check
from cloud_init.render import render, systemd_arg
from cloud_init.secrets_table import (
    SECRET_FILES,
    SECRETS_DIR,
    WALLET_PASSWORD_FILE,
    WALLET_PASSWORD_MODE,
    WALLET_PASSWORD_OWNER,
    install_secret_script,
)
from core import ports
from core.config import UNSET_SHA256, ValidatorPair

ETC = "/etc/quantapool"
LOCK_FILE = f"{ETC}/VALIDATOR_LOCKED"
ROLE_FILE = f"{ETC}/role"
HOST_ENV = f"{ETC}/host.env"
CLIENTS_JSON = f"{ETC}/clients.json"
NETWORK_DIR = f"{ETC}/network"
BIN_DIR = "/opt/quantapool/bin"
LIB_DIR = "/usr/local/lib/quantapool"
SBIN = "/usr/local/sbin"
LOCK_CHECK = f"{LIB_DIR}/validator-lock-check"
LOCK_ARM = f"{LIB_DIR}/validator-lock-arm"
DATA_DIR = "/var/lib/quantapool"
EXECUTION_DIR = f"{DATA_DIR}/execution"
BEACON_DIR = f"{DATA_DIR}/beacon"
VALIDATOR_DIR = f"{DATA_DIR}/validator"
WALLET_DIR = f"{VALIDATOR_DIR}/wallet"
BACKUP_DIR = f"{VALIDATOR_DIR}/backups"
UNIT_DIR = "/etc/systemd/system"
JWT_FILE = SECRET_FILES["jwt"].path

EXECUTION_UNIT = "qp-execution.service"
BEACON_UNIT = "qp-beacon.service"
VALIDATOR_UNIT = "qp-validator.service"
LOCK_UNIT = "qp-validator-lock.service"

SERVICE_USERS = (
    ServiceUser("qp-execution", ("qp-jwt",)),
    ServiceUser("qp-beacon", ("qp-jwt",)),
    ServiceUser("qp-validator"),
)
GROUPS = ("qp-jwt",)

#: Host scripts the bootstrap calls (components/bootstrap.py imports these paths; the monitoring host has
#: the first two as well).
WAIT_READY = f"{SBIN}/qp-wait-ready"
SET_HOST_ENV = f"{SBIN}/qp-set-host-env"
IMPORT_KEYS = f"{SBIN}/qp-import-keys"
START_CLIENTS = f"{SBIN}/qp-start-clients"
#: What qp-wait-ready shows when cloud-init fails (every role).
CLOUD_INIT_LOG = "/var/log/cloud-init-output.log"

INSTALL_CLIENTS = f"{SBIN}/qp-install-clients"
#: The `clients` bundle's action (run by its step after the files are installed) and its helpers.
CLIENTS_APPLY = f"{SBIN}/qp-clients-apply"
CLIENTS_HEALTH = f"{SBIN}/qp-clients-health"
CLIENTS_STATE = f"{LIB_DIR}/qp-clients-state"
#: What each client process was started with (qp-clients-state record, at every start) and the validator's
#: "restart pending" marker (qp-validator-ctl status reports it; `qpool status` shows it).
CLIENTS_STATE_DIR = f"{DATA_DIR}/clients-state"
RESTART_PENDING_FILE = f"{CLIENTS_STATE_DIR}/validator.restart-pending.json"
RESTART_PENDING_TEXTFILE = f"{NODE_EXPORTER_TEXTFILE_DIR}/quantapool_clients.prom"
#: How long the health gate waits for the restarted clients to answer before the step fails.
HEALTH_GATE_SECONDS = 300

#: First-boot host scripts (user-data): install path -> template.
FIRST_BOOT_SCRIPTS = {
    WAIT_READY: "qp-wait-ready.sh.j2",
    LOCK_CHECK: "validator-lock-check.sh.j2",
    LOCK_ARM: "validator-lock-arm.sh.j2",
}
#: Host scripts of the `clients` bundle: install path -> template (qp-install-secret is generated from the
#: secrets table and travels in the bundle too).
CLIENT_SCRIPTS = {
    SET_HOST_ENV: "qp-set-host-env.sh.j2",
    IMPORT_KEYS: "qp-import-keys.sh.j2",
    START_CLIENTS: "qp-start-clients.sh.j2",
    INSTALL_CLIENTS: "qp-install-clients.sh.j2",
    CLIENTS_APPLY: "qp-clients-apply.sh.j2",
    CLIENTS_HEALTH: "qp-clients-health.sh.j2",
    CLIENTS_STATE: "qp-clients-state.sh.j2",
}
#: Every rendered host script of a key host (first boot and bundle).
SCRIPTS = {**FIRST_BOOT_SCRIPTS, **CLIENT_SCRIPTS}
INSTALL_SECRET = f"{SBIN}/qp-install-secret"
#: The units a config edit can change (the `clients` bundle); the lock unit is first boot only.
CLIENT_UNITS = (EXECUTION_UNIT, BEACON_UNIT, VALIDATOR_UNIT)
#: The `<host>-bundle-clients` step: install the bundle, then reconcile the running clients with it (every
#: time the step runs, so a step that failed half-way, e.g. at the health gate, is finished by a re-run).
CLIENTS_STEP_COMMAND = f"{BUNDLE_INSTALL_COMMAND} && sudo {CLIENTS_APPLY}"

_BOOTNODE_RE = re.compile(r"^(enr|qnr):[A-Za-z0-9_-]+$")
_EXECUTION_BINARY = {"gzond": "gzond", "gqrl": "gqrl"}
_BINARIES = {"beacon": "beacon-chain", "validator": "validator"}


def pair_of(inputs: HostRenderInputs) -> ValidatorPair:
    if not inputs.host.is_key_host or inputs.host.pair is None:
        raise ValueError(f"{inputs.host.name} is a {inputs.host.role} host, not a validator key host")
    return inputs.config.pair(inputs.host.pair)


def binary_names(inputs: HostRenderInputs) -> dict[str, str]:
    """client role -> installed binary name (execution: gzond | gqrl, by the stack's profile)."""
    return {"execution": _EXECUTION_BINARY[inputs.config.clients.profile], **_BINARIES}


def network_file_paths(inputs: HostRenderInputs) -> dict[str, str]:
    return {nf.name: f"{NETWORK_DIR}/{nf.name}" for nf in inputs.config.clients.network_files}


def clients_manifest(inputs: HostRenderInputs) -> str:
    """/etc/quantapool/clients.json: what qp-install-clients installs (and qpool status can report)."""
    c = inputs.config.clients
    names = binary_names(inputs)
    doc = {
        "profile": c.profile,
        "arch": c.arch,
        "clients": {
            role: {"binary": names[role], "version": pin.version, "url": pin.resolved_url(), "sha256": pin.sha256,
                   "config_key": f"clients.{role}.sha256", "path": f"{BIN_DIR}/{names[role]}"}
            for role, pin in c.pins().items()
        },
        "network_files": [
            {"name": nf.name, "url": nf.url, "sha256": nf.sha256, "config_key": f"clients.networkFiles[{i}].sha256",
             "path": f"{NETWORK_DIR}/{nf.name}"}
            for i, nf in enumerate(c.network_files)
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# -- client command lines ------------------------------------------------------------------------------

def _flag(name: str, value: str | int | None = None) -> str:
    return f"--{name}" if value is None else systemd_arg(f"--{name}={value}")


def execution_args(inputs: HostRenderInputs) -> list[str]:
    c = inputs.config.clients
    ip = inputs.host.private_ip
    args = [_flag("datadir", EXECUTION_DIR)]
    if c.execution_network_flag != "none":
        args.append(_flag(c.execution_network_flag))
    args += [
        _flag("syncmode", "snap"),
        _flag("http"), _flag("http.addr", "0.0.0.0"), _flag("http.port", ports.EXECUTION_RPC),  # noqa: S104
        _flag("http.api", f"net,web3,{c.rpc_namespace}"),
        _flag("http.vhosts", f"localhost,{ip}"),
        _flag("authrpc.addr", "127.0.0.1"), _flag("authrpc.port", ports.EXECUTION_AUTH_RPC),
        _flag("authrpc.vhosts", "localhost"), _flag("authrpc.jwtsecret", JWT_FILE),
        _flag("port", ports.EXECUTION_P2P), _flag("discovery.port", ports.EXECUTION_P2P),
        _flag("maxpeers", c.execution_max_peers),
        "--nat=extip:${QP_PUBLIC_IPV4}",  # substituted by systemd from EnvironmentFile=
        _flag("metrics"), _flag("metrics.addr", ip), _flag("metrics.port", ports.EXECUTION_METRICS),
    ]
    return args


def beacon_args(inputs: HostRenderInputs) -> list[str]:
    c = inputs.config.clients
    ip = inputs.host.private_ip
    net = network_file_paths(inputs)
    args = [
        _flag("datadir", BEACON_DIR),
        _flag("execution-endpoint", f"http://127.0.0.1:{ports.EXECUTION_AUTH_RPC}"),
        _flag("jwt-secret", JWT_FILE),
        _flag("p2p-tcp-port", ports.BEACON_P2P_TCP), _flag("p2p-udp-port", ports.BEACON_P2P_UDP),
        "--p2p-host-ip=${QP_PUBLIC_IPV4}",
        _flag("p2p-max-peers", c.beacon_max_peers),
        _flag("rpc-host", "127.0.0.1"), _flag("rpc-port", ports.BEACON_GRPC),
        _flag("grpc-gateway-host", "127.0.0.1"), _flag("grpc-gateway-port", ports.BEACON_REST),
        _flag("monitoring-host", ip), _flag("monitoring-port", ports.BEACON_METRICS),
    ]
    if "config.yml" in net:
        args.append(_flag("chain-config-file", net["config.yml"]))
    if "genesis.ssz" in net:
        args.append(_flag("genesis-state", net["genesis.ssz"]))
    args += [_flag("chain-id", c.chain_id), _flag("contract-deployment-block", 0)]
    for record in c.beacon_bootstrap_nodes:
        if not _BOOTNODE_RE.match(record):
            raise ValueError(f"clients.beaconBootstrapNodes: {record[:24]!r}... is not an enr:/qnr: record")
        args.append(_flag("bootstrap-node", record))
    if c.checkpoint_sync_url:
        args.append(_flag("checkpoint-sync-url", c.checkpoint_sync_url))
        args.append(_flag("genesis-beacon-api-url", c.genesis_beacon_api_url or c.checkpoint_sync_url))
    args += [_flag("suggested-fee-recipient", pair_of(inputs).fee_recipient), _flag("accept-terms-of-use")]
    return args


def validator_args(inputs: HostRenderInputs) -> list[str]:
    pair = pair_of(inputs)
    net = network_file_paths(inputs)
    args = [
        _flag("datadir", VALIDATOR_DIR),  # explicit: validator.db (slashing protection) lives here
        _flag("wallet-dir", WALLET_DIR),
        _flag("wallet-password-file", WALLET_PASSWORD_FILE),
        _flag("beacon-rpc-provider", f"127.0.0.1:{ports.BEACON_GRPC}"),
        # Loopback only: /db/backup shares this listener; qp-validator-metrics-relay serves /metrics (issue 12).
        _flag("monitoring-host", "127.0.0.1"), _flag("monitoring-port", ports.VALIDATOR_METRICS),
        _flag("suggested-fee-recipient", pair.fee_recipient),
        _flag("graffiti", pair.graffiti),
        _flag("enable-db-backup-webhook"), _flag("db-backup-output-dir", BACKUP_DIR),
    ]
    if pair.doppelganger:
        args.append(_flag("enable-doppelganger"))
    if "config.yml" in net:
        args.append(_flag("chain-config-file", net["config.yml"]))
    args.append(_flag("accept-terms-of-use"))
    return args


# -- files ----------------------------------------------------------------------------------------------

def units(inputs: HostRenderInputs) -> dict[str, str]:
    """unit file name -> content (all four units of a key host)."""
    pins = inputs.config.clients.pins()
    names = binary_names(inputs)
    common = {"host": inputs.host, "bin_dir": BIN_DIR, "host_env": HOST_ENV, "clients_state": CLIENTS_STATE}
    return {
        EXECUTION_UNIT: render("qp-execution.service.j2", **common, binary=names["execution"],
                               version=pins["execution"].version, datadir=EXECUTION_DIR,
                               args=execution_args(inputs)),
        BEACON_UNIT: render("qp-beacon.service.j2", **common, version=pins["beacon"].version, datadir=BEACON_DIR,
                            args=beacon_args(inputs)),
        VALIDATOR_UNIT: render("qp-validator.service.j2", **common, version=pins["validator"].version,
                               datadir=VALIDATOR_DIR, lock_file=LOCK_FILE, lock_check=LOCK_CHECK,
                               args=validator_args(inputs)),
        LOCK_UNIT: render("qp-validator-lock.service.j2", lock_file=LOCK_FILE, lock_arm=LOCK_ARM),
    }


def scripts(inputs: HostRenderInputs) -> dict[str, str]:
    """install path -> content of every host script (all `set -euo pipefail`, shellcheck-clean)."""
    names = binary_names(inputs)
    c = inputs.config.clients
    context = {
        "lock_file": LOCK_FILE, "host_env": HOST_ENV, "jwt_file": JWT_FILE, "clients_json": CLIENTS_JSON,
        "bin_dir": BIN_DIR, "network_dir": NETWORK_DIR, "unset_sha256": UNSET_SHA256,
        "download_retries": 5, "download_max_seconds": 900, "settle_seconds": 5,
        "cloud_init_log": CLOUD_INIT_LOG,
        "binaries": [f"{BIN_DIR}/{names['execution']}", f"{BIN_DIR}/{names['beacon']}"],
        "validator_bin": f"{BIN_DIR}/{names['validator']}", "wallet_dir": WALLET_DIR,
        "wallet_password_file": WALLET_PASSWORD_FILE, "wallet_password_owner": WALLET_PASSWORD_OWNER,
        "wallet_password_mode": WALLET_PASSWORD_MODE, "run_dir": "/run",
        "textfile_dir": NODE_EXPORTER_TEXTFILE_DIR,
        # the `clients` bundle's action, state and health gate
        "clients_state": CLIENTS_STATE, "install_clients": INSTALL_CLIENTS, "health": CLIENTS_HEALTH,
        "state_dir": CLIENTS_STATE_DIR, "pending_file": RESTART_PENDING_FILE, "textfile": RESTART_PENDING_TEXTFILE,
        "unit_dir": UNIT_DIR, "units": {"execution": EXECUTION_UNIT, "beacon": BEACON_UNIT,
                                        "validator": VALIDATOR_UNIT},
        "binary_names": names,
        "rpc_namespace": c.rpc_namespace, "execution_rpc_port": ports.EXECUTION_RPC,
        "beacon_rest": f"http://127.0.0.1:{ports.BEACON_REST}{c.beacon_rest_prefix}",
        "gate_seconds": HEALTH_GATE_SECONDS,
    }
    out = {path: render(template, **context) for path, template in SCRIPTS.items()}
    out[INSTALL_SECRET] = install_secret_script(inputs.host.role)
    return out


def key_host_files(inputs: HostRenderInputs) -> list[HostFile]:
    """The role-specific FIRST-BOOT files of a key host (user-data; base files are added by base_cloud_config):
    the validator lock (unit + arm/check scripts), the role file and qp-wait-ready. Nothing a config edit
    can change: that is the `clients` bundle (`clients_files`)."""
    pair_of(inputs)  # refuses a monitoring host
    all_scripts = scripts(inputs)
    files = [HostFile(f"{UNIT_DIR}/{LOCK_UNIT}", units(inputs)[LOCK_UNIT])]
    files += [HostFile(path, all_scripts[path], "0755") for path in FIRST_BOOT_SCRIPTS]
    files.append(HostFile(ROLE_FILE, inputs.host.role + "\n"))
    return files


def clients_files(inputs: HostRenderInputs) -> list[HostFile]:
    """The files of the `clients` bundle: client units, clients.json (pins), the bootstrap's scripts."""
    pair_of(inputs)
    rendered_units = units(inputs)
    all_scripts = scripts(inputs)
    files = [HostFile(f"{UNIT_DIR}/{name}", rendered_units[name]) for name in CLIENT_UNITS]
    files += [HostFile(path, all_scripts[path], "0755") for path in (*CLIENT_SCRIPTS, INSTALL_SECRET)]
    files.append(HostFile(CLIENTS_JSON, clients_manifest(inputs)))
    return files


#: Checks on the staged copies before anything is installed (a failed check changes nothing).
CLIENTS_CHECKS = (
    Check("clients.json", f'jq -e .clients "$STAGED{CLIENTS_JSON}" >/dev/null'),
    Check("bash -n", 'for f in "$STAGED"/usr/local/sbin/qp-* "$STAGED"/usr/local/lib/quantapool/qp-*; do '
                     'bash -n "$f" || exit 1; done'),
)


def clients_bundle(inputs: HostRenderInputs) -> Bundle:
    """The key host's `clients` bundle. Its step command (CLIENTS_STEP_COMMAND) runs qp-clients-apply after
    the install instead of on-change actions, so every run of the step reconciles the running clients."""
    return Bundle("clients", tuple(clients_files(inputs)), checks=CLIENTS_CHECKS)


def key_host_runcmd(inputs: HostRenderInputs) -> list[list[str] | str]:
    def mkdir(path: str, mode: str, owner: str = "root") -> list[str]:
        return ["install", "-d", "-m", mode, "-o", owner, "-g", owner, path]

    return [
        mkdir(ETC, "0755"),
        mkdir(SECRETS_DIR, "0711"),  # traversable for the clients, not listable
        mkdir(NETWORK_DIR, "0755"),
        mkdir(BIN_DIR, "0755"),
        mkdir(EXECUTION_DIR, "0700", "qp-execution"),
        mkdir(BEACON_DIR, "0700", "qp-beacon"),
        mkdir(VALIDATOR_DIR, "0700", "qp-validator"),
        mkdir(BACKUP_DIR, "0700", "qp-validator"),
        ["systemctl", "daemon-reload"],
        # arm the lock now (first boot) and at every later boot
        ["systemctl", "enable", "--now", LOCK_UNIT],
        ["test", "-e", LOCK_FILE],
        # The client units, pinned binaries and their scripts arrive later with the `clients` bundle over SSH.
    ]


def key_host_cloud_config(inputs: HostRenderInputs) -> dict:
    return base_cloud_config(
        inputs,
        packages=[],
        files=key_host_files(inputs),
        runcmd=key_host_runcmd(inputs),
        service_users=SERVICE_USERS,
        groups=GROUPS,
        data_dir=DATA_DIR,
    )


def render_key_host_user_data(inputs: HostRenderInputs) -> str:
    return to_user_data(key_host_cloud_config(inputs))
