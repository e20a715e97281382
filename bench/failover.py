"""Benchmark `qpool failover` in the lab: clean path and fenced path, to the new signer's first duty.

Run as root: ``/opt/qp-venv/bin/python bench/failover.py``. Brings up a lab (stack ``fmbench`` on
10.42.34.0/24, temp state root, always torn down), activates the primary, then measures:

* clean path (primary reachable): from the start of the failover command to the backup's first signed
  duty (the `ts` of its first new signing-log record; lab hosts share the operator's kernel clock), plus
  the command's own duration. Goal: <= 60 s.
* fenced path (the signer's network cut, so it is fenced through the fake Hetzner API and the newest
  replicated backup is used): the same two figures with the epoch-gate wait subtracted (the gate is a
  deliberate wait of up to three epochs, 2 h 8 min each on Zond; it is not overhead).

The lab chain clock (default 1 s slots, 4-slot epochs) makes the next duty come quickly, so "first signed
duty" measures the failover, not the duty schedule; with real 60 s slots add up to one epoch per key.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.deploy import LabClock
from lab.hosts import LabHost
from lab.testing import operator_context, running_lab
from qpool import operations as ops
from qpool.operations import Context
from tests.failover import detector

PAIR = "p1"


def wait_first_signature(host: LabHost, after: int, timeout: float = 600) -> float:
    """Wall-clock time (the signing log's own `ts`) of `host`'s first signature past `after` records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = detector.read_signing_log(host)
        if len(records) > after:
            return dt.datetime.fromisoformat(records[after].ts.replace("Z", "+00:00")).timestamp()
        time.sleep(0.1)
    raise SystemExit(f"{host.name} did not sign within {timeout:.0f}s")


class GateMeter:
    """Counts only the sleeps the epoch gate makes (fencing polls sleep too, and those are overhead)."""

    def __init__(self) -> None:
        self.gate_seconds = 0.0
        self._in_gate = False

    def report(self, msg: str) -> None:
        print(f"    | {msg}", flush=True)
        self._in_gate = msg.startswith("[5/7] epoch gate: waiting")

    def sleep(self, seconds: float) -> None:
        start = time.monotonic()
        time.sleep(seconds)
        if self._in_gate:
            self.gate_seconds += time.monotonic() - start
            self._in_gate = False


def timed_failover(ctx: Context, meter: GateMeter, target: LabHost, to_role: str) -> tuple[float, float]:
    before = len(detector.read_signing_log(target))
    t0 = time.time()  # wall clock: compared with the signing log's timestamps (same kernel clock in the lab)
    result = ops.failover(ctx, PAIR, to_role=to_role)
    t_cmd = time.time()
    t_sign = wait_first_signature(target, before)
    print(f"    result: {result}")
    return t_cmd - t0 - meter.gate_seconds, t_sign - t0 - meter.gate_seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slot-seconds", type=float, default=1.0)
    ap.add_argument("--slots-per-epoch", type=int, default=4)
    args = ap.parse_args()
    clock = LabClock(slot_seconds=args.slot_seconds, slots_per_epoch=args.slots_per_epoch)
    root = Path(tempfile.mkdtemp(prefix="fm-bench-"))
    try:
        t0 = time.monotonic()
        with running_lab("fmbench", 34, root, clock=clock, log=lambda _m: None) as (dep, session):
            print(f"lab up in {time.monotonic() - t0:.1f} s (chain: {clock.slot_seconds:g} s slots, "
                  f"{clock.slots_per_epoch} slots/epoch)")
            setup = operator_context(session)
            hosts = {h.role: dep.hosts[h.name] for h in setup.inventory.pair_hosts(PAIR)}
            ops.activate(setup, PAIR, first_start=True)
            wait_first_signature(hosts["primary"], 0)

            print("clean path (primary reachable):")
            meter = GateMeter()
            ctx = operator_context(session, report=meter.report, sleep=meter.sleep)
            clean_cmd, clean_sign = timed_failover(ctx, meter, hosts["backup"], "backup")

            print("fenced path (backup's network cut; fenced through the API):")
            hosts["backup"].exec(["systemctl", "start", "qp-slashing-backup.service"], timeout=120)
            hosts["backup"].cut_network()
            meter = GateMeter()
            ctx = operator_context(session, report=meter.report, sleep=meter.sleep)
            fenced_cmd, fenced_sign = timed_failover(ctx, meter, hosts["primary"], "primary")
            gate = meter.gate_seconds
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"clean  : command {clean_cmd:6.1f} s, to first signed duty {clean_sign:6.1f} s "
          f"(goal <= 60 s: {'met' if clean_sign <= 60 else 'MISSED'})")
    print(f"fenced : command {fenced_cmd:6.1f} s, to first signed duty {fenced_sign:6.1f} s "
          f"(excluding the epoch-gate wait of {gate:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
