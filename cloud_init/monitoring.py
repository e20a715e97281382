"""The monitoring server's configuration: Prometheus, alert rules, Alertmanager routing, Grafana.

Why generated from the stack config: the scrape targets are the topology (every host's node exporter, both
key hosts' clients and validators), and a target that exists in one place but not another is how "validator
up on two hosts" goes unseen. So scrape config, rules and dashboards share the job names defined here and
tests cross-check them.

Paths follow Debian 12's packages (`prometheus` 2.42, `prometheus-alertmanager` 0.25, both running as user
`prometheus`, configured through `/etc/default/<package>` ARGS) and Grafana's official apt package.

Secrets: Alertmanager 0.25 has `routing_key_file` for PagerDuty but no `*_file` field for the Discord webhook
URL or the Telegram bot token (checked with `amtool check-config`). User-data therefore only carries a
secret-free template (`alertmanager.yml.in`) whose secret values are `@@file:PATH@@` placeholders; on the host,
`qp-alertmanager-config` (run as root before every start and reload of Alertmanager) resolves them from the
secret files into `/etc/prometheus/alertmanager.yml` (0640 root:prometheus), fails when a configured
receiver's secret is missing (except at first boot, see the script), and validates the result with amtool
before replacing the live file.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cloud_init import HostFile, HostRenderInputs
from components import ports
from components.config import HEARTBEAT_SECRET, HostSpec, StackConfig

DATA_DIR = Path(__file__).resolve().parent / "monitoring"
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
GRAFANA_INI = "/etc/grafana/grafana.ini"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
GRAFANA_DASHBOARDS_DIR = "/var/lib/grafana/dashboards"
#: Every dashboard in one JSON object (file name -> model); qp-start-monitoring unpacks it into
#: GRAFANA_DASHBOARDS_DIR. One file because one gzip stream over four similar dashboards is half the size of
#: four, and user-data is limited to 32 KiB.
GRAFANA_DASHBOARD_BUNDLE = "/etc/quantapool/grafana-dashboards.json"
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

#: Names (keys of cloud_init.secrets_table.SECRET_FILES) of the secret files this module points at.
SECRET_NAME = {
    "discord": "alertmanager-discord-webhook",
    "telegram": "alertmanager-telegram-token",
    "pagerduty": "alertmanager-pagerduty-key",
    "heartbeat": "alertmanager-heartbeat-url",
    "grafana_password": "grafana-admin-password",
    "grafana_tls_key": "grafana-tls-key",
    "grafana_tls_cert": "grafana-tls-cert",
}

#: Placeholder the host-side script replaces with a secret file's content (see module docstring).
PLACEHOLDER_RE = re.compile(r"^@@file:(/[A-Za-z0-9._/-]+)@@$")

# Route timings. Critical: out within seconds of firing, repeated hourly while unresolved.
CRITICAL_ROUTE = {"group_wait": "10s", "group_interval": "1m", "repeat_interval": "1h"}
WARNING_ROUTE = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}
#: A notification is repeated at the first group_interval tick *after* repeat_interval: with both at 1m the
#: heartbeat would go out every 2 minutes (measured), so the group is checked every 30s (pings every 60-90 s).
HEARTBEAT_ROUTE = {"group_wait": "0s", "group_interval": "30s", "repeat_interval": "1m"}
GROUP_BY = ["alertname", "host", "pair"]


# ---------------------------------------------------------------------------------------------------------
# Metric names the project knows (source of truth for the rule/dashboard cross-check). Client names are from
# the clients' source (shared/reference/zond-clients.md); node exporter names from node_exporter 1.5.
# ---------------------------------------------------------------------------------------------------------
EXECUTION_METRICS = frozenset({"chain_head_block", "chain_head_header", "chain_head_finalized", "chain_head_safe",
                               "p2p_peers", "txpool_pending", "txpool_queued"})
BEACON_METRICS = frozenset({"beacon_head_slot", "beacon_clock_time_slot", "beacon_finalized_epoch",
                            "beacon_current_justified_epoch", "p2p_peer_count", "connected_libp2p_peers"})
VALIDATOR_METRICS = frozenset({"validator_statuses", "validator_balance", "validator_last_attested_slot",
                               "validator_successful_attestations", "validator_failed_attestations",
                               "validator_successful_proposals", "validator_failed_proposals",
                               "grpc_client_msg_received_total"})
#: Written by the key hosts' textfile collector (the validator lock and the backup timer).
TEXTFILE_METRICS = frozenset({"quantapool_validator_locked", "quantapool_slashing_protection_backup_timestamp_seconds"})
NODE_METRICS = frozenset({"node_timex_sync_status", "node_timex_offset_seconds", "node_filesystem_avail_bytes",
                          "node_filesystem_size_bytes", "node_filesystem_readonly", "node_memory_MemAvailable_bytes",
                          "node_memory_MemTotal_bytes", "node_vmstat_oom_kill", "node_cpu_seconds_total",
                          "node_load1", "node_network_receive_bytes_total", "node_network_transmit_bytes_total",
                          "node_textfile_scrape_error"})
SELF_METRICS = frozenset({"up", "alertmanager_notifications_failed_total", "alertmanager_notifications_total",
                          "prometheus_rule_evaluation_failures_total", "ALERTS"})


def known_metrics() -> frozenset[str]:
    """Every metric name a rule or dashboard may use: the metric catalogue's usable entries."""
    from cloud_init.metrics_catalogue import usable_metrics  # monitoring/metrics_catalogue.yml

    return usable_metrics()


