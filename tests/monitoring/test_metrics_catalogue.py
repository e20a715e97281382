"""Rules, dashboards and lab stand-ins hold to the metric catalogue (cloud_init/monitoring/metrics_catalogue.yml).

Why: an alert on a metric the client does not export, or on a counter it declares but never increments
(qrysm's validator_*_rejected_total), can never fire and looks like protection. The stand-ins must export
the same names with the same semantics, or lab tests prove rules against a fake that the real client is not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloud_init import metrics_catalogue as mc
from cloud_init import monitoring
from lab.standins import validator as standin_validator

from .promql_names import metric_names
from .support import variant

REPO = Path(__file__).resolve().parents[2]


def _configs():
    full = variant(expect_paused=False)
    yield full.model_copy(update={"alerting": full.alerting.model_copy(update={"expected_active_keys": {"p1": 2}})})
    yield variant()
    yield variant("mainnet", pool=False)


def _delivered_dashboards(cfg) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """The dashboard JSON exactly as the monitoring-config bundle delivers it to Grafana's file provider."""
    prefix = monitoring.GRAFANA_DASHBOARDS_DIR + "/"
    return {f.path.removeprefix(prefix): json.loads(f.content) for f in monitoring.monitoring_bundle(cfg).files
            if f.path.startswith(prefix)}


def _uses() -> dict[str, set[str]]:
    uses: dict[str, set[str]] = {}
    for cfg in _configs():
        for doc in monitoring.alert_rule_files(cfg).values():
            for group in doc["groups"]:
                for rule in group["rules"]:
                    where = f"rule {rule.get('alert') or rule.get('record')}"
                    for name in metric_names(rule["expr"]):
                        uses.setdefault(name, set()).add(where)
        for file_name, model in _delivered_dashboards(cfg).items():
            for expr in monitoring.dashboard_queries(model):
                for name in metric_names(expr):
                    uses.setdefault(name, set()).add(f"dashboard {file_name}")
    return uses


def test_every_rule_and_panel_metric_is_catalogued_and_live() -> None:
    cat = mc.catalogue()
    uses = _uses()
    unknown = {n: sorted(w) for n, w in uses.items() if n not in cat}
    assert unknown == {}, f"add these to {mc.CATALOGUE_FILE.name} (with their source) or fix the query: {unknown}"
    dead = {n: sorted(w) for n, w in uses.items() if not cat[n].incremented}
    assert dead == {}, f"counters the client never increments: a rule or panel on them shows nothing: {dead}"


def test_every_delivered_panel_queries_catalogued_metrics() -> None:
    """Per panel, not per dashboard: every graph/stat/table panel of every delivered dashboard (built with
    grafana-foundation-sdk) has at least one query, and every metric of each query is in the catalogue."""
    cat = mc.catalogue()
    for cfg in _configs():
        models = _delivered_dashboards(cfg)
        assert models and set(models) == set(monitoring.dashboards(cfg))
        for file_name, model in models.items():
            panels = [p for p in model["panels"] if p["type"] != "row"]
            assert panels, file_name
            for panel in panels:
                exprs = [t["expr"] for t in panel.get("targets") or []]
                assert exprs, f"{file_name}: panel {panel['title']!r} has no query"
                names = {n for e in exprs for n in metric_names(e)}
                assert names, f"{file_name}: panel {panel['title']!r} queries no metric"
                missing = sorted(n for n in names if n not in cat or not cat[n].incremented)
                assert missing == [], f"{file_name}: panel {panel['title']!r}: {missing} not in the catalogue"
                assert panel["datasource"] == {"type": "prometheus", "uid": monitoring.GRAFANA_DATASOURCE_UID}


def test_panel_check_catches_an_uncatalogued_metric() -> None:
    from cloud_init.monitoring import grafana

    spec = {"uid": "x", "title": "x", "rows": [{"title": "r", "panels": [
        {"title": "p", "targets": [{"expr": "rate(made_up_total[5m])"}]}]}]}
    model = grafana.dashboard(spec)
    names = {n for e in monitoring.dashboard_queries(model) for n in metric_names(e)}
    assert names == {"made_up_total"} and "made_up_total" not in mc.catalogue()


