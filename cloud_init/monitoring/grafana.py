"""Grafana: grafana.ini, provisioning, dashboards (grafana-foundation-sdk builders over dashboards/*.yml), install."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import yaml
from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dashboard_model

from cloud_init.monitoring.alertmanager import secret_paths
from cloud_init.monitoring.layout import (
    DASHBOARDS_SRC,
    GRAFANA_APT_KEY,
    GRAFANA_APT_KEY_FINGERPRINT,
    GRAFANA_APT_LIST,
    GRAFANA_APT_SOURCE,
    GRAFANA_DASHBOARDS_DIR,
    GRAFANA_DATASOURCE_UID,
    GRAFANA_PROVISIONING,
    LAB_NO_GRAFANA_MARKER,
    SCRAPE_INTERVAL,
    SECRET_NAME,
)
from cloud_init.render import render
from core import ports
from core.config import StackConfig


def grafana_install_script() -> str:
    """`qp-install-grafana VERSION` (see the script's header)."""
    return render(
        "qp-install-grafana.sh.j2",
        key_path=GRAFANA_APT_KEY, fingerprint=GRAFANA_APT_KEY_FINGERPRINT, list_path=GRAFANA_APT_LIST,
        source=GRAFANA_APT_SOURCE, lab_marker=LAB_NO_GRAFANA_MARKER)


def grafana_ini() -> str:
    """Replaces the package's grafana.ini (cloud-init installs with --force-confold, so ours is kept).

    No secret inside: the admin password is read by Grafana from its file ($__file{} expansion), TLS files are
    referenced by path. The admin password only applies when Grafana first creates its database.
    """
    paths = {key: secret_paths()[name] for key, name in SECRET_NAME.items()}
    return render("grafana.ini.j2", provisioning=GRAFANA_PROVISIONING, port=ports.GRAFANA,
                  tls_cert=paths["grafana_tls_cert"], tls_key=paths["grafana_tls_key"],
                  password_file=paths["grafana_password"])


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


def _datasource() -> dashboard_model.DataSourceRef:
    return dashboard_model.DataSourceRef(type_val="prometheus", uid=GRAFANA_DATASOURCE_UID)


def _panel(spec: dict[str, Any], panel_id: int, x: int, y: int) -> Any:
    """One panel, built with grafana-foundation-sdk's typed builder for its kind."""
    kind = spec.get("type", "timeseries")
    builder = {"stat": stat.Panel, "timeseries": timeseries.Panel, "table": table.Panel}[kind]()
    builder.id(panel_id).title(spec["title"]).datasource(_datasource()).unit(spec.get("unit", "short"))
    builder.grid_pos(dashboard_model.GridPos(x=x, y=y, w=_PANEL_W[kind], h=_PANEL_H[kind]))
    for i, t in enumerate(spec["targets"]):
        query = (prometheus.Dataquery().ref_id(chr(ord("A") + i)).datasource(_datasource()).expr(t["expr"])
                 .legend_format(t.get("legend", "__auto")))
        builder.with_target(query.range() if kind == "timeseries" else query.instant())
    if "description" in spec:
        builder.description(spec["description"])
    if "thresholds" in spec:
        builder.thresholds(sdk.ThresholdsConfig().mode(dashboard_model.ThresholdsMode.ABSOLUTE).steps(
            [dashboard_model.Threshold(value=v, color=c) for v, c in spec["thresholds"]]))
    return builder


def _variable(name: str, query: str) -> sdk.QueryVariable:
    return (sdk.QueryVariable(name).label(name).datasource(_datasource())
            .query({"query": query, "refId": f"var-{name}"}).include_all(True).multi(True).all_value(".*")
            .refresh(dashboard_model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(
                dashboard_model.VariableSort.ALPHABETICAL_ASC)
            .current(dashboard_model.VariableOption(selected=True, text=["All"], value=["$__all"])))


def dashboard(spec: dict[str, Any]) -> dict[str, Any]:
    """A Grafana dashboard model from a compact spec (title, uid, variables, rows of panels), built with
    grafana-foundation-sdk (Grafana's typed builders: the JSON is valid for Grafana by construction).

    The spec keeps what to show (rows, queries, units, thresholds) reviewable in YAML; layout is computed
    here, one row under the other, panels left to right, wrapping at Grafana's 24 columns.
    """
    board = (sdk.Dashboard(spec["title"]).uid(spec["uid"]).tags(["quantapool"]).timezone("utc")
             .refresh("30s").time(spec.get("from", "now-6h"), "now").version(1).readonly())
    for v in spec.get("variables", []):
        board.with_variable(_variable(v["name"], v["query"]))
    y = 0
    panel_id = 1
    for row in spec["rows"]:
        board.with_row(sdk.Row(row["title"]).id(panel_id).collapsed(False)
                       .grid_pos(dashboard_model.GridPos(x=0, y=y, w=24, h=1)))
        panel_id += 1
        y += 1
        x = 0
        row_h = 0
        for p in row["panels"]:
            kind = p.get("type", "timeseries")
            if x + _PANEL_W[kind] > 24:
                x, y, row_h = 0, y + row_h, 0
            board.with_panel(_panel(p, panel_id, x, y))
            panel_id += 1
            x += _PANEL_W[kind]
            row_h = max(row_h, _PANEL_H[kind])
        y += row_h
    model: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    return model


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


def _all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [q for p in panels for q in (p, *_all_panels(p.get("panels") or []))]


def dashboard_queries(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard (panels, panels inside rows, template variables)."""
    exprs = [t["expr"] for p in _all_panels(model["panels"]) for t in p.get("targets") or []]
    for var in model.get("templating", {}).get("list", []):
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.match(r"^label_values\((.*),\s*\w+\)$", query)
        exprs.append(m.group(1) if m else query)
    return exprs
