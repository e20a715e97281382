"""Metric definitions and the collectors that expose them on a private registry.

Pool gauges live in a :class:`GaugeStore` rather than ``prometheus_client.Gauge`` objects because a
plain Gauge is exposed as 0 from creation: for a pool that is exactly the invented value this
exporter must never show. A series here exists only once a real value was read, and keeps its last
good value when a later read fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.views import ADDRESS_LABEL, VIEWS, Kind


@dataclass(frozen=True)
class GaugeDef:
    name: str
    help: str
    labels: tuple[str, ...] = ()


_UNIT_HELP = {
    Kind.QRL: "in QRL (18-decimal amount / 1e18)",
    Kind.UNITS: "in whole units (18-decimal amount / 1e18)",
    Kind.RATIO: "as a ratio (1e18-scaled value / 1e18)",
    Kind.COUNT: "as a plain number",
    Kind.BOOL: "1 if true, 0 if false",
    Kind.ADDRESS: "always 1; the address is in a label",
}

HEALTH_GAUGES: tuple[GaugeDef, ...] = (
    GaugeDef("quantapool_exporter_up", "1 if the last collection cycle fully succeeded, else 0."),
    GaugeDef(
        "quantapool_exporter_last_success_timestamp_seconds",
        "Unix time of the last fully successful cycle; 0 if none since the exporter started.",
    ),
    GaugeDef(
        "quantapool_exporter_call_success",
        "1 if this read succeeded in the last cycle, 0 if it failed (its gauges keep their last good value).",
        ("contract", "call"),
    ),
    GaugeDef("quantapool_exporter_last_cycle_duration_seconds", "Wall time the last collection cycle took."),
    GaugeDef(
        "quantapool_exporter_event_scan_success",
        "1 if the last cycle read every log range it planned, else 0 (the cursor did not pass a failed range).",
    ),
    GaugeDef(
        "quantapool_exporter_event_cursor_block",
        "Highest block whose logs have been read completely and counted.",
    ),
    GaugeDef(
        "quantapool_exporter_rpc_endpoint_up",
        "1 if this RPC endpoint answered its last head probe, 0 if it failed; absent until first probed.",
        ("endpoint",),
    ),
    GaugeDef(
        "quantapool_exporter_rpc_endpoint_head",
        "Head block number this RPC endpoint reported at its last successful probe.",
        ("endpoint",),
    ),
    GaugeDef(
        "quantapool_exporter_rpc_endpoint_active",
        "1 for the RPC endpoint the last cycle read from, 0 for the others.",
        ("endpoint",),
    ),
)

CHAIN_GAUGES: tuple[GaugeDef, ...] = (
    GaugeDef("quantapool_chain_block_height", "Latest block number reported by the execution client."),
    GaugeDef(
        "quantapool_chain_head_age_seconds",
        "Seconds since the exporter first read the highest head it has seen (grows while no endpoint's head "
        "advances).",
    ),
    GaugeDef(
        "quantapool_pool_balance_qrl",
        "Native balance of the deposit pool contract in QRL, a cross-check of its accounting.",
    ),
    GaugeDef(
        "quantapool_stqrl_deposit_pool_matches",
        "1 if stQRL's depositPool() equals the configured deposit_pool address, else 0.",
    ),
)


def _view_gauges() -> tuple[GaugeDef, ...]:
    defs: dict[str, GaugeDef] = {}
    for view in VIEWS:
        for out in view.outputs:
            labels = tuple(k for k, _ in out.labels)
            if out.kind is Kind.ADDRESS:
                labels = tuple(dict.fromkeys((*labels, ADDRESS_LABEL[out.metric])))
            source = f"{view.function}().{out.field}" if out.field else f"{view.function}()"
            help_text = f"{source} of the {view.contract} contract, {_UNIT_HELP[out.kind]}."
            if out.metric in defs:
                prev = defs[out.metric]
                if prev.labels != labels:
                    raise ValueError(f"{out.metric}: views disagree on labels")
                help_text = f"Per-contract {view.function}(), {_UNIT_HELP[out.kind]}."
            defs[out.metric] = GaugeDef(out.metric, help_text, labels)
    return tuple(defs.values())


VIEW_GAUGES = _view_gauges()
ALL_GAUGES: tuple[GaugeDef, ...] = HEALTH_GAUGES + CHAIN_GAUGES + VIEW_GAUGES

RPC_ERRORS = "quantapool_exporter_rpc_errors_total"
RPC_LATENCY = "quantapool_exporter_rpc_latency_seconds"
EVENTS_TOTAL = "quantapool_events_total"
LOG_SHAPE_MISMATCH = "quantapool_exporter_log_shape_mismatch_total"
HEAD_REGRESSIONS = "quantapool_chain_head_regressions_total"

# Names as written in PromQL: counters with their _total suffix, histograms without
# _bucket/_sum/_count. Alert rules and dashboards can be cross-checked against this set.
METRIC_NAMES: frozenset[str] = frozenset(
    {g.name for g in ALL_GAUGES} | {RPC_ERRORS, RPC_LATENCY, EVENTS_TOTAL, LOG_SHAPE_MISMATCH, HEAD_REGRESSIONS}
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GaugeStore(Collector):
    """Gauges that exist only once set; thread-safe (the cycle writes while HTTP scrapes read)."""

    def __init__(self, defs: Iterable[GaugeDef]) -> None:
        self._defs = {d.name: d for d in defs}
        self._values: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in self._defs}
        self._lock = threading.Lock()

    def _key(self, name: str, labels: Mapping[str, str]) -> tuple[str, ...]:
        definition = self._defs[name]
        if set(labels) != set(definition.labels):
            raise ValueError(f"{name}: labels {sorted(labels)} != {sorted(definition.labels)}")
        return tuple(labels[k] for k in definition.labels)

    def set(self, name: str, value: float, **labels: str) -> None:
        key = self._key(name, labels)
        with self._lock:
            self._values[name][key] = float(value)

    def set_exclusive(self, name: str, value: float, match: Mapping[str, str], **labels: str) -> None:
        """Set one series and drop others of ``name`` that agree on ``match`` (for info-style metrics).

        Done under one lock so a scrape never sees the metric without its series.
        """
        key = self._key(name, labels)
        names = self._defs[name].labels
        with self._lock:
            series = self._values[name]
            for old in list(series):
                row = dict(zip(names, old, strict=True))
                if all(row[k] == v for k, v in match.items()):
                    del series[old]
            series[key] = float(value)

    def get(self, name: str, **labels: str) -> float | None:
        definition = self._defs[name]
        with self._lock:
            return self._values[name].get(tuple(labels[k] for k in definition.labels))

    def describe(self) -> Iterable[Metric]:
        for definition in self._defs.values():
            yield GaugeMetricFamily(definition.name, definition.help, labels=list(definition.labels))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snapshot = {name: dict(series) for name, series in self._values.items() if series}
        for name, series in snapshot.items():
            definition = self._defs[name]
            family = GaugeMetricFamily(name, definition.help, labels=list(definition.labels))
            for key, value in sorted(series.items()):
                family.add_metric(list(key), value)
            yield family


class CounterView(Collector):
    """Exposes counters whose totals are owned elsewhere (the persisted event state)."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...], source: Callable[[], Mapping]) -> None:
        self._name = name
        self._help = help_text
        self._labels = labels
        self._source = source

    def describe(self) -> Iterable[Metric]:
        yield CounterMetricFamily(self._name, self._help, labels=list(self._labels))

    def collect(self) -> Iterable[Metric]:
        totals = self._source()
        family = CounterMetricFamily(self._name, self._help, labels=list(self._labels))
        for key, value in sorted(totals.items()):
            family.add_metric(list(key), value)
        yield family


