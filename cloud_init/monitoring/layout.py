"""Where things live on the monitoring host, and the names every part shares (jobs, severities, secrets)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent  # the package holds its data files
RULES_SRC = DATA_DIR / "rules"
DASHBOARDS_SRC = DATA_DIR / "dashboards"
SCRIPTS_SRC = DATA_DIR / "scripts"

# -- paths on the monitoring host (Debian package defaults unless noted) ---------------------------------
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
PROMETHEUS_DEFAULTS = "/etc/default/prometheus"
RULES_DIR = "/etc/prometheus/rules"
RULES_FILE = f"{RULES_DIR}/quantapool.yml"
#: The data volume is mounted here; Debian's TSDB (metrics2/) and Alertmanager state live below it.
DATA_MOUNT = "/var/lib/prometheus"
TSDB_PATH = f"{DATA_MOUNT}/metrics2/"
ALERTMANAGER_CONFIG = "/etc/prometheus/alertmanager.yml"
ALERTMANAGER_TEMPLATE = "/etc/prometheus/alertmanager.yml.in"
ALERTMANAGER_DEFAULTS = "/etc/default/prometheus-alertmanager"
ALERTMANAGER_STORAGE = f"{DATA_MOUNT}/alertmanager/"
ALERTMANAGER_DROPIN = "/etc/systemd/system/prometheus-alertmanager.service.d/quantapool.conf"
ALERTMANAGER_RENDER_SCRIPT = "/usr/local/sbin/qp-alertmanager-config"
#: Run by the Pulumi bootstrap once the secrets are installed (components/monitoring_server.py).
START_MONITORING_SCRIPT = "/usr/local/sbin/qp-start-monitoring"
#: The monitoring-config bundle's applier (checks staged files, installs, reloads) and its manifest.
APPLY_SCRIPT = "/usr/local/sbin/qp-monitoring-config"
MANIFEST = "/etc/quantapool/monitoring-config.json"
#: Name of the bundle (and of its step, `<host>-bundle-monitoring-config`).
BUNDLE_NAME = "monitoring-config"
GRAFANA_INI = "/etc/grafana/grafana.ini"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
GRAFANA_DASHBOARDS_DIR = "/var/lib/grafana/dashboards"
GRAFANA_DATASOURCE_UID = "prometheus"
#: Grafana's official apt repository and its signing key (rotated 2023; apt.grafana.com lists it). The key is
#: kept in the repository (monitoring/grafana-apt-key.asc, its fingerprint checked by the tests with gpg) and
#: written as an ASCII-armoured keyring that apt reads directly: cloud-init's apt `keyid`/`key` would need
#: `gpg` at apt-configure time, which Debian's cloud image does not guarantee. Its expiry (2027-08-22) must
#: be followed: refresh the file from https://apt.grafana.com/gpg.key when Grafana extends it.
GRAFANA_APT_KEY_FINGERPRINT = "B53AE77BADB630A683046005963FA27710458545"
GRAFANA_APT_KEY_SRC = DATA_DIR / "grafana-apt-key.asc"
GRAFANA_APT_KEY = "/etc/apt/keyrings/grafana.asc"
GRAFANA_APT_LIST = "/etc/apt/sources.list.d/grafana.list"
GRAFANA_APT_SOURCE = f"deb [signed-by={GRAFANA_APT_KEY}] https://apt.grafana.com stable main"
#: Installs Grafana from runcmd (after the Debian packages); skipped on lab hosts (LAB_NO_GRAFANA_MARKER).
GRAFANA_INSTALL_SCRIPT = "/usr/local/sbin/qp-install-grafana"
LAB_NO_GRAFANA_MARKER = "/etc/quantapool/lab-no-grafana"
MONITORING_PACKAGES = ("prometheus", "prometheus-alertmanager")

#: Share of the data volume Prometheus may fill with blocks; the rest is WAL, compaction and Alertmanager.
RETENTION_SHARE = 0.8
#: Upper bound on age; in practice the size limit governs.
RETENTION_TIME = "365d"

#: Label value of `pair` on targets that belong to no validator pair (the monitoring host).
NO_PAIR = "none"

SCRAPE_INTERVAL = "15s"
EVALUATION_INTERVAL = "15s"

# Job names: the one vocabulary shared by scrape config, rules and dashboards.
JOB_NODE = "node"
JOB_EXECUTION = "execution"
JOB_BEACON = "beacon"
JOB_VALIDATOR = "validator"
JOB_CONTRACT_EXPORTER = "contract_exporter"
JOB_PROMETHEUS = "prometheus"
JOB_ALERTMANAGER = "alertmanager"
JOBS = (JOB_NODE, JOB_EXECUTION, JOB_BEACON, JOB_VALIDATOR, JOB_CONTRACT_EXPORTER, JOB_PROMETHEUS,
        JOB_ALERTMANAGER)

SEVERITIES = ("critical", "warning", "heartbeat")

#: Names (keys of cloud_init.secrets_table.SECRET_FILES) of the secret files the monitoring configs point at.
SECRET_NAME = {
    "discord": "alertmanager-discord-webhook",
    "telegram": "alertmanager-telegram-token",
    "pagerduty": "alertmanager-pagerduty-key",
    "heartbeat": "alertmanager-heartbeat-url",
    "grafana_password": "grafana-admin-password",
    "grafana_tls_key": "grafana-tls-key",
    "grafana_tls_cert": "grafana-tls-cert",
}
