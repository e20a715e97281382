"""The metric catalogue (cloud_init/monitoring/metrics_catalogue.yml): every metric a rule or panel may use.

Why a data file: a rule on a counter the client declares but never increments is a dead rule that looks like
protection (qrysm's validator_*_rejected_total). The catalogue records, per metric, the client and source
file that exports it, whether a counter is ever incremented, its labels and when it updates; the tests hold
rules, dashboards and the lab stand-ins to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

CATALOGUE_FILE = Path(__file__).resolve().parent / "monitoring" / "metrics_catalogue.yml"


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    job: str
    client: str
    source: str
    type: str
    labels: tuple[str, ...]
    #: counters: whether the client ever increments it (False = declared only: never use it)
    incremented: bool = True


@cache
def catalogue() -> dict[str, CatalogueEntry]:
    doc = yaml.safe_load(CATALOGUE_FILE.read_text())
    out = {}
    for name, e in doc["metrics"].items():
        if e["type"] not in ("counter", "gauge"):
            raise ValueError(f"{CATALOGUE_FILE.name}: {name}: type must be counter or gauge")
        if e["type"] == "counter" and "incremented" not in e:
            raise ValueError(f"{CATALOGUE_FILE.name}: {name}: a counter must say whether it is incremented")
        out[name] = CatalogueEntry(name=name, job=e["job"], client=e["client"], source=e["source"], type=e["type"],
                                   labels=tuple(e.get("labels") or ()), incremented=e.get("incremented", True))
    return out


def usable_metrics() -> frozenset[str]:
    """Names a rule or panel may use: catalogued and, for counters, really incremented by the client."""
    return frozenset(n for n, e in catalogue().items() if e.incremented)


def metrics_of_job(job: str) -> frozenset[str]:
    """Usable names a scrape job exports (what a lab stand-in of that client must export)."""
    return frozenset(n for n, e in catalogue().items() if e.job == job and e.incremented)
