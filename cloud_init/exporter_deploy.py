"""The contract exporter on the monitoring server: its files, and the bootstrap bundle that delivers them.

Only when the stack watches contracts (`poolContracts` set). Why a bundle and not user-data: the monitoring
user-data is near Hetzner's 32 KiB limit and ignored after creation (`ignore_changes`), while the exporter
changes with the code. The bundle is a plain, non-secret tar on the `contract-exporter` bootstrap step's
stdin (the same pattern as cloud_init/host_tools.py), so `qpool render` unpacks every file under `files/`,
and any change to a file re-runs the step.

On the host (`qp-install-exporter`, idempotent):
1. check the unpacked source against its sha256 manifest and delete files a newer release no longer ships;
2. build `/opt/quantapool/exporter/venv` with `python3 -m venv` and
   `pip install --require-hashes --only-binary=:all:` from the hash-locked closure of
   exporter/requirements.txt (cloud_init/monitoring/exporter/requirements.lock), rebuilt only when the lock
   changes, into a new directory that replaces the old one only after it works;
3. validate the rendered config with the exporter itself (`--check-config`) as its service user;
4. enable and restart `qp-contract-exporter.service` and wait until /metrics answers on 127.0.0.1:9101.

The local lab has no route to PyPI: its overlay points pip at the same hash-locked wheels on the lab's
mirror (`/etc/pip.conf`, lab/overlay.py), so this same script builds the venv and starts the service there.

RPC endpoints: `monitoring.contractExporterRpcUrl` alone when set (`rpc_url`), else `rpc_urls`: the execution
client of every key host (`http://<private ip>:8545`), pair by pair in stack order, the pair's configured
active host before its standby. The exporter tries them in that order each cycle and reads from the first
with a current head (exporter/endpoints.py), so a fenced, stopped or lagging host is skipped and no host is
a fixed single point. The execution client runs on both hosts of a pair whichever one signs, and every key
host's nftables accepts 8545 from the monitoring server's private IP only (cloud_init/nftables.py
`key_host_rules`); the client listens on 0.0.0.0 with the host's IP in `--http.vhosts` (key_host.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from cloud_init import HostFile
from cloud_init.bundles import APPLY_TOOL
from core import ports
from core.config import StackConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPORTER_SRC = REPO_ROOT / "exporter"
LOCK_SRC = Path(__file__).resolve().parent / "monitoring" / "exporter" / "requirements.lock"
SCRIPT_SRC = Path(__file__).resolve().parent / "monitoring" / "scripts" / "qp-install-exporter.sh"

# -- paths on the monitoring host ------------------------------------------------------------------------
EXPORTER_HOME = "/opt/quantapool/exporter"
SRC_DIR = f"{EXPORTER_HOME}/src"  # holds the `exporter` package (PYTHONPATH)
VENV_DIR = f"{EXPORTER_HOME}/venv"
LOCK_PATH = f"{EXPORTER_HOME}/requirements.lock"
MANIFEST_PATH = f"{EXPORTER_HOME}/MANIFEST.sha256"
CONFIG_PATH = "/etc/quantapool/contract-exporter.yaml"
UNIT_NAME = "qp-contract-exporter.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
INSTALL_SCRIPT = "/usr/local/sbin/qp-install-exporter"
SERVICE_USER = "qp-exporter"
STATE_DIRECTORY = "quantapool-exporter"  # systemd StateDirectory= -> /var/lib/quantapool-exporter
STATE_DIR = f"/var/lib/{STATE_DIRECTORY}"
#: Loopback only: Prometheus runs on the same host and scrapes 127.0.0.1 (cloud_init/monitoring/prometheus.py).
LISTEN_ADDRESS = "127.0.0.1"
INTERVAL_SECONDS = 30

#: The bootstrap step's command: qp-apply unpacks the bundle (stdin, base64 tar; only the exporter's own
#: paths) and runs the installer from it.
INSTALL_COMMAND = f"sudo {APPLY_TOOL} exporter"

#: Files of exporter/ that run on the host (tests and docs stay in the repository).
_SHIPPED_SUFFIXES = (".py",)


def rpc_urls(cfg: StackConfig) -> list[str]:
    """The exporter's JSON-RPC endpoints in the order to try them (see the module docstring)."""
    if cfg.monitoring.contract_exporter_rpc_url:
        return [cfg.monitoring.contract_exporter_rpc_url]
    urls: list[str] = []
    for pair in cfg.validator_pairs:
        active, standby = (pair.primary, pair.backup) if pair.active == "primary" else (pair.backup, pair.primary)
        urls += [f"http://{host.private_ip}:{ports.EXECUTION_RPC}" for host in (active, standby)]
    return urls