# ---------------------------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------------------------

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


def alertmanager_args() -> list[str]:
    # An empty cluster address turns off gossip clustering, which otherwise listens on 0.0.0.0:9094.
    return [
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--storage.path={ALERTMANAGER_STORAGE}",
        f"--web.listen-address=127.0.0.1:{ports.ALERTMANAGER}",
        "--cluster.listen-address=",
    ]


def _defaults_file(args: list[str], why: str) -> str:
    for arg in args:
        if any(ch in arg for ch in " \"'\\$`"):
            raise ValueError(f"{arg!r} cannot go into an EnvironmentFile ARGS line unquoted")
    return f"# Managed by quantapool-infra (cloud_init/monitoring.py). {why}\nARGS=\"{' '.join(args)}\"\n"


# ---------------------------------------------------------------------------------------------------------
# Alert rules
# ---------------------------------------------------------------------------------------------------------

@cache
def _rule_sources() -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(RULES_SRC.glob("*.yml"))}


def alert_rule_groups(cfg: StackConfig) -> list[dict[str, Any]]:
    """The rule groups, with runbook_url filled in and the pool rules fitted to the stack.

    The pool group exists only when the stack has contracts to watch; PoolPaused is left out when the pool is
    paused on purpose (an alert that fires for months trains people to ignore the channel). One file holds
    every group: user-data is limited to 32 KiB and one gzip stream compresses the repeated text far better.
    """
    base = cfg.alerting.runbook_base_url.rstrip("/")
    groups: list[dict[str, Any]] = []
    for stem, doc in _rule_sources().items():
        if stem == "pool" and cfg.pool_contracts is None:
            continue
        for group in copy.deepcopy(doc["groups"]):
            rules = group["rules"]
            if cfg.pool_contracts is not None and cfg.pool_contracts.expect_paused:
                rules = [r for r in rules if r.get("alert") != "PoolPaused"]
            for rule in rules:
                rule["annotations"]["runbook_url"] = f"{base}/{rule['alert']}.md"
            group["rules"] = rules
            groups.append(group)
    groups += expected_keys_groups(cfg)
    return groups


# >>> issue #14 (monitoring): expected key counts as recording rules -----------------------------------
EXPECTED_KEYS_METRIC = "quantapool_validator_expected_active_keys"


def expected_keys_groups(cfg: StackConfig) -> list[dict[str, Any]]:
    """alerting.expectedActiveKeys as one recording rule per pair, for ValidatorKeysNotActive to compare with."""
    counts = cfg.alerting.expected_active_keys
    if not counts:
        return []
    return [{"name": "quantapool-expected-keys", "rules": [
        {"record": EXPECTED_KEYS_METRIC, "expr": f"vector({counts[pair.name]})", "labels": {"pair": pair.name}}
        for pair in cfg.validator_pairs if pair.name in counts]}]
# <<< issue #14 ------------------------------------------------------------------------------------------


def alert_rule_files(cfg: StackConfig) -> dict[str, dict[str, Any]]:
    """Rule files by file name (one file today)."""
    return {Path(RULES_FILE).name: {"groups": alert_rule_groups(cfg)}}


