"""The operations tools every host gets over SSH after cloud-init: `qp-validator-ctl`, its config, and the
timers for lock-state metrics and live slashing-protection backups.

Why not user-data: the key hosts' user-data is close to Hetzner's 32 KiB limit. Why it is still reviewable:
the bundle is a plain (non-secret) tar on the bootstrap step's stdin, and `qpool render` unpacks it under
each host's `files/`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path

from cloud_init import HostFile, HostRenderInputs
from cloud_init.base import NODE_EXPORTER_TEXTFILE_DIR
from cloud_init.bundles import APPLY_TOOL
from cloud_init.key_host import BACKUP_DIR, LOCK_FILE, RESTART_PENDING_FILE, ROLE_FILE, VALIDATOR_DIR, WALLET_DIR
from cloud_init.monitoring.layout import JOB_VALIDATOR
from cloud_init.secrets_table import WALLET_PASSWORD_FILE
from core import ports

CTL_PATH = "/usr/local/sbin/qp-validator-ctl"
CTL_CONFIG = "/etc/quantapool/validator-ctl.json"
REPLICA_DIR = "/var/lib/quantapool/slashing-replicas"
MONITORING_REPLICA_DIR = "/var/lib/quantapool-backups/slashing-replicas"
SHIP_KNOWN_HOSTS = "/etc/quantapool/backup_known_hosts"
BACKUP_INTERVAL = "5min"
BACKUP_KEEP = 24
#: The bootstrap step that installs the bundle (qp-apply writes only the tools' own paths from the base64 tar
#: on stdin), then runs `qp-validator-ctl setup`: creates the receiving user and enables the timers.
INSTALL_COMMAND = f"sudo {APPLY_TOOL} host-tools"

_CTL_SOURCE = Path(__file__).with_name("files") / "qp_validator_ctl.py"

_STATE_SERVICE = """[Unit]
Description=QuantaPool: write validator lock/unit state for the node exporter

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/qp-validator-ctl write-metrics
"""
_STATE_TIMER = """[Unit]
Description=QuantaPool: validator state metrics every 15 s

[Timer]
OnBootSec=5s
OnUnitActiveSec=15s
AccuracySec=1s

[Install]
WantedBy=timers.target
"""
_BACKUP_SERVICE = """[Unit]
Description=QuantaPool: live slashing-protection backup (signing host only) shipped to the standby and monitoring
After=qp-validator.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/qp-validator-ctl backup
TimeoutStartSec=300
"""
#: The monitoring host's only way to the validator's metrics: /metrics relayed from the validator's loopback
#: listener, which also serves the unauthenticated /db/backup webhook (qp-validator-ctl metrics-relay).
#: BindsTo + WantedBy: it runs exactly while the validator runs, so the private port answers only then.
METRICS_RELAY_UNIT = "qp-validator-metrics-relay.service"
_RELAY_SERVICE = """[Unit]
Description=QuantaPool: relay GET /metrics of the validator (loopback) to the private network; never /db/backup
BindsTo=qp-validator.service
After=qp-validator.service

[Service]
Type=simple
ExecStart=/usr/local/sbin/qp-validator-ctl metrics-relay
Restart=on-failure
RestartSec=2
DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=qp-validator.service
"""
_BACKUP_TIMER = f"""[Unit]
Description=QuantaPool: slashing-protection backup every {BACKUP_INTERVAL}

[Timer]
OnBootSec=2min
OnUnitActiveSec={BACKUP_INTERVAL}
AccuracySec=10s

