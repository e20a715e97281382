"""The monitoring server's user-data: first boot only (firewall, shared bootstrap scripts, packages incl. Grafana,
the data volume and its directories). Every Prometheus, Alertmanager and Grafana file is in the
monitoring-config bundle (files.py), delivered over SSH by `pulumi up` whenever it changes."""

from __future__ import annotations

from typing import Any

from cloud_init import HostFile, HostRenderInputs
from cloud_init.monitoring.grafana import grafana_install_script
from cloud_init.monitoring.layout import (
    ALERTMANAGER_STORAGE,
    DATA_MOUNT,
    GRAFANA_APT_KEY,
    GRAFANA_APT_KEY_SRC,
    GRAFANA_INSTALL_SCRIPT,
    MONITORING_PACKAGES,
    TSDB_PATH,
)


def _shared_scripts() -> list[HostFile]:
    """The bootstrap's host scripts that every role has (same templates as the key hosts)."""
    from cloud_init.key_host import CLOUD_INIT_LOG, HOST_ENV, INSTALL_SECRET, SET_HOST_ENV, WAIT_READY
    from cloud_init.render import render
    from cloud_init.secrets_table import install_secret_script

    return [
        HostFile(WAIT_READY, render("qp-wait-ready.sh.j2", cloud_init_log=CLOUD_INIT_LOG), "0755"),
        HostFile(SET_HOST_ENV, render("qp-set-host-env.sh.j2", host_env=HOST_ENV), "0755"),
        HostFile(INSTALL_SECRET, install_secret_script("monitoring"), "0755"),
    ]


def monitoring_cloud_config(inputs: HostRenderInputs) -> dict[str, Any]:
    from cloud_init.base import base_cloud_config
    from cloud_init.key_host import ETC
    from cloud_init.secrets_table import SECRETS_DIR

    cfg = inputs.config
    if inputs.host.role != "monitoring":
        raise ValueError(f"{inputs.host.name} is a {inputs.host.role} host, not the monitoring server")
    doc = base_cloud_config(
        inputs,
        packages=list(MONITORING_PACKAGES),
        files=[*_shared_scripts(), *_grafana_install_files()],
        runcmd=[
            ["install", "-d", "-m", "0755", "-o", "root", "-g", "root", ETC],
            ["install", "-d", "-m", "0711", "-o", "root", "-g", "root", SECRETS_DIR],
            ["install", "-d", "-m", "0755", "-o", "prometheus", "-g", "prometheus", DATA_MOUNT, TSDB_PATH,
             ALERTMANAGER_STORAGE],
            # Grafana's package after Debian's (its dependencies come from there). Prometheus and Alertmanager
            # run on Debian's own config until the monitoring-config bundle lands over SSH; Grafana waits for
            # its TLS files and configuration (qp-start-monitoring).
            [GRAFANA_INSTALL_SCRIPT, cfg.monitoring.grafana_version],
        ],
        data_dir=DATA_MOUNT,
    )
    return doc


def _grafana_install_files() -> list[HostFile]:
    return [HostFile(GRAFANA_APT_KEY, GRAFANA_APT_KEY_SRC.read_text()),
            HostFile(GRAFANA_INSTALL_SCRIPT, grafana_install_script(), "0755")]


def render_monitoring_user_data(inputs: HostRenderInputs) -> str:
    """The monitoring server's complete user-data (cloud-config)."""
    from cloud_init.base import to_user_data

    return to_user_data(monitoring_cloud_config(inputs))
