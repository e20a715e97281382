"""``python -m exporter --config PATH``: validate config, serve metrics, collect forever.

Exit codes: 0 on SIGTERM/SIGINT, 2 on bad config or arguments, 1 if the listen socket cannot be
bound. An unreachable RPC endpoint is not fatal: the exporter keeps serving health metrics and
retries every interval.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from exporter.collector import Exporter
from exporter.config import ConfigError, load_config
from exporter.server import run_loop, serve_metrics

log = logging.getLogger("exporter")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m exporter", description="QuantaPool contract exporter")
    parser.add_argument("--config", required=True, type=Path, help="YAML config file")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    if args.check_config:
        print(f"config {args.config}: ok")
        return 0

    try:
        exporter = Exporter(config)
    except OSError as exc:
        print(f"state_dir {config.state_dir}: cannot use it ({exc}); fix its path or permissions", file=sys.stderr)
        return 2
    try:
        server = serve_metrics(exporter, config.listen_address, config.listen_port)
    except OSError as exc:
        print(
            f"listen {config.listen_address}:{config.listen_port}: cannot bind ({exc.strerror}); "
            "free the port or change listen_port",
            file=sys.stderr,
        )
        return 1
    log.info(
        "serving metrics on %s:%d, profile %s, RPC %s",
        config.listen_address, server.server_port, config.profile, ", ".join(config.endpoints),
    )

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        run_loop(exporter, config.interval_seconds, stop)
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
