"""The generated monitoring configuration: topology, rules, dashboards, Grafana, user-data (no real tools)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from cloud_init import HostRenderInputs, monitoring
from cloud_init.base import decoded_write_files
from cloud_init.secrets_table import SECRET_FILES
from core import ports

from .promql_names import job_selectors, metric_names
from .support import ALL_SECRETS, variant

REPO = Path(__file__).resolve().parents[2]
DEPLOY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOdgjOJQRNh+TBeuUDbqQwXQO0O/zSMdQ8fe+LjVvUOR deploy"


def _targets(cfg, job: str) -> dict[str, dict[str, str]]:
    (j,) = [j for j in monitoring.scrape_jobs(cfg) if j["job_name"] == job]
    return {t: sc["labels"] for sc in j["static_configs"] for t in sc["targets"]}


def _durations(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", value))


# -- scrape config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["testnet", "mainnet"])
def test_scrape_targets_follow_the_topology(stack: str) -> None:
    cfg = variant(stack)
    keys = cfg.key_hosts()
    assert len(keys) == 2 * len(cfg.validator_pairs)
    node = _targets(cfg, "node")
    assert set(node) == {f"{h.private_ip}:{ports.NODE_EXPORTER}" for h in cfg.hosts()}
    for job, port in (("execution", ports.EXECUTION_METRICS), ("beacon", ports.BEACON_METRICS),
                      ("validator", ports.VALIDATOR_METRICS)):
        assert set(_targets(cfg, job)) == {f"{h.private_ip}:{port}" for h in keys}, job
    # the validator job covers BOTH key hosts of every pair, whichever is active
    val = _targets(cfg, "validator")
    for pair in cfg.validator_pairs:
        assert sorted(lbl["role"] for lbl in val.values() if lbl["pair"] == pair.name) == ["backup", "primary"]


def test_every_target_has_role_host_pair_labels() -> None:
    cfg = variant("mainnet")
    by_name = {h.name: h for h in cfg.hosts()}
    for job in monitoring.scrape_jobs(cfg):
        for sc in job["static_configs"]:
            lbl = sc["labels"]
            assert set(lbl) == {"role", "host", "pair"}
            host = by_name[lbl["host"]]
            assert lbl["role"] == host.role
            assert lbl["pair"] == (host.pair or monitoring.NO_PAIR)


def test_intervals_and_paths() -> None:
    jobs = {j["job_name"]: j for j in monitoring.scrape_jobs(variant("testnet"))}
    assert {n: j["scrape_interval"] for n, j in jobs.items()} == {
        "node": "15s", "execution": "15s", "beacon": "15s", "validator": "15s", "contract_exporter": "30s",
        "prometheus": "15s", "alertmanager": "15s"}
    assert jobs["execution"]["metrics_path"] == "/debug/metrics/prometheus"
    # the exporter listens on loopback of this host (cloud_init/exporter_deploy.py renders the same address)
    assert list(_targets(variant("testnet"), "contract_exporter")) == [f"127.0.0.1:{ports.CONTRACT_EXPORTER}"]


def test_contract_exporter_only_with_pool_contracts() -> None:
    assert "contract_exporter" not in {j["job_name"] for j in monitoring.scrape_jobs(variant("mainnet"))}
    assert "contract_exporter" not in {j["job_name"] for j in monitoring.scrape_jobs(variant(pool=False))}


@pytest.mark.parametrize("gib", [10, 50, 101, 1000])
def test_retention_fits_the_volume(gib: int) -> None:
    cfg = variant()
    cfg = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"volume_gib": gib})})
    args = monitoring.prometheus_args(cfg)
    (size,) = [a.split("=", 1)[1] for a in args if a.startswith("--storage.tsdb.retention.size=")]
    assert size == f"{math.floor(gib * 0.8)}GB"
    assert int(size.removesuffix("GB")) < gib
    assert f"--storage.tsdb.path={monitoring.DATA_MOUNT}/metrics2/" in args
    assert "--web.listen-address=127.0.0.1:9090" in args


def test_defaults_files_are_single_args_lines() -> None:
    files = {f.path: f.content for f in monitoring.monitoring_files(variant())}
    for path in (monitoring.PROMETHEUS_DEFAULTS, monitoring.ALERTMANAGER_DEFAULTS):
        (line,) = [ln for ln in files[path].splitlines() if not ln.startswith("#")]
        assert re.fullmatch(r'ARGS="[^"$`\\]*"', line), line
    am_line = files[monitoring.ALERTMANAGER_DEFAULTS].splitlines()[-1]
    assert "--cluster.listen-address=" in am_line.split('"')[1].split()  # gossip cluster off


# -- rules --------------------------------------------------------------------------------------------------

def test_every_rule_is_annotated_and_has_a_runbook() -> None:
    cfg = variant(expect_paused=False)
    cfg = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"runbook_base_url": "https://x/rb/"})})
    rules = monitoring.alert_rules(cfg)
    assert sorted(r["alert"] for r in rules) == sorted(monitoring.all_alert_names())
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in monitoring.SEVERITIES, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"https://x/rb/{name}.md"
        runbook = REPO / "docs" / "runbooks" / f"{name}.md"
        assert runbook.is_file(), f"missing {runbook}"
        text = runbook.read_text()
        assert text.startswith(f"# {name}"), name
        for section in ("## What it means", "## First checks", "## Do not"):
            assert section in text, f"{name}: runbook lacks {section!r}"


def test_critical_alerts_page_fast() -> None:
    rules = {r["alert"]: r for r in monitoring.alert_rules(variant(expect_paused=False))}
    assert _durations(rules["ValidatorRunningOnTwoHosts"].get("for", "0s")) <= 30
    for name in ("ValidatorDownOnActiveHost", "SlashingProtectionRejected", "ValidatorSlashing",
                 "ValidatorUnlockedOnTwoHosts", "ClockNotSynchronised"):
        assert rules[name]["labels"]["severity"] == "critical"
        assert _durations(rules[name].get("for", "0s")) <= 120, name
    assert rules["DeadMansSwitch"]["labels"]["severity"] == "heartbeat"


def test_not_attesting_window_exceeds_an_epoch() -> None:
    (rule,) = [r for r in monitoring.alert_rules(variant()) if r["alert"] == "NotAttesting"]
    lag = int(re.search(r"\)\s*>\s*(\d+)", rule["expr"]).group(1))
    assert lag > 128  # one attestation per 128-slot epoch
    (balance,) = [r for r in monitoring.alert_rules(variant()) if r["alert"] == "BalanceDecreasing"]
    window = re.search(r"\[([0-9hms]+)\]", balance["expr"]).group(1)
    assert _durations(window) >= 128 * 60


def test_pool_rules_follow_pool_config() -> None:
    def names(cfg) -> set[str]:
        return {r["alert"] for r in monitoring.alert_rules(cfg)}

    assert "PoolPaused" not in names(variant())  # testnet: paused on purpose
    assert {"PoolPaused", "ContractExporterStale", "ContractExporterFailing"} <= names(variant(expect_paused=False))
    assert names(variant(pool=False)) & {"PoolPaused", "ContractExporterStale", "ContractExporterFailing"} == set()
    assert "ContractExporterStale" in names(variant())


# -- names agree across scrape config, rules and dashboards ---------------------------------------------

def _all_exprs(cfg) -> list[tuple[str, str]]:
    out = [(f"rule {r['alert']}", r["expr"]) for r in monitoring.alert_rules(cfg)]
    for name, model in monitoring.dashboards(cfg).items():
        out += [(f"dashboard {name}", e) for e in monitoring.dashboard_queries(model)]
    return out


def test_metric_names_are_known() -> None:
    cfg = variant(expect_paused=False)
    known = monitoring.known_metrics()
    unknown = [(where, n) for where, e in _all_exprs(cfg) for n in metric_names(e) if n not in known]
    assert unknown == []


def test_metric_name_lexer() -> None:
    expr = ('sum by (pair) (rate(up{job="validator", x=~"a|b"}[5m] offset 1h)) - on (host) group_right '
            'max(foo_total) > 1e9 and bar unless count_values("v", baz)')
    assert metric_names(expr) == {"up", "foo_total", "bar", "baz"}
    assert job_selectors(expr) == {"validator"}


def test_job_names_agree() -> None:
    cfg = variant(expect_paused=False)
    scrape = {j["job_name"] for j in monitoring.scrape_jobs(cfg)}
    assert scrape == set(monitoring.JOBS)
    used = {(where, job) for where, e in _all_exprs(cfg) for job in job_selectors(e)}
    assert {(w, j) for w, j in used if j not in scrape} == set()
    # every client job is watched by at least one rule and one dashboard
    rule_jobs = {j for w, j in used if w.startswith("rule")}
    dash_jobs = {j for w, j in used if w.startswith("dashboard")}
    for job in ("node", "execution", "beacon", "validator", "contract_exporter"):
        assert job in rule_jobs and job in dash_jobs, job


# -- Grafana ------------------------------------------------------------------------------------------------

def test_grafana_files() -> None:
    files = {f.path: f.content for f in monitoring.monitoring_files(variant())}
    ini = files[monitoring.GRAFANA_INI]
    assert "protocol = https" in ini and f"http_port = {ports.GRAFANA}" in ini
    assert f"cert_file = {SECRET_FILES['grafana-tls-cert'].path}" in ini
    assert f"cert_key = {SECRET_FILES['grafana-tls-key'].path}" in ini
    assert f"admin_password = $__file{{{SECRET_FILES['grafana-admin-password'].path}}}" in ini
    ds = yaml.safe_load(files[f"{monitoring.GRAFANA_PROVISIONING}/datasources/quantapool.yml"])
    assert ds["datasources"][0]["url"] == f"http://127.0.0.1:{ports.PROMETHEUS}"
    prov = yaml.safe_load(files[f"{monitoring.GRAFANA_PROVISIONING}/dashboards/quantapool.yml"])
    assert prov["providers"][0]["options"]["path"] == monitoring.GRAFANA_DASHBOARDS_DIR
    # one file per dashboard where the file provider reads them (the monitoring-config bundle installs them)
    models = {path.rsplit("/", 1)[1]: json.loads(text) for path, text in files.items()
              if path.startswith(monitoring.GRAFANA_DASHBOARDS_DIR + "/")}
    assert set(models) == {"quantapool-validators.json", "quantapool-clients.json", "quantapool-hosts.json",
                           "quantapool-pool.json"}
    assert models == monitoring.dashboards(variant())
    uids = [m["uid"] for m in models.values()]
    assert len(set(uids)) == len(uids)
    for model in models.values():
        for panel in model["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == ds["datasources"][0]["uid"]


def test_pool_dashboard_only_with_contracts() -> None:
    assert "quantapool-pool.json" not in monitoring.dashboards(variant("mainnet"))


# -- user-data ----------------------------------------------------------------------------------------------

def _user_data(cfg) -> tuple[str, dict]:
    inputs = HostRenderInputs(config=cfg, host=cfg.monitoring_host(), deploy_public_key=DEPLOY_KEY,
                              volume_device="/dev/disk/by-id/scsi-0HC_Volume_4242")
    text = monitoring.render_monitoring_user_data(inputs)
    return text, yaml.safe_load(text)


def test_user_data_is_first_boot_only_and_carries_no_secret() -> None:
    text, doc = _user_data(variant(secrets=ALL_SECRETS))
    files = decoded_write_files(doc)
    assert doc["mounts"][0][1] == monitoring.DATA_MOUNT
    assert {"prometheus", "prometheus-alertmanager", "prometheus-node-exporter"} <= set(doc["packages"])
    # Grafana comes from runcmd (tests/monitoring/test_grafana_install.py), not cloud-init's apt module
    assert "apt" not in doc and not any(str(p).startswith("grafana") for p in doc["packages"])
    assert sorted(p for p in files if p.startswith("/usr/local/sbin/")) == [
        f"/usr/local/sbin/{s}" for s in ("qp-apply", "qp-install-grafana", "qp-install-secret", "qp-set-host-env",
                                         "qp-wait-ready")]
    # every file a config edit can change is in the monitoring-config bundle, none in user-data
    bundle = {f.path for f in monitoring.monitoring_bundle(variant(secrets=ALL_SECRETS)).files}
    assert not bundle & set(files)
    for path in (monitoring.PROMETHEUS_CONFIG, monitoring.RULES_FILE, monitoring.ALERTMANAGER_TEMPLATE,
                 monitoring.ALERTMANAGER_RENDER_SCRIPT, monitoring.GRAFANA_INI, monitoring.PROMETHEUS_DEFAULTS,
                 monitoring.ALERTMANAGER_DEFAULTS, monitoring.START_MONITORING_SCRIPT, monitoring.APPLY_SCRIPT):
        assert path in bundle, path
    assert "promtool" not in text and "prometheus.yml" not in text
    assert not re.search(r"https://discord(app)?\.com/api/webhooks/\d", text)


def test_bundle_carries_placeholders_not_secrets() -> None:
    from cloud_init.bundles import bundle_tar

    cfg = variant(secrets=ALL_SECRETS)
    files = {f.path: f.content for f in monitoring.monitoring_bundle(cfg).files}
    am = yaml.safe_load(files[monitoring.ALERTMANAGER_TEMPLATE])
    crit = next(r for r in am["receivers"] if r["name"] == "critical")
    assert crit["discord_configs"][0]["webhook_url"] == f"@@file:{SECRET_FILES['alertmanager-discord-webhook'].path}@@"
    assert crit["telegram_configs"][0]["bot_token"] == f"@@file:{SECRET_FILES['alertmanager-telegram-token'].path}@@"
    assert crit["pagerduty_configs"][0]["routing_key_file"] == SECRET_FILES["alertmanager-pagerduty-key"].path
    assert not re.search(rb"https://discord(app)?\.com/api/webhooks/\d", bundle_tar(monitoring.monitoring_bundle(cfg)))


def test_bundle_checks_staged_copies_and_reloads_on_any_change() -> None:
    b = monitoring.monitoring_bundle(variant())
    assert b.name == monitoring.BUNDLE_NAME == "monitoring-config"
    (check,) = b.checks
    assert check.command == f'python3 "$STAGED{monitoring.APPLY_SCRIPT}" check "$STAGED"'
    (action,) = b.on_change
    assert action.paths == ("/*",) and action.command.endswith(f'{monitoring.APPLY_SCRIPT}" reload')
    manifest = json.loads(next(f.content for f in b.files if f.path == monitoring.MANIFEST))
    assert set(manifest["files"]) == {f.path for f in b.files if f.path != monitoring.MANIFEST}


def test_firewall_opens_grafana_to_trusted_cidrs_only() -> None:
    cfg = variant("testnet")
    _, doc = _user_data(cfg)
    assert f"dport {ports.GRAFANA}" not in decoded_write_files(doc)["/etc/nftables.conf"], "first boot: SSH only"
    from cloud_init.nftables import firewall_bundle

    inputs = HostRenderInputs(config=cfg, host=cfg.monitoring_host(), deploy_public_key="", volume_device=None)
    nft = firewall_bundle(inputs).files[0].content
    grafana_rules = [ln.strip() for ln in nft.splitlines() if f"dport {ports.GRAFANA}" in ln]
    assert grafana_rules == [f"ip saddr {{ {', '.join(cfg.network.grafana_allowed_cidrs)} }} tcp dport 3000 accept"]
    for port in (ports.PROMETHEUS, ports.ALERTMANAGER, ports.CONTRACT_EXPORTER):
        assert f"dport {port}" not in nft


def _pairs(cfg, n: int):
    pairs = list(cfg.validator_pairs)[:1]
    for i in range(2, n + 1):
        base = pairs[0]
        pairs.append(base.model_copy(update={
            "name": f"p{i}",
            "primary": base.primary.model_copy(update={"private_ip": f"10.43.1.{40 + i}"}),
            "backup": base.backup.model_copy(update={"private_ip": f"10.43.1.{60 + i}"})}))
    return cfg.model_copy(update={"validator_pairs": tuple(pairs), "pool_contracts": variant().pool_contracts})


def test_user_data_does_not_grow_with_pairs() -> None:
    """Targets per pair live in the bundle: user-data is the same size for one pair and for eight."""
    cfg = variant("mainnet", secrets=ALL_SECRETS)
    one, eight = _pairs(cfg, 1), _pairs(cfg, 8)
    text_one, _ = _user_data(one)
    text_eight, _ = _user_data(eight)
    assert len(text_eight.encode()) < 16 * 1024
    assert len(text_eight.encode()) - len(text_one.encode()) < 200  # the firewall lists private IPs, at most
    assert len(_targets(eight, "validator")) == 16


def test_user_data_refuses_a_key_host() -> None:
    cfg = variant()
    inputs = HostRenderInputs(config=cfg, host=cfg.key_hosts()[0], deploy_public_key=DEPLOY_KEY, volume_device=None)
    with pytest.raises(ValueError, match="not the monitoring server"):
        monitoring.render_monitoring_user_data(inputs)


