"""The thin runtime around :class:`~exporter.collector.Exporter`: HTTP endpoint and interval loop."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import start_http_server

from exporter.collector import Exporter

log = logging.getLogger(__name__)


def serve_metrics(exporter: Exporter, address: str, port: int) -> Any:
    """Start the /metrics HTTP server in a daemon thread; returns the server (``.shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=address, registry=exporter.registry)
    return server


def run_loop(exporter: Exporter, interval: float, stop: threading.Event, max_cycles: int | None = None) -> int:
    """Collect every ``interval`` seconds until ``stop`` is set (or ``max_cycles`` ran); returns cycles run.

    Cycles start on a fixed schedule; a cycle that overran its slot is followed immediately by the
    next one rather than by a burst of catch-up cycles.
    """
    cycles = 0
    next_start = time.monotonic()
    while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
        try:
            exporter.collect_once()
        except Exception:  # a bug must not kill the exporter: health metrics then show it stale
            log.exception("collection cycle crashed")
            exporter.metrics.gauges.set("quantapool_exporter_up", 0)
        cycles += 1
        next_start = max(next_start + interval, time.monotonic())
        stop.wait(max(0.0, next_start - time.monotonic()))
    return cycles
