"""The lab's differences from production, all in one place (README: "The local lab").

1. Client pins point at the lab's release mirror on the bridge, with the real sha256 of the stand-in
   binaries, so the production install-and-verify path runs unchanged. A pin whose `version` names a
   further stand-in build on the mirror (`lab/standins/build.py build_release`, e.g. `lab2`) is pinned to
   that build instead: this is how a lab test bumps client pins (issue 11).
2. Chain files are small stand-in files served by the same mirror (pinned by their real sha256).
3. User-data: no `package_update`/`package_upgrade` (lab hosts have no route out; the packages are baked into
   the image), and no `fs_setup`/`mounts`/volume wait in `bootcmd`: there is no Hetzner volume, so a directory
   of the lab host's state is bind-mounted where the volume would be mounted.
4. Systemd drop-ins give the stand-in clients a short, shared slot clock and the profile.
5. Servers' "public" IPv4 is their private lab address. Grafana is not in Debian and the lab has no route to
   its apt repository: its apt source and package are dropped and `/etc/quantapool/lab-no-grafana` tells
   `qp-start-monitoring` to skip it. Likewise the lab has no route to PyPI: the monitoring host's `/etc/pip.conf`
   points pip at the contract exporter's hash-locked wheels on the lab mirror (lab/wheels.py), so the unchanged
   `qp-install-exporter` builds its venv and starts it; the key hosts' execution stand-ins serve the pool
   contracts at the stack's `poolContracts` addresses (`QP_STANDIN_POOL_CONTRACTS`, lab/standins/pool.py).
6. Validator keys are generated for the lab in the stand-in keystore format and sealed like real ones.
7. Attestation "gossip": one directory of the lab's state (`gossip/`, mode 1777) is bind-mounted into every
   key host at GOSSIP_GUEST_DIR and named in the stand-ins' env file (`QP_STANDIN_GOSSIP_DIR`): each validator
   stand-in appends what it signs to `<hostname>.jsonl` there and every beacon stand-in answers qrysm's
   liveness endpoint from all files, so a beacon node sees the votes of other hosts as on a real chain
   (qpool's chain-side check before a start, qpool/chain_liveness.py). A test can add an outsider's file.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

from cloud_init.key_host import BEACON_UNIT, EXECUTION_UNIT, UNIT_DIR, VALIDATOR_UNIT
from cloud_init.monitoring import LAB_NO_GRAFANA_MARKER
from core.config import StackConfig
from lab.standins.build import DEFAULT_RELEASE, check_release

#: User-data keys the lab removes (see the module docstring, item 3).
DROPPED_USER_DATA_KEYS = ("package_update", "package_upgrade", "fs_setup", "mounts", "disk_setup")

STANDIN_UNITS = (EXECUTION_UNIT, BEACON_UNIT, VALIDATOR_UNIT)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lab_raw_config(raw: dict[str, Any], cfg: StackConfig, mirror_url: str,
                   artifacts: dict[str, Path], network_files: dict[str, Path]) -> dict[str, Any]:
    """The stack's raw config with client pins and chain files pointing at the lab mirror."""
    out = copy.deepcopy(raw)
    clients = out.setdefault("clients", {})
    exe = "gzond" if cfg.clients.profile == "gzond" else "gqrl"
    for role, name in (("execution", exe), ("beacon", "beacon-chain"), ("validator", "validator")):
        wanted = str((clients.get(role) or {}).get("version", ""))
        release = _release_artifact(artifacts[name], wanted)
        if release is not None:
            clients[role] = {"version": wanted, "url": f"{mirror_url}/{wanted}/{name}", "sha256": sha256_file(release)}
        else:
            clients[role] = {"version": DEFAULT_RELEASE, "url": f"{mirror_url}/{name}",
                             "sha256": sha256_file(artifacts[name])}
    clients["networkFiles"] = [
        {"name": name, "url": f"{mirror_url}/network/{name}", "sha256": sha256_file(path)}
        for name, path in sorted(network_files.items())
    ]
    return out


def _release_artifact(default: Path, version: str) -> Path | None:
    """The mirror's file of a further stand-in build named by a pin's version, if the mirror has it."""
    if not version or version == DEFAULT_RELEASE:
        return None
    try:
        check_release(version)
    except ValueError:
        return None
    path = default.parent / version / default.name
    return path if path.is_file() else None


VOLUME_DEVICE_PREFIX = "/dev/disk/by-id/scsi-0HC_Volume_"
#: Packages the lab cannot install (item 5).
ABSENT_PACKAGES = ("grafana",)
NO_GRAFANA_MARKER = LAB_NO_GRAFANA_MARKER


#: The lab has no route to PyPI: pip on the monitoring host installs from the mirror's wheels (item 5).
PIP_CONF = "/etc/pip.conf"
WHEELS_PATH = "wheels"


