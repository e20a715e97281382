"""Fault -> notification latency of the two slashing-relevant pages, with production timing.

Runs the real Prometheus and Alertmanager (Debian binaries) with the rendered configuration: production scrape
and evaluation intervals (15 s), rule `for` durations and route group_wait; only the target addresses are
local stand-ins and the receivers a local webhook sink. Measures, per run:
- validator-down: stop the active validator's metrics endpoint -> ValidatorDownOnActiveHost at the sink;
- two-signers: start the standby's validator endpoint -> ValidatorRunningOnTwoHosts at the sink;
- slashing-refusal: the active validator's validator_failed_attestations series appears at 1 (what qrysm does
  on its first slashing-protection refusal) -> SlashingProtectionRejected at the sink;
- no-keys: the active validator keeps running but drops every per-key series and its block stream (qrysm
  started without keys) -> ValidatorKeysNotActive at the sink (expected keys: 1 per pair).
Goals: <= 90 s, <= 60 s, <= 120 s, <= 600 s. Prints figures; asserts nothing.

    /opt/qp-venv/bin/python bench/alert_latency.py [--runs N] [--stack testnet]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qpool.stacks import load_stack  # noqa: E402
from tests.monitoring.mon_stack import MonitoringStack, active_and_standby  # noqa: E402

GOALS = {"validator-down": 90.0, "two-signers": 60.0, "slashing-refusal": 120.0, "no-keys": 600.0}
TIMEOUT = 720.0


def measure(stack: MonitoringStack, kind: str) -> float | None:
    active, standby = active_and_standby(stack.cfg)
    if kind == "validator-down":
        endpoint, alert, match = stack.standins.validator(active.name), "ValidatorDownOnActiveHost", {
            "host": active.name}
        fault, repair = endpoint.stop, endpoint.start
    elif kind == "two-signers":
        endpoint, alert, match = stack.standins.validator(standby.name), "ValidatorRunningOnTwoHosts", {
            "pair": active.pair or ""}
        fault, repair = endpoint.start, endpoint.stop
    elif kind == "slashing-refusal":
        state = stack.standins.hosts[active.name]
        alert, match = "SlashingProtectionRejected", {"host": active.name}

        def fault() -> None:
            state.failed_attestations += 1

        def repair() -> None:  # a restarted validator starts without the series, as qrysm
            state.failed_attestations = 0
    else:
        state = stack.standins.hosts[active.name]
        alert, match = "ValidatorKeysNotActive", {"host": active.name}

        def fault() -> None:
            state.keys_loaded = False

        def repair() -> None:
            state.keys_loaded = True
    # a random phase against the 15 s scrape/evaluation ticks, so runs sample the whole latency range
    time.sleep(random.uniform(0, 15))
    t0 = time.time()
    fault()
    try:
        got = stack.sink.wait_for(alert, timeout=TIMEOUT, since=t0, **match)
    finally:
        repair()
    if got is None:
        return None
    latency = got[0].received - t0
    # Let the alert resolve and Alertmanager flush its group before the next fault: a group that still exists
    # sends a new alert after group_interval instead of group_wait, which would skew the next run.
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not stack.sink.alerts(alert, status="resolved", since=t0):
        time.sleep(1)
    time.sleep(5)
    return latency


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--stack", default="testnet")
    ap.add_argument("--only", action="append", choices=sorted(GOALS), help="measure only these faults")
    args = ap.parse_args(argv)
    cfg = load_stack(args.stack).config
    cfg = cfg.model_copy(update={
        "secrets_present": frozenset({"discordWebhookUrl", "pagerdutyRoutingKey", "heartbeatWebhookUrl"}),
        "alerting": cfg.alerting.model_copy(update={"expected_active_keys": {p.name: 1 for p in cfg.validator_pairs}})})
    results: dict[str, list[float | None]] = {k: [] for k in (args.only or GOALS)}
    with tempfile.TemporaryDirectory(prefix="alert-latency-") as tmp, \
            MonitoringStack(cfg, Path(tmp), fast=False) as stack:
        print(f"prometheus :{stack.prom_port}  alertmanager :{stack.am_port}  (production intervals)", flush=True)
        if not stack.wait_until('up{job="validator"}', lambda r: len(r) >= 2, timeout=60):
            print("validator targets never scraped", file=sys.stderr)
            return 1
        time.sleep(20)  # a few evaluations of steady state
        for i in range(args.runs):
            for kind in results:
                latency = measure(stack, kind)
                results[kind].append(latency)
                shown = "no notification" if latency is None else f"{latency:.1f} s"
                print(f"run {i + 1} {kind:15s} {shown}", flush=True)
    print()
    print(f"{'fault':15s} {'runs':>4s} {'min':>7s} {'median':>7s} {'max':>7s} {'goal':>6s}")
    for kind, values in results.items():
        got = [v for v in values if v is not None]
        if not got:
            print(f"{kind:15s} {len(values):4d} {'-':>7s} {'-':>7s} {'-':>7s} {GOALS[kind]:5.0f}s  (no notification)")
            continue
        print(f"{kind:15s} {len(values):4d} {min(got):6.1f}s {statistics.median(got):6.1f}s {max(got):6.1f}s "
              f"{GOALS[kind]:5.0f}s{'' if len(got) == len(values) else '  (some runs timed out)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