def alert_rules(cfg: StackConfig) -> list[dict[str, Any]]:
    """Every rendered alerting rule, flat (recording rules left out)."""
    return [r for doc in alert_rule_files(cfg).values() for g in doc["groups"] for r in g["rules"] if "alert" in r]


def all_alert_names() -> list[str]:
    """Every alert the project defines (whatever the stack renders): each needs a runbook and tests."""
    return [r["alert"] for doc in _rule_sources().values() for g in doc["groups"] for r in g["rules"]]


# ---------------------------------------------------------------------------------------------------------
# Alertmanager
# ---------------------------------------------------------------------------------------------------------

def secret_paths() -> dict[str, str]:
    """Secret name -> file on the host, from the shared secrets table."""
    from cloud_init.secrets_table import SECRET_FILES

    return {name: s.path for name, s in SECRET_FILES.items()}


def placeholder(path: str) -> str:
    if not PLACEHOLDER_RE.match(f"@@file:{path}@@"):
        raise ValueError(f"{path!r} is not a plain absolute path")
    return f"@@file:{path}@@"


def _telegram_chat_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"alerting.telegramChatId {value!r}: Alertmanager needs the numeric chat id "
                         "(e.g. -1001234567890), not a @name") from None


def _chat_integrations(cfg: StackConfig, paths: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if "discordWebhookUrl" in cfg.secrets_present:
        out["discord_configs"] = [{"webhook_url": placeholder(paths[SECRET_NAME["discord"]]),
                                   "send_resolved": True}]
    if "telegramBotToken" in cfg.secrets_present and cfg.alerting.telegram_chat_id:
        out["telegram_configs"] = [{
            "bot_token": placeholder(paths[SECRET_NAME["telegram"]]),
            "chat_id": _telegram_chat_id(cfg.alerting.telegram_chat_id),
            "parse_mode": "HTML",
            "send_resolved": True,
        }]
    return out


def alertmanager_template(cfg: StackConfig, paths: dict[str, str] | None = None) -> dict[str, Any]:
    """The routing tree and receivers, secrets as placeholders (see module docstring).

    Receivers exist only for the secrets the stack has; without any, every route ends in the `null` receiver
    and the config stays valid (mainnet refuses to deploy without PagerDuty and the heartbeat:
    components.config.deployment_issues). critical -> PagerDuty + chat, warning -> chat, heartbeat -> a
    webhook to the external dead-man's switch (heartbeatWebhookUrl), repeated every 60-90 s.
    """
    paths = paths or secret_paths()
    chat = _chat_integrations(cfg, paths)
    critical = dict(chat)
    if "pagerdutyRoutingKey" in cfg.secrets_present:
        critical["pagerduty_configs"] = [{
            "routing_key_file": paths[SECRET_NAME["pagerduty"]],
            "severity": "critical",
            "send_resolved": True,
        }]
    # `null` is the one receiver without an integration, on purpose: routes with nowhere to go end there.
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    heartbeat = HEARTBEAT_SECRET in cfg.secrets_present
    if heartbeat:
        # Alertmanager 0.25 has no url_file for webhooks: the URL is filled in on the host (module docstring).
        receivers.append({"name": "heartbeat", "webhook_configs": [
            {"url": placeholder(paths[SECRET_NAME["heartbeat"]]), "send_resolved": False}]})
    if critical:
        receivers.append({"name": "critical", **copy.deepcopy(critical)})
    if chat:
        receivers.append({"name": "warning", **copy.deepcopy(chat)})

    def route(severity: str, receiver: str, timing: dict[str, str]) -> dict[str, Any]:
        return {"receiver": receiver, "matchers": [f'severity="{severity}"'], **timing}

    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "warning" if chat else "null",
            "group_by": GROUP_BY,
            **WARNING_ROUTE,
            "routes": [
                route("heartbeat", "heartbeat" if heartbeat else "null", HEARTBEAT_ROUTE),
                route("critical", "critical" if critical else "null", CRITICAL_ROUTE),
                route("warning", "warning" if chat else "null", WARNING_ROUTE),
            ],
        },
        "inhibit_rules": [{
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["host", "pair"],
        }],
        "receivers": receivers,
    }


def _script(name: str) -> str:
    return (SCRIPTS_SRC / name).read_text()