def exporter_config(cfg: StackConfig) -> dict[str, Any]:
    """The exporter's config (exporter/config.py keys), validated by the exporter's own loader."""
    from exporter.config import ConfigError, parse_config

    if cfg.pool_contracts is None:
        raise ValueError("the contract exporter needs poolContracts in the stack config")
    pc = cfg.pool_contracts
    data: dict[str, Any] = {
        "profile": cfg.clients.profile,
        **({"rpc_url": rpc_urls(cfg)[0]} if cfg.monitoring.contract_exporter_rpc_url else {"rpc_urls": rpc_urls(cfg)}),
        "contracts": {"deposit_pool": pc.deposit_pool, "stqrl": pc.stqrl, "validator_manager": pc.validator_manager},
        "listen_address": LISTEN_ADDRESS,
        "listen_port": ports.CONTRACT_EXPORTER,
        "interval_seconds": INTERVAL_SECONDS,
        "state_dir": STATE_DIR,
    }
    try:
        parse_config(data)
    except ConfigError as exc:  # e.g. a mixed-case address with a wrong checksum: fail before any resource
        raise ValueError("poolContracts/monitoring: the contract exporter would reject its config: "
                         + "; ".join(exc.lines)) from None
    return data


def config_yaml(cfg: StackConfig) -> str:
    return ("# Managed by quantapool-infra (cloud_init/exporter_deploy.py) from the stack config: edits are "
            "overwritten.\n" + yaml.safe_dump(exporter_config(cfg), sort_keys=False, default_flow_style=False))


def unit() -> str:
    """`qp-contract-exporter.service`: an unprivileged, sandboxed reader of public chain data."""
    python = f"{VENV_DIR}/bin/python"
    return f"""# Managed by quantapool-infra (cloud_init/exporter_deploy.py)
[Unit]
Description=QuantaPool contract exporter (pool contracts -> Prometheus on {LISTEN_ADDRESS}:{ports.CONTRACT_EXPORTER})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={SERVICE_USER}
Group={SERVICE_USER}
Environment=PYTHONPATH={SRC_DIR}
Environment=PYTHONDONTWRITEBYTECODE=1
ExecStart={python} -m exporter --config {CONFIG_PATH}
Restart=on-failure
RestartSec=10s
# exit 2 = bad config or unusable state dir: restarting cannot fix it
RestartPreventExitStatus=2
StateDirectory={STATE_DIRECTORY}
StateDirectoryMode=0750
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectClock=yes
ProtectHostname=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""


def source_files() -> dict[str, str]:
    """Host path -> content of the exporter package as shipped."""
    out = {}
    for path in sorted(EXPORTER_SRC.rglob("*")):
        if path.is_file() and path.suffix in _SHIPPED_SUFFIXES and "__pycache__" not in path.parts:
            rel = path.relative_to(EXPORTER_SRC.parent).as_posix()
            out[f"{SRC_DIR}/{rel}"] = path.read_text()
    return out


def manifest(files: dict[str, str]) -> str:
    """`sha256sum -c` format, paths relative to EXPORTER_HOME."""
    lines = [f"{hashlib.sha256(content.encode()).hexdigest()}  {path.removeprefix(EXPORTER_HOME + '/')}"
             for path, content in sorted(files.items())]
    return "\n".join(lines) + "\n"


def install_script() -> str:
    return SCRIPT_SRC.read_text()


def exporter_files(cfg: StackConfig) -> list[HostFile]:
    """Every file the exporter bundle carries (none is secret); empty when the stack watches no contracts."""
    if cfg.pool_contracts is None:
        return []
    checked = {**source_files(), LOCK_PATH: LOCK_SRC.read_text()}
    return [
        *(HostFile(path, content) for path, content in checked.items()),
        HostFile(MANIFEST_PATH, manifest(checked)),
        HostFile(CONFIG_PATH, config_yaml(cfg)),
        HostFile(UNIT_PATH, unit()),
        HostFile(INSTALL_SCRIPT, install_script(), "0755"),
    ]


def bundle_b64(cfg: StackConfig) -> str:
    """The step's stdin: a deterministic base64 tar (re-runs the step only when a file changes)."""
    from cloud_init.host_tools import tools_tar_b64

    return tools_tar_b64(exporter_files(cfg))
