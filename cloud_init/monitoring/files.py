"""Every configuration file and script of the monitoring host's `monitoring-config` bundle (none holds a secret).

Why a bundle and not user-data: everything here follows the stack config (targets per pair, rules, receivers,
dashboards), and user-data reaches a host only at its first boot. The bundle travels over SSH on every
`pulumi up` whose content changed; `qp-monitoring-config` checks the staged copies with promtool and amtool
before it installs and reloads anything (scripts/qp-monitoring-config.py).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from cloud_init import HostFile
from cloud_init.bundles import Bundle, Check, OnChange
from cloud_init.monitoring.alertmanager import (
    _alertmanager_dropin,
    alertmanager_args,
    alertmanager_template,
    secret_paths,
)
from cloud_init.monitoring.grafana import dashboards, grafana_dashboard_provider, grafana_datasource, grafana_ini
from cloud_init.monitoring.layout import (
    ALERTMANAGER_CONFIG,
    ALERTMANAGER_DEFAULTS,
    ALERTMANAGER_DROPIN,
    ALERTMANAGER_RENDER_SCRIPT,
    ALERTMANAGER_STORAGE,
    ALERTMANAGER_TEMPLATE,
    APPLY_SCRIPT,
    BUNDLE_NAME,
    GRAFANA_DASHBOARDS_DIR,
    GRAFANA_INI,
    GRAFANA_PROVISIONING,
    MANIFEST,
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
from cloud_init.secrets_table import SECRETS_DIR
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
    """`qp-alertmanager-config`, in the monitoring-config bundle with the template it renders. Until the bundle
    lands (first boot), Alertmanager runs on Debian's own config; `qp-monitoring-config` then runs the script
    strictly, and `qp-start-monitoring` once more after the secrets are installed."""
    return HostFile(ALERTMANAGER_RENDER_SCRIPT, _script("qp-alertmanager-config.py"), mode="0755")


def apply_script() -> HostFile:
    """`qp-monitoring-config`: checks the staged bundle, installs, reloads and verifies (its docstring)."""
    return HostFile(APPLY_SCRIPT, _script("qp-monitoring-config.py"), mode="0755")


def start_monitoring_script() -> str:
    """`qp-start-monitoring`, its paths and ports filled in from the same constants as the configs."""
    paths = secret_paths()
    return render(
        "qp-start-monitoring.sh.j2",
        tsdb_path=TSDB_PATH, alertmanager_storage=ALERTMANAGER_STORAGE, prometheus_config=PROMETHEUS_CONFIG,
        grafana_secret_files=[paths[SECRET_NAME[k]] for k in ("grafana_tls_cert", "grafana_tls_key",
                                                              "grafana_password")],
        alertmanager_render=ALERTMANAGER_RENDER_SCRIPT,
        alertmanager_port=ports.ALERTMANAGER, prometheus_port=ports.PROMETHEUS, grafana_port=ports.GRAFANA)


def _yaml(doc: Any) -> str:
    return "# Managed by quantapool-infra (cloud_init/monitoring.py): edits are overwritten.\n" + yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=False, width=1000, allow_unicode=True)


def manifest(cfg: StackConfig, files: list[HostFile]) -> dict[str, Any]:
    """What `qp-monitoring-config` needs to know about the host: which file is which, units, metrics URLs.

    Defined here, from the same layout constants as the files, so the host script hard-codes no path.
    """
    return {
        "files": {f.path: {"mode": f.mode} for f in files},
        "owned": [{"dir": RULES_DIR, "glob": "*.yml"}, {"dir": GRAFANA_DASHBOARDS_DIR, "glob": "quantapool-*.json"}],
        "prometheus": {"config": PROMETHEUS_CONFIG, "rules_dir": RULES_DIR, "defaults": PROMETHEUS_DEFAULTS,
                       "unit": "prometheus.service",
                       "metrics_url": f"http://127.0.0.1:{ports.PROMETHEUS}/metrics"},
        "alertmanager": {"template": ALERTMANAGER_TEMPLATE, "config": ALERTMANAGER_CONFIG,
                         "renderer": ALERTMANAGER_RENDER_SCRIPT, "defaults": ALERTMANAGER_DEFAULTS,
                         "dropin": ALERTMANAGER_DROPIN, "secrets_dir": SECRETS_DIR, "group": "prometheus",
                         "unit": "prometheus-alertmanager.service",
                         "metrics_url": f"http://127.0.0.1:{ports.ALERTMANAGER}/metrics"},
        "grafana": {"ini": GRAFANA_INI, "provisioning": GRAFANA_PROVISIONING, "unit": "grafana-server.service"},
    }


#: The bundle's check: the staged applier on the staged copies, before the bundle applier installs anything.
CHECK_COMMAND = f'python3 "$STAGED{APPLY_SCRIPT}" check "$STAGED"'
#: The on-change action: the installed applier reloads what differs from the last good configuration.
#: (QP_BUNDLE_ROOT is unset on a host; tests set it to their temp root.)
RELOAD_COMMAND = f'python3 "${{QP_BUNDLE_ROOT%/}}{APPLY_SCRIPT}" reload'


def monitoring_bundle(cfg: StackConfig) -> Bundle:
    """The `monitoring-config` bundle: every file below, promtool/amtool on the staged copies, then reload."""
    return Bundle(BUNDLE_NAME, tuple(monitoring_files(cfg)),
                  checks=(Check("promtool-amtool", CHECK_COMMAND),),
                  on_change=(OnChange(("/*",), RELOAD_COMMAND),))


def monitoring_files(cfg: StackConfig) -> list[HostFile]:
    """Every file of the monitoring-config bundle, the manifest of `qp-monitoring-config` last."""
    files = _monitoring_files(cfg)
    return [*files, HostFile(MANIFEST, json.dumps(manifest(cfg, files), indent=1, sort_keys=True) + "\n")]


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
        alertmanager_render_script(),
        apply_script(),
        HostFile(START_MONITORING_SCRIPT, start_monitoring_script(), mode="0755"),
        HostFile(GRAFANA_INI, grafana_ini()),
        HostFile(f"{GRAFANA_PROVISIONING}/datasources/quantapool.yml", _yaml(grafana_datasource())),
        HostFile(f"{GRAFANA_PROVISIONING}/dashboards/quantapool.yml", _yaml(grafana_dashboard_provider())),
    ]
    # one file per dashboard, where Grafana's file provider reads them (it notices changes by itself)
    files += [HostFile(f"{GRAFANA_DASHBOARDS_DIR}/{name}", json.dumps(model, indent=1, sort_keys=True) + "\n")
              for name, model in dashboards(cfg).items()]
    return files