def start_monitoring_script() -> str:
    """`qp-start-monitoring`, its paths and ports filled in from the same constants as the configs."""
    import shlex

    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SCRIPTS_SRC)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)  # noqa: S701 - a shell script
    env.filters["sh"] = shlex.quote
    paths = secret_paths()
    return env.get_template("qp-start-monitoring.sh.j2").render(
        tsdb_path=TSDB_PATH, alertmanager_storage=ALERTMANAGER_STORAGE, prometheus_config=PROMETHEUS_CONFIG,
        grafana_secret_files=[paths[SECRET_NAME[k]] for k in ("grafana_tls_cert", "grafana_tls_key",
                                                              "grafana_password")],
        dashboards_dir=GRAFANA_DASHBOARDS_DIR, dashboard_bundle=GRAFANA_DASHBOARD_BUNDLE,
        alertmanager_render=ALERTMANAGER_RENDER_SCRIPT,
        alertmanager_port=ports.ALERTMANAGER, prometheus_port=ports.PROMETHEUS, grafana_port=ports.GRAFANA)


def grafana_install_script() -> str:
    """`qp-install-grafana VERSION` (see the script's header)."""
    return _jinja().get_template("qp-install-grafana.sh.j2").render(
        key_path=GRAFANA_APT_KEY, fingerprint=GRAFANA_APT_KEY_FINGERPRINT, list_path=GRAFANA_APT_LIST,
        source=GRAFANA_APT_SOURCE, lab_marker=LAB_NO_GRAFANA_MARKER)


def _jinja() -> Any:
    import shlex

    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SCRIPTS_SRC)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)  # noqa: S701 - shell scripts
    env.filters["sh"] = shlex.quote
    return env


def _alertmanager_dropin() -> str:
    """Rebuild alertmanager.yml before every start and reload.

    `+` runs the script as root (the service runs as prometheus); `-` lets Alertmanager start on its last
    good config if the new one is rejected (a wrong webhook URL or a missing secret must not take alerting
    down). qp-start-monitoring runs the script itself first, strictly, so the bootstrap does see such a
    failure. Only the start may fall back to `null` routes, and only before any config of ours exists (first
    boot, secrets not yet installed).
    """
    return (
        "# Managed by quantapool-infra (cloud_init/monitoring.py): rebuild alertmanager.yml from its\n"
        "# secret-free template and the secret files before every start and reload.\n"
        "[Service]\n"
        f"ExecStartPre=-+{ALERTMANAGER_RENDER_SCRIPT} --first-boot-fallback\n"
        "ExecReload=\n"
        f"ExecReload=-+{ALERTMANAGER_RENDER_SCRIPT}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
    )


# ---------------------------------------------------------------------------------------------------------
# Grafana
# ---------------------------------------------------------------------------------------------------------

def grafana_ini() -> str:
    """Replaces the package's grafana.ini (cloud-init installs with --force-confold, so ours is kept).

    No secret inside: the admin password is read by Grafana from its file ($__file{} expansion), TLS files are
    referenced by path. The admin password only applies when Grafana first creates its database.
    """
    paths = {key: secret_paths()[name] for key, name in SECRET_NAME.items()}
    return (
        "; Managed by quantapool-infra (cloud_init/monitoring.py)\n"
        "[paths]\n"
        f"provisioning = {GRAFANA_PROVISIONING}\n\n"
        "[server]\n"
        "protocol = https\n"
        f"http_port = {ports.GRAFANA}\n"
        f"cert_file = {paths['grafana_tls_cert']}\n"
        f"cert_key = {paths['grafana_tls_key']}\n\n"
        "[security]\n"
        "admin_user = admin\n"
        f"admin_password = $__file{{{paths['grafana_password']}}}\n"
        "cookie_secure = true\n"
        "disable_gravatar = true\n\n"
        "[users]\n"
        "allow_sign_up = false\n\n"
        "[auth.anonymous]\n"
        "enabled = false\n\n"
        "[analytics]\n"
        "reporting_enabled = false\n"
        "check_for_updates = false\n"
        "check_for_plugin_updates = false\n"
    )


def grafana_datasource() -> dict[str, Any]:
    return {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "uid": GRAFANA_DATASOURCE_UID, "type": "prometheus", "access": "proxy",
        "url": f"http://127.0.0.1:{ports.PROMETHEUS}", "isDefault": True, "editable": False,
        "jsonData": {"timeInterval": SCRAPE_INTERVAL},
    }]}


