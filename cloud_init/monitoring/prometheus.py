"""Prometheus: scrape jobs (the topology), its config file and command-line flags."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from cloud_init.monitoring.layout import (
    EVALUATION_INTERVAL,
    JOB_ALERTMANAGER,
    JOB_BEACON,
    JOB_CONTRACT_EXPORTER,
    JOB_EXECUTION,
    JOB_NODE,
    JOB_PROMETHEUS,
    JOB_VALIDATOR,
    NO_PAIR,
    PROMETHEUS_CONFIG,
    RETENTION_SHARE,
    RETENTION_TIME,
    RULES_DIR,
    SCRAPE_INTERVAL,
    TSDB_PATH,
)
from core import ports
from core.config import HostSpec, StackConfig


def _target_labels(host: HostSpec) -> dict[str, str]:
    return {"role": host.role, "host": host.name, "pair": host.pair or NO_PAIR}


def _job(name: str, interval: str, targets: Iterable[tuple[str, HostSpec]], metrics_path: str = "/metrics",
         ) -> dict[str, Any]:
    return {
        "job_name": name,
        "scrape_interval": interval,
        "metrics_path": metrics_path,
        "static_configs": [{"targets": [address], "labels": _target_labels(host)} for address, host in targets],
    }


def scrape_jobs(cfg: StackConfig) -> list[dict[str, Any]]:
    """The scrape config, one static target per (job, host) so every series carries role/host/pair.

    Validators are scraped on BOTH key hosts of every pair: after a failover the backup signs, and the
    two-signers alert needs to see both. Prometheus, Alertmanager and the contract exporter listen on
    loopback only.
    """
    hosts = cfg.hosts()
    keys = cfg.key_hosts()
    mon = cfg.monitoring_host()
    jobs = [
        _job(JOB_NODE, "15s", ((f"{h.private_ip}:{ports.NODE_EXPORTER}", h) for h in hosts)),
        _job(JOB_EXECUTION, "15s", ((f"{h.private_ip}:{ports.EXECUTION_METRICS}", h) for h in keys),
             metrics_path="/debug/metrics/prometheus"),
        _job(JOB_BEACON, "15s", ((f"{h.private_ip}:{ports.BEACON_METRICS}", h) for h in keys)),
        _job(JOB_VALIDATOR, "15s", ((f"{h.private_ip}:{ports.VALIDATOR_METRICS}", h) for h in keys)),
    ]
    if cfg.pool_contracts is not None:
        # the exporter runs on this host and listens on loopback only (cloud_init/exporter_deploy.py)
        jobs.append(_job(JOB_CONTRACT_EXPORTER, "30s", [(f"127.0.0.1:{ports.CONTRACT_EXPORTER}", mon)]))
    jobs.append(_job(JOB_PROMETHEUS, "15s", [(f"127.0.0.1:{ports.PROMETHEUS}", mon)]))
    jobs.append(_job(JOB_ALERTMANAGER, "15s", [(f"127.0.0.1:{ports.ALERTMANAGER}", mon)]))
    return jobs


def prometheus_config(cfg: StackConfig) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": "10s",
            "evaluation_interval": EVALUATION_INTERVAL,
            "external_labels": {"environment": cfg.environment},
        },
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports.ALERTMANAGER}"]}]}]},
        "rule_files": [f"{RULES_DIR}/*.yml"],
        "scrape_configs": scrape_jobs(cfg),
    }


def retention_size(cfg: StackConfig) -> str:
    """`--storage.tsdb.retention.size`: Prometheus' GB unit is 2^30 bytes, so GiB of the volume map 1:1."""
    return f"{max(1, math.floor(cfg.monitoring.volume_gib * RETENTION_SHARE))}GB"


def prometheus_args(cfg: StackConfig) -> list[str]:
    return [
        f"--config.file={PROMETHEUS_CONFIG}",
        f"--storage.tsdb.path={TSDB_PATH}",
        f"--storage.tsdb.retention.size={retention_size(cfg)}",
        f"--storage.tsdb.retention.time={RETENTION_TIME}",
        f"--web.listen-address=127.0.0.1:{ports.PROMETHEUS}",
    ]
