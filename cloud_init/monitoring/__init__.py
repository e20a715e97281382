"""The monitoring server's configuration: Prometheus, alert rules, Alertmanager routing, Grafana.

Why generated from the stack config: the scrape targets are the topology (every host's node exporter, both
key hosts' clients and validators), and a target that exists in one place but not another is how "validator
up on two hosts" goes unseen. So scrape config, rules and dashboards share the job names defined here and
tests cross-check them.

Paths follow Debian 12's packages (`prometheus` 2.42, `prometheus-alertmanager` 0.25, both running as user
`prometheus`, configured through `/etc/default/<package>` ARGS) and Grafana's official apt package.

Delivery: user-data only installs the packages (first boot); every file here is in the `monitoring-config`
bundle (files.py, cloud_init/bundles.py), checked on the host with promtool and amtool before it replaces
anything, then reloaded (scripts/qp-monitoring-config.py).

Secrets: Alertmanager 0.25 has `routing_key_file` for PagerDuty but no `*_file` field for the Discord webhook
URL or the Telegram bot token (checked with `amtool check-config`). The bundle therefore only carries a
secret-free template (`alertmanager.yml.in`) whose secret values are `@@file:PATH@@` placeholders; on the host,
`qp-alertmanager-config` (run as root before every start and reload of Alertmanager) resolves them from the
secret files into `/etc/prometheus/alertmanager.yml` (0640 root:prometheus), fails when a configured
receiver's secret is missing (except at first boot, see the script), and validates the result with amtool
before replacing the live file.
"""

from __future__ import annotations

from cloud_init.monitoring.alertmanager import (
    CRITICAL_ROUTE,
    GROUP_BY,
    HEARTBEAT_ROUTE,
    PLACEHOLDER_RE,
    WARNING_ROUTE,
    alertmanager_args,
    alertmanager_template,
    placeholder,
    secret_paths,
)
from cloud_init.monitoring.files import monitoring_bundle, monitoring_files, start_monitoring_script
from cloud_init.monitoring.grafana import (
    dashboard,
    dashboard_queries,
    dashboards,
    grafana_dashboard_provider,
    grafana_datasource,
    grafana_ini,
    grafana_install_script,
)
from cloud_init.monitoring.layout import (
    ALERTMANAGER_CONFIG,
    ALERTMANAGER_DEFAULTS,
    ALERTMANAGER_DROPIN,
    ALERTMANAGER_RENDER_SCRIPT,
    ALERTMANAGER_STORAGE,
    ALERTMANAGER_TEMPLATE,
    APPLY_SCRIPT,
    BUNDLE_NAME,
    DASHBOARDS_SRC,
    DATA_DIR,
    DATA_MOUNT,
    EVALUATION_INTERVAL,
    GRAFANA_APT_KEY,
    GRAFANA_APT_KEY_FINGERPRINT,
    GRAFANA_APT_KEY_SRC,
    GRAFANA_APT_LIST,
    GRAFANA_APT_SOURCE,
    GRAFANA_DASHBOARDS_DIR,
    GRAFANA_DATASOURCE_UID,
    GRAFANA_INI,
    GRAFANA_INSTALL_SCRIPT,
    GRAFANA_PROVISIONING,
    JOB_ALERTMANAGER,
    JOB_BEACON,
    JOB_CONTRACT_EXPORTER,
    JOB_EXECUTION,
    JOB_NODE,
    JOB_PROMETHEUS,
    JOB_VALIDATOR,
    JOBS,
    LAB_NO_GRAFANA_MARKER,
    MANIFEST,
    MONITORING_PACKAGES,
    NO_PAIR,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DEFAULTS,
    RETENTION_SHARE,
    RETENTION_TIME,
    RULES_DIR,
    RULES_FILE,
    RULES_SRC,
    SCRAPE_INTERVAL,
    SCRIPTS_SRC,
    SECRET_NAME,
    SEVERITIES,
    START_MONITORING_SCRIPT,
    TSDB_PATH,
)
from cloud_init.monitoring.metrics import (
    BEACON_METRICS,
    EXECUTION_METRICS,
    NODE_METRICS,
    SELF_METRICS,
    TEXTFILE_METRICS,
    VALIDATOR_METRICS,
    known_metrics,
)
from cloud_init.monitoring.prometheus import prometheus_args, prometheus_config, retention_size, scrape_jobs
from cloud_init.monitoring.rules import (
    EXPECTED_KEYS_METRIC,
    alert_rule_files,
    alert_rule_groups,
    alert_rules,
    all_alert_names,
    expected_keys_groups,
)
from cloud_init.monitoring.user_data import monitoring_cloud_config, render_monitoring_user_data