def grafana_dashboard_provider() -> dict[str, Any]:
    return {"apiVersion": 1, "providers": [{
        "name": "quantapool", "folder": "QuantaPool", "type": "file", "disableDeletion": True,
        "allowUiUpdates": False, "updateIntervalSeconds": 60,
        "options": {"path": GRAFANA_DASHBOARDS_DIR, "foldersFromFilesStructure": False},
    }]}


_PANEL_W = {"stat": 6, "timeseries": 12, "table": 24}
_PANEL_H = {"stat": 4, "timeseries": 8, "table": 8}


def _panel(spec: dict[str, Any], panel_id: int, x: int, y: int) -> dict[str, Any]:
    kind = spec.get("type", "timeseries")
    ds = {"type": "prometheus", "uid": GRAFANA_DATASOURCE_UID}
    targets = [{"refId": chr(ord("A") + i), "datasource": ds, "expr": t["expr"],
                "legendFormat": t.get("legend", "__auto"), **({"instant": True} if kind != "timeseries" else {})}
               for i, t in enumerate(spec["targets"])]
    panel: dict[str, Any] = {
        "id": panel_id, "type": kind, "title": spec["title"], "datasource": ds, "targets": targets,
        "gridPos": {"x": x, "y": y, "w": _PANEL_W[kind], "h": _PANEL_H[kind]},
        "fieldConfig": {"defaults": {"unit": spec.get("unit", "short")}, "overrides": []},
        "options": {},
    }
    if "description" in spec:
        panel["description"] = spec["description"]
    if "thresholds" in spec:
        panel["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": [
            {"color": c, "value": v} for v, c in spec["thresholds"]]}
    return panel


def _variable(name: str, query: str) -> dict[str, Any]:
    return {"name": name, "type": "query", "label": name,
            "datasource": {"type": "prometheus", "uid": GRAFANA_DATASOURCE_UID},
            "query": {"query": query, "refId": f"var-{name}"}, "definition": query,
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}


