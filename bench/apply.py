"""Benchmark `qpool lab apply` on a 1-pair lab (issue 11): seconds for a no-op apply and for a trusted-address
edit, and whether any signing duty was missed during a client-pin apply.

Run as root, under the shared lab lock: ``flock /tmp/qp-lab.lock .venv/bin/python bench/apply.py``. It deploys
the testnet stack (one pair + monitoring) as stack ``benchapply`` on 10.42.<octet>.0/24 (default 36) under a
temporary state root, always torn down, and prints one line per figure:

- no-op apply: the program run, the diff and nothing else (it must run no step);
- trusted-address edit (`network.sshAllowedCidrs[0]` replaced): whatever steps the program delivers that
  change through (with the host configuration bundles: the firewall bundle and its confirm step per host);
- client-pin apply (only when the program has the `clients` bundle and the lab can build a second stand-in
  release): the primary signs first (`qpool activate --first-start`), then every client pin moves to the
  mirror's second build; the stand-in validator attests once per key per epoch, so every epoch that began
  after the apply started and ended before the check must hold one attestation per key in the active host's
  signing log. Missed duties are counted and listed.

Figures depend on the machine and on what else runs on it (2 shared cores here): report them with the load
average this prints.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.apply import apply
from lab.deploy import LabClock
from lab.testing import config_variant, operator_context, running_lab

STACK = "benchapply"
CLOCK = LabClock(slot_seconds=2.0, slots_per_epoch=4)
NEW_ADDRESS = "198.51.100.9/32"
RELEASE = "lab2"


def timed_apply(dep: Any, session: Any, config: Path) -> tuple[float, int, str]:
    lines: list[str] = []
    started = time.monotonic()
    result = apply(dep, config, log=lines.append, session=session)
    return time.monotonic() - started, len(result.ran), result.plan.summary


def has_clients_bundle(dep: Any) -> bool:
    return any(r.name.endswith("-bundle-clients") for r in dep.run.resources)


def missed_duties(dep: Any, host: str, since: float, until: float) -> tuple[int, int, list[str]]:
    """(duties expected, duties missed, what was missed) for epochs wholly inside [since, until]."""
    from tests.failover import detector

    clock = dep.clock
    epoch_seconds = clock.slot_seconds * clock.slots_per_epoch
    first = int((since - clock.genesis_time) // epoch_seconds) + 1
    last = int((until - clock.genesis_time) // epoch_seconds) - 1
    records = detector.read_signing_log(dep.hosts[host])
    keys = sorted({r.pubkey for r in records})
    signed = {(r.pubkey, r.target_epoch) for r in records}
    missing = [f"{k[:12]}.. epoch {e}" for e in range(first, last + 1) for k in keys if (k, e) not in signed]
    return len(keys) * max(0, last - first + 1), len(missing), missing


def pin_apply(dep: Any, session: Any, root: Path, octet: int) -> None:
    from lab.standins.build import build_release  # the `clients` helper's second build
    from qpool import operations as ops

    ctx = operator_context(session)
    pair = dep.config.validator_pairs[0].name
    primary = next(s.name for s in dep.config.hosts() if s.pair == pair and s.role == "primary")
    ops.activate(ctx, pair, first_start=True)
    deadline = time.monotonic() + 300
    from tests.failover import detector

    while not detector.read_signing_log(dep.hosts[primary]):
        if time.monotonic() > deadline:
            raise SystemExit("the primary did not sign within 300 s of activate")
        time.sleep(1)
    build_release(dep.state_dir / "mirror", RELEASE)

    def bump(config: dict[str, Any]) -> None:
        config["quantapool:network"]["sshAllowedCidrs"][0] = NEW_ADDRESS
        for role in ("execution", "beacon", "validator"):
            config["quantapool:clients"][role]["version"] = RELEASE

    config = config_variant(root / "pins.yaml", octet, mutate=bump)
    since = time.time()
    seconds, ran, summary = timed_apply(dep, session, config)
    until_apply = time.time()
    time.sleep(3 * CLOCK.slot_seconds * CLOCK.slots_per_epoch)  # let the epochs around the apply end
    expected, missed, what = missed_duties(dep, primary, since, time.time())
    print(f"client-pin apply:       {seconds:6.1f} s, {ran} steps ({summary}); signing duties in the "
          f"{until_apply - since:.0f} s apply window + 3 epochs: {expected} expected, {missed} missed"
          + (f" ({', '.join(what[:6])})" if what else ""), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--octet", type=int, default=36, help="subnet 10.42.<octet>.0/24 (default 36)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/apply.py needs root (it deploys a lab)", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    root = Path(tempfile.mkdtemp(prefix="qp-bench-apply-"))
    try:
        started = time.monotonic()
        with running_lab(STACK, args.octet, root, clock=CLOCK, log=lambda _m: None) as (dep, session):
            print(f"lab up (1 pair + monitoring): {time.monotonic() - started:6.1f} s", flush=True)
            seconds, ran, summary = timed_apply(dep, session, dep.config_source)
            print(f"no-op apply:            {seconds:6.1f} s, {ran} steps ({summary})", flush=True)

            def edit(config: dict[str, Any]) -> None:
                config["quantapool:network"]["sshAllowedCidrs"][0] = NEW_ADDRESS

            seconds, ran, summary = timed_apply(dep, session, config_variant(root / "ssh.yaml", args.octet,
                                                                             mutate=edit))
            print(f"trusted-address edit:   {seconds:6.1f} s, {ran} steps ({summary})", flush=True)
            try:
                import lab.standins.build as standins_build
                can_pin = has_clients_bundle(dep) and hasattr(standins_build, "build_release")
            except ImportError:
                can_pin = False
            if can_pin:
                pin_apply(dep, session, root, args.octet)
            else:
                print("client-pin apply:       not measured (the program has no `clients` bundle yet, so a pin "
                      "bump changes nothing on a running host)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