__all__ = [
    "ALERTMANAGER_CONFIG",
    "ALERTMANAGER_DEFAULTS",
    "ALERTMANAGER_DROPIN",
    "ALERTMANAGER_RENDER_SCRIPT",
    "ALERTMANAGER_STORAGE",
    "ALERTMANAGER_TEMPLATE",
    "APPLY_SCRIPT",
    "BEACON_METRICS",
    "BUNDLE_NAME",
    "CRITICAL_ROUTE",
    "DASHBOARDS_SRC",
    "DATA_DIR",
    "DATA_MOUNT",
    "EVALUATION_INTERVAL",
    "EXECUTION_METRICS",
    "EXPECTED_KEYS_METRIC",
    "GRAFANA_APT_KEY",
    "GRAFANA_APT_KEY_FINGERPRINT",
    "GRAFANA_APT_KEY_SRC",
    "GRAFANA_APT_LIST",
    "GRAFANA_APT_SOURCE",
    "GRAFANA_DASHBOARDS_DIR",
    "GRAFANA_DATASOURCE_UID",
    "GRAFANA_INI",
    "GRAFANA_INSTALL_SCRIPT",
    "GRAFANA_PROVISIONING",
    "GROUP_BY",
    "HEARTBEAT_ROUTE",
    "JOBS",
    "JOB_ALERTMANAGER",
    "JOB_BEACON",
    "JOB_CONTRACT_EXPORTER",
    "JOB_EXECUTION",
    "JOB_NODE",
    "JOB_PROMETHEUS",
    "JOB_VALIDATOR",
    "LAB_NO_GRAFANA_MARKER",
    "MANIFEST",
    "MONITORING_PACKAGES",
    "NODE_METRICS",
    "NO_PAIR",
    "PLACEHOLDER_RE",
    "PROMETHEUS_CONFIG",
    "PROMETHEUS_DEFAULTS",
    "RETENTION_SHARE",
    "RETENTION_TIME",
    "RULES_DIR",
    "RULES_FILE",
    "RULES_SRC",
    "SCRAPE_INTERVAL",
    "SCRIPTS_SRC",
    "SECRET_NAME",
    "SELF_METRICS",
    "SEVERITIES",
    "START_MONITORING_SCRIPT",
    "TEXTFILE_METRICS",
    "TSDB_PATH",
    "VALIDATOR_METRICS",
    "WARNING_ROUTE",
    "alert_rule_files",
    "alert_rule_groups",
    "alert_rules",
    "alertmanager_args",
    "alertmanager_template",
    "all_alert_names",
    "dashboard",
    "dashboard_queries",
    "dashboards",
    "expected_keys_groups",
    "grafana_dashboard_provider",
    "grafana_datasource",
    "grafana_ini",
    "grafana_install_script",
    "known_metrics",
    "monitoring_bundle",
    "monitoring_cloud_config",
    "monitoring_files",
    "placeholder",
    "prometheus_args",
    "prometheus_config",
    "render_monitoring_user_data",
    "retention_size",
    "scrape_jobs",
    "secret_paths",
    "start_monitoring_script",
]
