"""Grafana: grafana.ini, provisioning, dashboards built from dashboards/, and its install script."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import yaml

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
