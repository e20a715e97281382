"""Helpers for the monitoring tests: stack config variants, rendered files on disk, the real Debian binaries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloud_init import monitoring
from core.config import StackConfig
from qpool.stacks import load_stack

ALL_SECRETS = frozenset({"discordWebhookUrl", "telegramBotToken", "pagerdutyRoutingKey"})


def variant(stack: str = "testnet", secrets: frozenset[str] = ALL_SECRETS, expect_paused: bool | None = None,
            pool: bool = True) -> StackConfig:
    cfg = load_stack(stack).config
    update: dict = {"secrets_present": secrets}
    if not pool:
        update["pool_contracts"] = None
    elif expect_paused is not None and cfg.pool_contracts is not None:
        update["pool_contracts"] = cfg.pool_contracts.model_copy(update={"expect_paused": expect_paused})
    return cfg.model_copy(update=update)


def write_files(cfg: StackConfig, root: Path) -> Path:
    """Every monitoring file under `root`, at its host path."""
    for f in monitoring.monitoring_files(cfg):
        path = root / f.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.content)
    return root


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.skip(f"SKIPPED LOUDLY: {name} not installed (apt-get install prometheus prometheus-alertmanager "
                    "prometheus-node-exporter); the real-binary checks did not run")
    return path
