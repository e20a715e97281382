"""Everything that lands on a host, rendered as cloud-init user-data (no secret goes in here but the host's own
SSH host key, see host_keys.py).

Why a package of plain functions: the Pulumi components, `qpool render` (offline PR review) and the local
lab all need byte-identical user-data for the same stack config, so rendering is pure and deterministic:
same config in, same text out. Secrets (JWT, passwords, webhook URLs, keystores) travel later over SSH
into files described by `secrets_table.SECRET_FILES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.config import HostSpec, StackConfig

if TYPE_CHECKING:
    from cloud_init.host_keys import HostKey


@dataclass(frozen=True)
class HostFile:
    """One file written by cloud-init `write_files`.

    `defer=True` writes it in cloud-init's final stage, after packages are installed and users exist; a file
    whose owner is not root:root is always deferred (the users module runs after the first write_files).
    """

    path: str
    content: str
    mode: str = "0644"
    owner: str = "root:root"
    defer: bool = False


@dataclass(frozen=True)
class HostRenderInputs:
    """What rendering one host needs beyond the stack config.

    `volume_device` is the stable `/dev/disk/by-id/scsi-0HC_Volume_<id>` path of the host's Hetzner volume;
    None means no block device (the local lab bind-mounts a directory at the data path instead).
    `host_key` is the host's own SSH host key (cloud_init/host_keys.py), the one secret user-data carries;
    None renders no `ssh_keys` (unit tests of single files).
    """

    config: StackConfig
    host: HostSpec
    deploy_public_key: str
    volume_device: str | None
    host_key: HostKey | None = None


__all__ = ["HostFile", "HostRenderInputs"]
