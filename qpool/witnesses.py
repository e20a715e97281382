"""Is a fenced source really off? Independent witnesses, never one reading taken on trust.

Why: issue 12 tried a Hetzner API that wrongly reported the source "off" while the source was only cut off
from the operator: the backup started, both hosts signed the same epoch. The operator's SSH failing is no
evidence either (that is why the source is being fenced). So before a fenced failover starts the target
(at step 3 and again, fresh, at step 6) qpool asks witnesses that do not share a failure:

- ``hetzner``: the API reports ``off`` now, after a hard power-off this run sent (qpool.fencing always sends
  it, also when the API already said off). Fresh read at every check.
- ``target-probe``: the TARGET connects to the source's private address (SSH and the validator's metrics
  port), several rounds (``qp-validator-ctl probe-peer``). Any TCP answer (accepted or refused) proves a
  running kernel at that address: ``alive``. Every connect unanswered: ``off``.
- ``prometheus``: the monitoring host's Prometheus (read over SSH, as every host is reached) holds the raw
  ``up`` samples of the source's validator. A successful scrape certainly AFTER the fence: ``alive``. Failed
  scrapes after the fence and the last success certainly before it: ``off``. Otherwise (no monitoring host,
  no samples, too close to the fence to tell): ``unknown``.
- ``operator-ssh``: the operator's own SSH (several probes). An answer is ``alive``; failure is shown but
  never counted as ``off``.

ACCEPTED (the only combinations): ``hetzner`` is ``off`` AND at least one of ``target-probe`` /
``prometheus`` is ``off`` AND no witness is ``alive``. Everything else refuses, naming each witness and the
recovery. There is no override: ``--i-accept-slashing-risk`` does not reach this check.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from core import ports
from qpool.errors import QpoolError
from qpool.inventory import HostRecord

if TYPE_CHECKING:
    from qpool.context import Context

OFF, ALIVE, UNKNOWN = "off", "alive", "unknown"
#: The two network witnesses; at least one must confirm "off" (next to Hetzner).
NETWORK = ("target-probe", "prometheus")
#: Ports the target probes on the source's private address: SSH answers on any running host (the key hosts
#: accept SSH from the private subnet), the metrics port while a validator runs.
PROBE_PORTS = (ports.SSH, ports.VALIDATOR_METRICS)
PROBE_TIMEOUT = 3.0
PROBE_ROUNDS = 3
#: Prometheus samples read back: the time since the fence plus this much (capped), so the last success
#: before the fence is in the window.
PROM_MARGIN = 15 * 60.0
PROM_MAX_WINDOW = 3 * 24 * 3600.0


@dataclass(frozen=True)
class Witness:
    name: str
    verdict: str  # OFF | ALIVE | UNKNOWN
    detail: str

    def line(self) -> str:
        return f"{self.name}: {self.verdict.upper()} ({self.detail})"


def decide(found: list[Witness]) -> tuple[bool, str]:
    """The acceptance rule of the module docstring: (accepted, why)."""
    by = {w.name: w for w in found}
    alive = [w for w in found if w.verdict == ALIVE]
    if alive:
        return False, "seen alive by " + ", ".join(w.name for w in alive)
    if by.get("hetzner") is None or by["hetzner"].verdict != OFF:
        return False, "the Hetzner API does not confirm it off after a power-off"
    confirming = [n for n in NETWORK if by.get(n) is not None and by[n].verdict == OFF]
    if not confirming:
        return False, ("no independent witness confirms the Hetzner reading (one witness is never proof): "
                       "neither the target's private-network probe nor Prometheus")
    return True, "hetzner + " + " + ".join(confirming)


def target_probe(ctx: Context, target: HostRecord, source: HostRecord) -> Witness:
    """The target's own TCP connects to the source's private address (qp-validator-ctl probe-peer)."""
    args = ["probe-peer", source.private_ip, "--timeout", str(PROBE_TIMEOUT), "--rounds", str(PROBE_ROUNDS)]
    for port in PROBE_PORTS:
        args += ["--port", str(port)]
    try:
        res = ctx.ssh.ctl(target, *args, timeout=60)
    except QpoolError as exc:
        return Witness("target-probe", UNKNOWN, f"{target.name} could not probe: {exc}")
    tried = ", ".join(str(p) for p in PROBE_PORTS)
    if res.get("verdict") == "alive":
        return Witness("target-probe", ALIVE, f"{target.name} reached {source.private_ip}: "
                                              f"{', '.join(res.get('answered') or [])}")
    if res.get("verdict") == "silent":
        return Witness("target-probe", OFF, f"no answer from {source.private_ip} on ports {tried} to {target.name} "
                                            f"in {len(res.get('rounds') or [])} rounds")
    return Witness("target-probe", UNKNOWN, f"unexpected answer from {target.name}: {str(res)[:120]}")


def _prom_command(host: HostRecord, window: float) -> str:
    """`qp-validator-ctl prometheus-samples` on the monitoring host: its clock and the raw samples."""
    from qpool.remote import ctl_command

    return ctl_command("prometheus-samples", "--host", host.name, "--window", str(max(1, int(window))))


def prometheus_samples(ctx: Context, host: HostRecord, window: float) -> tuple[float, list[tuple[float, float]]]:
    """(the monitoring host's clock now, raw `up` samples of `host`'s validator in the window), oldest first.
    Raises QpoolError when Prometheus cannot be read."""
    from qpool.remote import Unreachable

    mon = ctx.inventory.monitoring()
    if mon is None:
        raise QpoolError("no monitoring host in the inventory")
    try:
        res = ctx.ssh.run(mon, _prom_command(host, window), timeout=30)
    except Unreachable as exc:
        raise QpoolError(f"{mon.name} unreachable: {exc}") from None
    if res.rc != 0:
        why = (res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")).strip()
        raise QpoolError(f"Prometheus on {mon.name} did not answer (rc {res.rc}): {why[-160:]}")
    try:
        answer = json.loads(res.stdout.decode())
        now = float(answer["now"])
        doc = answer["response"]
        samples = sorted((float(ts), float(v)) for series in doc["data"]["result"] for ts, v in series["values"])
    except (ValueError, KeyError, TypeError) as exc:
        raise QpoolError(f"unreadable answer from Prometheus on {mon.name}: {exc}") from None
    return now, samples


def prometheus(ctx: Context, source: HostRecord, fenced_at: float) -> Witness:
    """Was the source's validator scraped successfully after the fence (operator's clock `fenced_at`)?

    The monitoring host's clock and the operator's differ; durations do not. The operator's clock is read
    before and after the query, so "certainly after the fence" holds whatever the SSH round trip took.
    """
    before = ctx.clock()
    window = min(PROM_MAX_WINDOW, max(0.0, before - fenced_at) + PROM_MARGIN)
    try:
        mon_now, samples = prometheus_samples(ctx, source, window)
    except QpoolError as exc:
        return Witness("prometheus", UNKNOWN, str(exc))
    after = ctx.clock()
    if not samples:
        return Witness("prometheus", UNKNOWN, f"no `up` samples of {source.name}'s validator in the last "
                                              f"{window:.0f}s (not scraped?)")

    def certainly_after(ts: float) -> bool:  # the sample's age on the monitoring clock, placed on ours
        return before - (mon_now - ts) > fenced_at

    def certainly_before(ts: float) -> bool:
        return after - (mon_now - ts) < fenced_at

    ok = [ts for ts, v in samples if v == 1]
    late_ok = [ts for ts in ok if certainly_after(ts)]
    if late_ok:
        return Witness("prometheus", ALIVE, f"{source.name}'s validator scraped up {mon_now - late_ok[-1]:.0f}s ago, "
                                            "after the fence")
    failed_after = [ts for ts, v in samples if v != 1 and certainly_after(ts)]
    last_ok = f"last success {mon_now - ok[-1]:.0f}s ago" if ok else "no success in the window"
    if failed_after and all(certainly_before(ts) for ts in ok):
        return Witness("prometheus", OFF, f"{len(failed_after)} failed scrape(s) since the fence, {last_ok}")
    return Witness("prometheus", UNKNOWN, f"cannot tell yet ({last_ok}; {len(failed_after)} failed scrape(s) "
                                          "certainly after the fence)")


def collect(ctx: Context, source: HostRecord, target: HostRecord, *, fenced_at: float, hetzner: Witness,
            operator_ssh: Witness) -> list[Witness]:
    """Every witness, fresh (the Hetzner and operator-SSH readings are made by the caller)."""
    return [hetzner, operator_ssh, target_probe(ctx, target, source), prometheus(ctx, source, fenced_at)]


def require_off(ctx: Context, source: HostRecord, target: HostRecord, found: list[Witness], pair: str) -> str:
    """Report every witness; raise (one line naming each and the recovery) unless the rule accepts."""
    for w in found:
        ctx.report(f"      witness {w.line()}")
    accepted, why = decide(found)
    summary = "; ".join(w.line() for w in found)
    if not accepted:
        raise QpoolError(
            f"refusing to start {target.name}: {source.name} is not proven off ({why}). Witnesses: {summary}. "
            f"Nothing was started. Power {source.name} off for real (Hetzner console, or `systemctl poweroff` on "
            f"it), then re-run `qpool failover {pair}`; if it is reachable again, `qpool failover {pair} "
            "--abandon` and re-run for the clean path. Never override this")
    return f"proven off by {why} ({summary})"


def as_dicts(found: list[Witness]) -> list[dict[str, Any]]:
    return [asdict(w) for w in found]


def for_status(ctx: Context, host: HostRecord, peers: list[HostRecord]) -> list[dict[str, Any]]:
    """For `qpool status` on an unreachable host: what a reachable pair peer's probe and Prometheus see
    (no fence time here: Prometheus reports the age of the last successful scrape)."""
    found: list[Witness] = []
    prober = next(iter(peers), None)
    if prober is not None:
        found.append(target_probe(ctx, prober, host))
    try:
        mon_now, samples = prometheus_samples(ctx, host, PROM_MARGIN)
        ok = [ts for ts, v in samples if v == 1]
        if not samples:
            found.append(Witness("prometheus", UNKNOWN, "no samples in the last 15 min"))
        elif samples[-1][1] == 1:
            found.append(Witness("prometheus", ALIVE, f"last scrape {mon_now - samples[-1][0]:.0f}s ago succeeded"))
        else:
            found.append(Witness("prometheus", OFF, "latest scrapes fail; "
                                 + (f"last success {mon_now - ok[-1]:.0f}s ago" if ok else "none in 15 min")))
    except QpoolError as exc:
        found.append(Witness("prometheus", UNKNOWN, str(exc)))
    return as_dicts(found)