[Install]
WantedBy=timers.target
"""


def _ctl_config(inputs: HostRenderInputs, ship_senders: Mapping[str, Mapping[str, str]]) -> dict:
    cfg, host = inputs.config, inputs.host
    # Only the key hosts that may send this host backups (its pair partner; every key host for monitoring),
    # each with the public half of ITS OWN shipping key: `setup` writes one authorized_keys line per sender
    # whose forced command names it, so a stored copy is named after the key that authenticated.
    allowed = {h.name: h.private_ip for h in cfg.backup_senders_of(host)}
    if set(ship_senders) != set(allowed):
        raise ValueError(f"{host.name}: backup senders {sorted(ship_senders)} differ from the allowed "
                         f"{sorted(allowed)}")
    senders = {name: {"address": allowed[name],
                      "public_key": " ".join(str(ship_senders[name]["public_key"]).split()[:2])}
               for name in sorted(allowed)}
    common = {"role_file": ROLE_FILE, "replica_dir": REPLICA_DIR, "backup_keep": BACKUP_KEEP,
              "backup_senders": senders,
              "textfile_dir": NODE_EXPORTER_TEXTFILE_DIR,
              "timers": []}
    if not host.is_key_host:
        # `prometheus-samples` (a fencing witness) and `alert` (failover done) run here for qpool.
        return {**common, "replica_dir": MONITORING_REPLICA_DIR,
                "prometheus_url": f"http://127.0.0.1:{ports.PROMETHEUS}", "prometheus_validator_job": JOB_VALIDATOR,
                "alertmanager_url": f"http://127.0.0.1:{ports.ALERTMANAGER}"}
    peers = [h.private_ip for h in cfg.key_hosts(host.pair) if h.name != host.name]
    return {
        **common,
        "lock_file": LOCK_FILE,
        "restart_pending_file": RESTART_PENDING_FILE,
        "validator_bin": "/opt/quantapool/bin/validator",
        "validator_user": "qp-validator",
        "validator_datadir": VALIDATOR_DIR,
        "wallet_dir": WALLET_DIR,  # `status` lists the loaded public keys (key ownership across pairs)
        "wallet_password_file": WALLET_PASSWORD_FILE,
        "db_backup_dir": BACKUP_DIR,
        # The validator listens on loopback only (its /db/backup webhook shares the metrics listener);
        # qp-validator-metrics-relay serves GET /metrics on the private address.
        "metrics_host": "127.0.0.1",
        "metrics_relay_listen": host.private_ip,
        "metrics_port": ports.VALIDATOR_METRICS,
        "beacon_rest": f"http://127.0.0.1:{ports.BEACON_REST}{cfg.clients.beacon_rest_prefix}",
        "execution_rpc": f"http://127.0.0.1:{ports.EXECUTION_RPC}",
        "rpc_namespace": cfg.clients.rpc_namespace,
        "oplock_dir": "/run/quantapool/qpool-op",
        "backup_targets": [*peers, cfg.monitoring.private_ip],
        "ship_key": "/etc/quantapool/secrets/backup-ship-key",
        "ship_known_hosts": SHIP_KNOWN_HOSTS,
        "timers": ["qp-validator-state.timer", "qp-slashing-backup.timer"],
        "units_enabled": [METRICS_RELAY_UNIT],
    }


def host_tools_files(inputs: HostRenderInputs, ship_senders: Mapping[str, Mapping[str, str]],
                     ship_known_hosts: str = "") -> list[HostFile]:
    """qp-validator-ctl and its config for every host (with `ship_senders`: the hosts allowed to ship backups
    here, name -> private address and public shipping key); on key hosts also the timers and
    `ship_known_hosts`, the pinned host keys of the backup targets (components/host_identity.py), so shipping
    never trusts on first use (qp-validator-ctl connects with StrictHostKeyChecking=yes)."""
    files = [
        HostFile(CTL_PATH, _CTL_SOURCE.read_text(), "0755"),
        HostFile(CTL_CONFIG, json.dumps(_ctl_config(inputs, ship_senders), indent=2, sort_keys=True) + "\n"),
    ]
    if inputs.host.is_key_host:
        files += [
            HostFile("/etc/systemd/system/qp-validator-state.service", _STATE_SERVICE),
            HostFile("/etc/systemd/system/qp-validator-state.timer", _STATE_TIMER),
            HostFile("/etc/systemd/system/qp-slashing-backup.service", _BACKUP_SERVICE),
            HostFile("/etc/systemd/system/qp-slashing-backup.timer", _BACKUP_TIMER),
            HostFile(f"/etc/systemd/system/{METRICS_RELAY_UNIT}", _RELAY_SERVICE),
        ]
        if ship_known_hosts:
            files.append(HostFile(SHIP_KNOWN_HOSTS, ship_known_hosts, "0644"))
    return files


def tools_tar_b64(files: list[HostFile]) -> str:
    """Deterministic tar (sorted, fixed mtime, root-owned) so the step re-runs only when a tool changes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(files, key=lambda f: f.path):
            data = f.content.encode()
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), int(f.mode, 8), 0, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