class ExporterMetrics:
    """All of the exporter's metrics on one private registry (never the global default one)."""

    def __init__(
        self,
        event_totals: Callable[[], Mapping[tuple[str, str], int]],
        shape_mismatches: Callable[[], Mapping[tuple[str, str], int]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.gauges = GaugeStore(ALL_GAUGES)
        self.registry.register(self.gauges)
        self.rpc_errors = Counter(
            RPC_ERRORS,
            "Failed JSON-RPC attempts (transport errors, timeouts, JSON-RPC errors, malformed answers).",
            ["method"],
            registry=self.registry,
        )
        self.rpc_latency = Histogram(
            RPC_LATENCY,
            "Duration of each JSON-RPC attempt, successful or not.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.head_regressions = Counter(
            HEAD_REGRESSIONS,
            "Cycles whose best available head was lower than the highest head already read (reads skipped).",
            registry=self.registry,
        )
        self.registry.register(
            CounterView(
                EVENTS_TOTAL,
                "Pool contract events counted from logs (persisted across restarts).",
                ("contract", "event"),
                event_totals,
            )
        )
        self.registry.register(
            CounterView(
                LOG_SHAPE_MISMATCH,
                "Logs whose topic count does not match the event ABI (still counted; check the ABI).",
                ("contract", "event"),
                shape_mismatches,
            )
        )
        # Before the first success there is no success time: 0 makes "time() - x > bound" fire.
        self.gauges.set("quantapool_exporter_up", 0)
        self.gauges.set("quantapool_exporter_last_success_timestamp_seconds", 0)

    def observe_rpc(self, method: str, seconds: float, ok: bool) -> None:
        """RpcClient observer: one latency sample per attempt, one error per failed attempt."""
        self.rpc_latency.labels(method=method).observe(seconds)
        if not ok:
            self.rpc_errors.labels(method=method).inc()