def dashboard(spec: dict[str, Any]) -> dict[str, Any]:
    """A Grafana dashboard model from a compact spec (title, uid, variables, rows of panels)."""
    panels: list[dict[str, Any]] = []
    y = 0
    panel_id = 1
    for row in spec["rows"]:
        panels.append({"id": panel_id, "type": "row", "title": row["title"], "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        panel_id += 1
        y += 1
        x = 0
        row_h = 0
        for p in row["panels"]:
            kind = p.get("type", "timeseries")
            if x + _PANEL_W[kind] > 24:
                x, y, row_h = 0, y + row_h, 0
            panels.append(_panel(p, panel_id, x, y))
            panel_id += 1
            x += _PANEL_W[kind]
            row_h = max(row_h, _PANEL_H[kind])
        y += row_h
    return {
        "uid": spec["uid"], "title": spec["title"], "tags": ["quantapool"], "timezone": "utc",
        "schemaVersion": 39, "version": 1, "editable": False, "refresh": "30s",
        "time": {"from": spec.get("from", "now-6h"), "to": "now"},
        "templating": {"list": [_variable(v["name"], v["query"]) for v in spec.get("variables", [])]},
        "annotations": {"list": []}, "links": [], "panels": panels,
    }


@cache
def _dashboard_specs() -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(DASHBOARDS_SRC.glob("*.yml"))}


def dashboards(cfg: StackConfig) -> dict[str, dict[str, Any]]:
    """Dashboard JSON models by file name; the pool dashboard only when the stack watches contracts."""
    out = {}
    for stem, spec in _dashboard_specs().items():
        if spec.get("requires_pool_contracts") and cfg.pool_contracts is None:
            continue
        out[f"quantapool-{stem}.json"] = dashboard(spec)
    return out


def dashboard_queries(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard (panels and template variables)."""
    exprs = [t["expr"] for p in model["panels"] for t in p.get("targets", [])]
    for var in model["templating"]["list"]:
        query = var["query"]["query"]
        m = re.match(r"^label_values\((.*),\s*\w+\)$", query)
        exprs.append(m.group(1) if m else query)
    return exprs


# ---------------------------------------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------------------------------------

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
        HostFile(ALERTMANAGER_RENDER_SCRIPT, _script("qp-alertmanager-config.py"), mode="0755"),
        HostFile(ALERTMANAGER_DROPIN, _alertmanager_dropin()),
        HostFile(START_MONITORING_SCRIPT, start_monitoring_script(), mode="0755"),
        HostFile(GRAFANA_INI, grafana_ini()),
        HostFile(f"{GRAFANA_PROVISIONING}/datasources/quantapool.yml", _yaml(grafana_datasource())),
        HostFile(f"{GRAFANA_PROVISIONING}/dashboards/quantapool.yml", _yaml(grafana_dashboard_provider())),
    ]
    files.append(HostFile(GRAFANA_DASHBOARD_BUNDLE, json.dumps(dashboards(cfg), indent=1, sort_keys=True) + "\n"))
    return files


# ---------------------------------------------------------------------------------------------------------
# User-data
# ---------------------------------------------------------------------------------------------------------

def firewall_rules(inputs: HostRenderInputs) -> list[str]:
    """Host firewall (input chain) of the monitoring server: Grafana from the trusted CIDRs only.

    Prometheus and Alertmanager listen on loopback, the contract exporter and node exporter are scraped
    from this host itself (loopback traffic is accepted by the shared skeleton), so nothing else is open.
    """
    cidrs = inputs.config.network.grafana_allowed_cidrs
    v4 = ", ".join(c for c in cidrs if ipaddress.ip_network(c).version == 4)
    v6 = ", ".join(c for c in cidrs if ipaddress.ip_network(c).version == 6)
    rules = ["# Grafana (HTTPS): trusted operator addresses only"]
    if v4:
        rules.append(f"ip saddr {{ {v4} }} tcp dport {ports.GRAFANA} accept")
    if v6:
        rules.append(f"ip6 saddr {{ {v6} }} tcp dport {ports.GRAFANA} accept")
    return rules


def _shared_scripts() -> list[HostFile]:
    """The bootstrap's host scripts that every role has (same templates as the key hosts)."""
    from cloud_init.key_host import HOST_ENV, INSTALL_SECRET, SBIN
    from cloud_init.render import render
    from cloud_init.secrets_table import install_secret_script

    return [
        HostFile(f"{SBIN}/qp-wait-ready", render("qp-wait-ready.sh.j2",
                                                 cloud_init_log="/var/log/cloud-init-output.log"), "0755"),
        HostFile(f"{SBIN}/qp-set-host-env", render("qp-set-host-env.sh.j2", host_env=HOST_ENV), "0755"),
        HostFile(INSTALL_SECRET, install_secret_script("monitoring"), "0755"),
    ]


def monitoring_cloud_config(inputs: HostRenderInputs) -> dict[str, Any]:
    from cloud_init.base import base_cloud_config
    from cloud_init.nftables import ruleset

    cfg = inputs.config
    if inputs.host.role != "monitoring":
        raise ValueError(f"{inputs.host.name} is a {inputs.host.role} host, not the monitoring server")
    doc = base_cloud_config(
        inputs,
        packages=list(MONITORING_PACKAGES),
        nft_rules=ruleset(inputs, firewall_rules(inputs)),
        files=[*_shared_scripts(), *monitoring_files(cfg), *_grafana_install_files()],
        runcmd=[
            ["install", "-d", "-m", "0755", "-o", "root", "-g", "root", "/etc/quantapool"],
            ["install", "-d", "-m", "0711", "-o", "root", "-g", "root", "/etc/quantapool/secrets"],
            ["install", "-d", "-m", "0755", "-o", "prometheus", "-g", "prometheus", DATA_MOUNT, TSDB_PATH,
             ALERTMANAGER_STORAGE],
            # Grafana's package after Debian's (its dependencies come from there); keeps our grafana.ini
            [GRAFANA_INSTALL_SCRIPT, cfg.monitoring.grafana_version],
            ["promtool", "check", "config", PROMETHEUS_CONFIG],
            ["systemctl", "daemon-reload"],
            # Alerting runs from the first minute (receivers join once their secrets are installed and
            # qp-start-monitoring restarts it). Grafana waits for its TLS files: qp-start-monitoring.
            ["systemctl", "enable", "prometheus.service", "prometheus-alertmanager.service"],
            ["systemctl", "restart", "prometheus-alertmanager.service", "prometheus.service"],
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
