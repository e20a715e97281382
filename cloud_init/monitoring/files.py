"""Every configuration file and script the monitoring host gets, as HostFiles (none holds a secret)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from cloud_init import HostFile
from cloud_init.monitoring.alertmanager import (
    _alertmanager_dropin,
    alertmanager_args,
    alertmanager_template,
    secret_paths,
)
from cloud_init.monitoring.grafana import dashboards, grafana_dashboard_provider, grafana_datasource, grafana_ini
from cloud_init.monitoring.layout import (
    ALERTMANAGER_DEFAULTS,
    ALERTMANAGER_DROPIN,
    ALERTMANAGER_RENDER_SCRIPT,
    ALERTMANAGER_STORAGE,
    ALERTMANAGER_TEMPLATE,
    GRAFANA_DASHBOARD_BUNDLE,
    GRAFANA_DASHBOARDS_DIR,
    GRAFANA_INI,
    GRAFANA_PROVISIONING,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DEFAULTS,
    RULES_DIR,
    SCRIPTS_SRC,
    SECRET_NAME,
    START_MONITORING_SCRIPT,
    TSDB_PATH,
)
from cloud_init.monitoring.prometheus import prometheus_args, prometheus_config
from cloud_init.monitoring.rules import alert_rule_files
from cloud_init.render import render
from core import ports
from core.config import StackConfig


def _defaults_file(args: list[str], why: str) -> str:
    for arg in args:
        if any(ch in arg for ch in " \"'\\$`"):
            raise ValueError(f"{arg!r} cannot go into an EnvironmentFile ARGS line unquoted")
    return render("prometheus-defaults.j2", why=why, args=args)


def _script(name: str) -> str:
    return (SCRIPTS_SRC / name).read_text()


def alertmanager_render_script() -> HostFile:
    """`qp-alertmanager-config`, shipped in the monitoring host's tools bundle over SSH (cloud_init/host_tools.py),
    not in user-data: user-data is near Hetzner's 32 KiB limit, and a bundle step re-runs when the script
    changes. Until the bundle lands (first boot), the drop-in's `ExecStartPre=-` lets Alertmanager start on
    Debian's own config; `qp-start-monitoring` then runs the script strictly."""
    return HostFile(ALERTMANAGER_RENDER_SCRIPT, _script("qp-alertmanager-config.py"), mode="0755")


def start_monitoring_script() -> str:
    """`qp-start-monitoring`, its paths and ports filled in from the same constants as the configs."""
    paths = secret_paths()
    return render(
        "qp-start-monitoring.sh.j2",
        tsdb_path=TSDB_PATH, alertmanager_storage=ALERTMANAGER_STORAGE, prometheus_config=PROMETHEUS_CONFIG,
        grafana_secret_files=[paths[SECRET_NAME[k]] for k in ("grafana_tls_cert", "grafana_tls_key",
                                                              "grafana_password")],
        dashboards_dir=GRAFANA_DASHBOARDS_DIR, dashboard_bundle=GRAFANA_DASHBOARD_BUNDLE,
        alertmanager_render=ALERTMANAGER_RENDER_SCRIPT,
        alertmanager_port=ports.ALERTMANAGER, prometheus_port=ports.PROMETHEUS, grafana_port=ports.GRAFANA)


def _yaml(doc: Any) -> str:
    return "# Managed by quantapool-infra (cloud_init/monitoring.py): edits are overwritten.\n" + yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=False, width=1000, allow_unicode=True)


def monitoring_files(cfg: StackConfig) -> list[HostFile]:
    """Every configuration file the monitoring host gets. None contains a secret.

    All are written after the packages are installed (`defer`): the packages' own conffiles are then simply
    replaced, Grafana's package has created /var/lib/grafana with its owner, and runcmd restarts the
    services onto this configuration.
    """
    return [HostFile(f.path, f.content, f.mode, f.owner, defer=True) for f in _monitoring_files(cfg)]


def _monitoring_files(cfg: StackConfig) -> list[HostFile]:
    files = [
        HostFile(PROMETHEUS_DEFAULTS, _defaults_file(prometheus_args(cfg), "Prometheus flags.")),
        HostFile(PROMETHEUS_CONFIG, _yaml(prometheus_config(cfg))),
    ]
    files += [HostFile(f"{RULES_DIR}/{name}", _yaml(doc)) for name, doc in alert_rule_files(cfg).items()]
    files += [
        HostFile(ALERTMANAGER_DEFAULTS, _defaults_file(alertmanager_args(), "Alertmanager flags.")),
        HostFile(ALERTMANAGER_TEMPLATE, _yaml(alertmanager_template(cfg))),
        HostFile(ALERTMANAGER_DROPIN, _alertmanager_dropin()),
        HostFile(START_MONITORING_SCRIPT, start_monitoring_script(), mode="0755"),
        HostFile(GRAFANA_INI, grafana_ini()),
        HostFile(f"{GRAFANA_PROVISIONING}/datasources/quantapool.yml", _yaml(grafana_datasource())),
        HostFile(f"{GRAFANA_PROVISIONING}/dashboards/quantapool.yml", _yaml(grafana_dashboard_provider())),
    ]
    files.append(HostFile(GRAFANA_DASHBOARD_BUNDLE, json.dumps(dashboards(cfg), indent=1, sort_keys=True) + "\n"))
    return files