def test_known_metrics_is_the_catalogue() -> None:
    assert monitoring.known_metrics() == mc.usable_metrics()
    assert "validator_attestations_rejected_total" not in monitoring.known_metrics()


def test_catalogue_entries_are_complete() -> None:
    jobs = set(monitoring.JOBS) | {"any", "none"}
    for name, e in mc.catalogue().items():
        assert e.job in jobs, (name, e.job)
        assert e.source and e.client, name
        if name.endswith("_total"):
            assert e.type == "counter", name


def test_exporter_entries_are_the_exporters_own_names() -> None:
    from exporter.metrics import METRIC_NAMES

    catalogued = {n for n, e in mc.catalogue().items() if e.job == monitoring.JOB_CONTRACT_EXPORTER}
    assert catalogued - METRIC_NAMES == set(), "catalogued exporter metrics missing from exporter/METRICS.md"


def test_dead_rule_is_caught() -> None:
    """The check above fails for the rule this catalogue was made to retire."""
    assert not mc.catalogue()["validator_attestations_rejected_total"].incremented
    assert "validator_attestations_rejected_total" in metric_names(
        'increase(validator_attestations_rejected_total{job="validator"}[15m]) > 0')
    assert "validator_attestations_rejected_total" not in mc.usable_metrics()


# -- stand-ins ---------------------------------------------------------------------------------------------

def _declared_names(module_file: Path) -> set[str]:
    text = module_file.read_text()
    names = set(re.findall(r'netio\.Metric\(\s*"([a-z_:][a-z0-9_:]*)"', text))
    if 'f"{self.client}_info"' in text:
        names |= {"gzond_info", "gqrl_info"}
    return names


@pytest.mark.parametrize("client,job", [("beacon", "beacon"), ("execution", "execution")])
def test_chain_standins_export_catalogued_names(client: str, job: str) -> None:
    exported = _declared_names(REPO / "lab" / "standins" / f"{client}.py")
    assert exported - mc.metrics_of_job(job) == set(), "stand-in exports names its client does not"
    used = {n for n in _uses() if mc.catalogue()[n].job == job}
    assert used - exported == set(), "a rule or panel uses a name the stand-in does not export"


def _exposition_names(body: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            out.setdefault(name.split(" ")[0], []).append(rest)
    return out


def test_standin_validator_exports_like_qrysm() -> None:
    keys = ["0x" + "aa" * 8, "0x" + "bb" * 8]
    m = standin_validator.Metrics(keys, per_key=True)
    assert _exposition_names(m.render().body) == {}  # before the beacon answers: nothing (qrysm: no series)
    m.beacon_reached()
    m.block_received()
    m.inc("validator_successful_attestations", keys[0])
    m.inc("validator_failed_attestations", keys[1])  # a slashing-protection refusal
    names = _exposition_names(m.render().body)
    assert set(names) <= mc.metrics_of_job("validator")
    assert set(names) >= {"validator_statuses", "validator_failed_attestations", "grpc_client_msg_received_total"}
    assert len(names["validator_statuses"]) == 2 and all('pubkey="0x' in x for x in names["validator_statuses"])
    assert len(names["validator_failed_attestations"]) == 1  # created at first increment, per key
    assert 'grpc_method="StreamBlocksAltair"' in names["grpc_client_msg_received_total"][0]
    assert not set(names) & {n for n, e in mc.catalogue().items() if not e.incremented}
    # --disable-account-metrics: no per-key series, the gRPC client metrics stay
    quiet = standin_validator.Metrics(keys, per_key=False)
    quiet.beacon_reached()
    quiet.block_received()
    assert set(_exposition_names(quiet.render().body)) == {"grpc_client_msg_received_total"}


def test_validator_unit_keeps_account_metrics() -> None:
    """Per-key series (validator_statuses etc.) need qrysm's account metrics: the unit must not disable them."""
    from cloud_init import HostRenderInputs, key_host

    cfg = variant()
    for host in cfg.key_hosts():
        args = key_host.validator_args(HostRenderInputs(cfg, host, "ssh-ed25519 AAAA test", None))
        assert args and not any("disable-account-metrics" in a for a in args), args
