"""QuantaPool contract exporter: the pool's on-chain state as Prometheus metrics.

Runs on the monitoring server as its own service (see ``exporter/requirements.txt``); the
collection cycle is synchronous (:meth:`exporter.collector.Exporter.collect_once`) so tests and
operators can drive it without the HTTP server or the loop.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