def pip_conf(mirror_url: str) -> bytes:
    """Site-wide pip config: only the mirror's wheel directory (its HTML listing is a find-links page)."""
    host = mirror_url.split("://", 1)[1].split(":", 1)[0].split("/", 1)[0]
    return (f"# lab difference (lab/overlay.py, item 5): no PyPI in the lab; the contract exporter's\n"
            f"# hash-locked wheels come from the lab mirror and are hash-checked by pip as usual.\n"
            f"[global]\nno-index = true\nfind-links = {mirror_url}/{WHEELS_PATH}/\ntrusted-host = {host}\n").encode()


def monitoring_extra_files(mirror_url: str) -> dict[str, bytes]:
    return {NO_GRAFANA_MARKER: b"the local lab runs without Grafana (not packaged by Debian)\n",
            PIP_CONF: pip_conf(mirror_url)}


def pool_contracts_env(cfg: StackConfig) -> str:
    """``QP_STANDIN_POOL_CONTRACTS`` for the execution stand-ins: the stack's pool addresses (item 5)."""
    pc = cfg.pool_contracts
    if pc is None:
        return ""
    return ",".join(f"{key}={getattr(pc, key)[1:].lower()}" for key in ("deposit_pool", "stqrl", "validator_manager"))


def lab_user_data(user_data: str) -> tuple[str, list[str]]:
    """Apply item 3 to a rendered cloud-config; return it and the volume mount points to emulate.

    The volume's mount point becomes a bind-mounted directory of the lab host (item 3), so the program's
    own "is the data dir really a mount" checks run unchanged.
    """
    if not user_data.startswith("#cloud-config"):
        raise ValueError("lab hosts expect #cloud-config user-data")
    doc = yaml.safe_load(user_data) or {}
    volume_paths = [entry[1] for entry in doc.get("mounts", []) or []
                    if isinstance(entry, list) and str(entry[0]).startswith(VOLUME_DEVICE_PREFIX)]
    for key in DROPPED_USER_DATA_KEYS:
        doc.pop(key, None)
    sources = (doc.get("apt") or {}).get("sources") or {}
    for name in [n for n in sources if any(p in n for p in ABSENT_PACKAGES)]:
        del sources[name]
    if "apt" in doc and not doc["apt"].get("sources"):
        doc["apt"].pop("sources", None)
        if not doc["apt"]:
            del doc["apt"]
    if "packages" in doc:
        doc["packages"] = [p for p in doc["packages"] if not str(p).startswith(ABSENT_PACKAGES)]
    if "bootcmd" in doc:
        doc["bootcmd"] = [c for c in doc["bootcmd"] if VOLUME_DEVICE_PREFIX not in str(c)]
        if not doc["bootcmd"]:
            del doc["bootcmd"]
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1000), volume_paths


STANDIN_ENV_FILE = "/etc/quantapool/lab-standin.env"
#: Where every key host sees the lab's shared attestation gossip directory (item 7).
GOSSIP_GUEST_DIR = "/var/lib/qp-lab-gossip"


def gossip_dir(state_dir: Path) -> Path:
    """The lab's shared gossip directory (item 7), created world-writable with the sticky bit: each host's
    validator user writes only its own file, every beacon user reads them all."""
    path = state_dir / "gossip"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o1777)
    return path


def standin_dropins(profile: str, slot_seconds: float, slots_per_epoch: int, genesis_time: int,
                    pool_contracts: str = "") -> dict[str, bytes]:
    """Item 4: the same clock and profile for every stand-in on every host, services and one-shot commands
    (export/import via runuser) alike: the stand-ins read the env file when their environment lacks a value."""
    env = (f"QP_STANDIN_PROFILE={profile}\nQP_STANDIN_SLOT_SECONDS={slot_seconds}\n"
           f"QP_STANDIN_SLOTS_PER_EPOCH={slots_per_epoch}\nQP_STANDIN_GENESIS_TIME={genesis_time}\n"
           f"QP_STANDIN_GOSSIP_DIR={GOSSIP_GUEST_DIR}\n"
           + (f"QP_STANDIN_POOL_CONTRACTS={pool_contracts}\n" if pool_contracts else "")).encode()
    dropin = f"[Service]\nEnvironmentFile={STANDIN_ENV_FILE}\n".encode()
    return {STANDIN_ENV_FILE: env,
            **{f"{UNIT_DIR}/{unit}.d/50-lab-standin.conf": dropin for unit in STANDIN_UNITS}}


def standin_network_files(out_dir: Path, cfg: StackConfig) -> dict[str, Path]:
    """Item 2: stand-in chain files (the stand-in clients only check they exist)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "config.yml": f"# lab stand-in chain config\nPRESET_BASE: 'mainnet'\nCONFIG_NAME: 'lab'\n"
                      f"DEPOSIT_CHAIN_ID: {cfg.clients.chain_id}\nSECONDS_PER_SLOT: 60\n",
        "genesis.ssz": "lab stand-in genesis state\n",
    }
    paths = {}
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text)
        paths[name] = path
    return paths
