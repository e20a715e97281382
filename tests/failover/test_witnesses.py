"""Issue 12 item 6: "fenced" means proven off by independent witnesses, and every start needs a live, synced
beacon node. Unit tests on the failover fakes (test_operations_guards' FakeSsh and fake clock).

Each refusal is checked to happen before anything starts, and the fenced run stays resumable.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qpool import operations as ops
from qpool import witnesses as wit
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.journal import journal_path, last_journal
from qpool.remote import RemoteResult, deploy_command_problem

from .safety_support import fake, make_ctx
from .test_operations_guards import BACKUP, PRIMARY, FakeClock, interchange, stopped_status

W = wit.Witness
MON = HostRecord("h-mon", "monitoring", None, "192.0.2.13", "10.0.0.13", server_id=3)


# -- the acceptance rule --------------------------------------------------------------------------------

@pytest.mark.parametrize(("hetzner", "probe", "prom", "accepted"), [
    ("off", "off", "off", True),
    ("off", "off", "unknown", True),       # Hetzner + the target's probe: two independent witnesses
    ("off", "unknown", "off", True),       # Hetzner + Prometheus
    ("off", "unknown", "unknown", False),  # Hetzner alone is never proof
    ("off", "alive", "off", False),        # the issue-12 case: the target still reaches the source
    ("off", "off", "alive", False),        # scraped after the fence
    ("unknown", "off", "off", False),      # no verified power-off
    ("alive", "off", "off", False),
])
def test_accepted_combinations(hetzner: str, probe: str, prom: str, accepted: bool) -> None:
    found = [W("hetzner", hetzner, ""), W("operator-ssh", "unknown", ""), W("target-probe", probe, ""),
             W("prometheus", prom, "")]
    assert wit.decide(found)[0] is accepted


def test_operator_ssh_failing_never_counts_as_a_witness() -> None:
    found = [W("hetzner", "off", ""), W("operator-ssh", "off", ""), W("target-probe", "unknown", ""),
             W("prometheus", "unknown", "")]
    assert wit.decide(found)[0] is False


# -- Prometheus: raw `up` samples, durations compared across clocks ----------------------------------------

class PromSsh:
    def __init__(self, mon_now: float, samples: list[tuple[float, int]], rc: int = 0) -> None:
        self.mon_now, self.samples, self.rc = mon_now, samples, rc
        self.commands: list[str] = []

    def run(self, host: HostRecord, command: str, **_kw: Any) -> RemoteResult:
        self.commands.append(command)
        doc = {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"job": "validator", "host": PRIMARY.name},
             "values": [[ts, str(v)] for ts, v in self.samples]}] if self.samples else []}}
        assert deploy_command_problem(command) is None and "prometheus-samples" in command, command
        answer = {"now": self.mon_now, "response": doc} if self.rc == 0 else {"error": "Prometheus did not answer"}
        return RemoteResult(self.rc, json.dumps(answer).encode(), b"")


def prom_ctx(ssh: PromSsh, now: float) -> Any:
    return SimpleNamespace(ssh=ssh, clock=FakeClock(now), inventory=SimpleNamespace(monitoring=lambda: MON))


# The monitoring host's clock runs 500 s ahead of the operator's: only durations may be compared.
SKEW = 500.0


def test_prometheus_scrape_after_the_fence_is_alive() -> None:
    fenced_at, now = 10_000.0, 10_300.0
    samples = [(fenced_at + SKEW - 60 + 15 * i, 1) for i in range(20)]  # scraped up until now
    w = wit.prometheus(prom_ctx(PromSsh(now + SKEW, samples), now), PRIMARY, fenced_at)
    assert w.verdict == wit.ALIVE


def test_prometheus_failed_scrapes_since_the_fence_are_off() -> None:
    fenced_at, now = 10_000.0, 10_300.0
    samples = [(fenced_at + SKEW - 60 + 15 * i, 1 if i < 3 else 0) for i in range(20)]
    ssh = PromSsh(now + SKEW, samples)
    w = wit.prometheus(prom_ctx(ssh, now), PRIMARY, fenced_at)
    assert w.verdict == wit.OFF, w
    # only the source's validator series (the host tool builds `up{job="validator",host=...}` from the name)
    assert "prometheus-samples --host h-primary --window" in ssh.commands[0], ssh.commands


def test_prometheus_without_samples_after_the_fence_cannot_tell() -> None:
    fenced_at, now = 10_000.0, 10_002.0  # right after the fence: no scrape since
    samples = [(fenced_at + SKEW - 60 + 15 * i, 1) for i in range(4)]
    w = wit.prometheus(prom_ctx(PromSsh(now + SKEW, samples), now), PRIMARY, fenced_at)
    assert w.verdict == wit.UNKNOWN


@pytest.mark.parametrize("ssh", [PromSsh(0.0, [], rc=7), PromSsh(1.0, [])])
def test_prometheus_down_or_empty_is_unknown_never_off(ssh: PromSsh) -> None:
    assert wit.prometheus(prom_ctx(ssh, 100.0), PRIMARY, 50.0).verdict == wit.UNKNOWN


# -- the fenced failover path ----------------------------------------------------------------------------

@pytest.fixture
def fenced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    """The primary is unreachable for the operator; Hetzner "fences" it (fake); a replica is on the backup."""
    ctx = make_ctx(tmp_path, monkeypatch)
    clock: FakeClock = ctx.clock  # type: ignore[assignment]
    ssh = fake(ctx)
    ssh.statuses[PRIMARY.name] = None
    ssh.replica = interchange((1, 2), (2, 3))
    ssh.statuses[BACKUP.name] = stopped_status(
        newest_backup={"path": "/r/x.db", "age_seconds": 60.0, "source": PRIMARY.name},
        chain_clock={"genesis_time": int(clock.now) - 10 * 7680 - 100, "seconds_per_slot": 60.0,
                     "slots_per_epoch": 128})
    ctx.hcloud = object()
    monkeypatch.setattr(ops, "hetzner_fenced", lambda _c, _h: False)
    monkeypatch.setattr("qpool.status.hetzner_fenced", lambda _c, _h: False)
    monkeypatch.setattr(ops, "_fence", lambda c, _h, _j: {"fenced_at": c.clock(), "already_off": True,
                                                          "power_off_sent": True})
    monkeypatch.setattr(ops, "_verify_fenced", lambda _c, _h: "powered off (Hetzner API) and unreachable over SSH")
    return ctx


def _started(ctx: ops.Context) -> bool:
    return (BACKUP.name, "activate", "--run-id") in fake(ctx).calls


def test_api_says_off_but_the_target_reaches_the_source_refuses(fenced: ops.Context) -> None:
    """Issue 12's trial: API "off", source cut off from the operator only. The target's probe sees it."""
    fake(fenced).probe_answers[PRIMARY.name] = True
    lines: list[str] = []
    fenced.report = lines.append
    with pytest.raises(QpoolError, match=r"h-primary is not proven off \(seen alive by target-probe\).*"
                                         r"Never override"):
        ops.failover(fenced, "p1", accept_slashing_risk=True)  # the override does not reach this check
    assert not _started(fenced)
    assert any("witness target-probe: ALIVE" in ln for ln in lines), "the failover output shows the witnesses"
    doc = last_journal(journal_path("t", "p1", fenced.journal_dir))
    assert doc is not None and not doc.get("completed") and not doc.get("aborted"), "the run stays resumable"
    # Once the source is really off, the same command resumes and starts the target.
    fake(fenced).probe_answers[PRIMARY.name] = False
    assert ops.failover(fenced, "p1")["mode"] == "fenced"
    assert _started(fenced)


def test_target_probe_and_hetzner_are_enough_when_prometheus_is_unknown(fenced: ops.Context) -> None:
    """No monitoring host in this inventory: Prometheus is unknown, Hetzner + the target's probe accept."""
    assert ops.failover(fenced, "p1")["mode"] == "fenced"
    doc = last_journal(journal_path("t", "p1", fenced.journal_dir))
    assert doc is not None
    evidence = doc["steps"]["start"]["data"]["source_evidence"]
    assert evidence.startswith("proven off by hetzner + target-probe")
    assert "prometheus: UNKNOWN" in evidence


def test_probe_that_cannot_run_leaves_hetzner_alone_and_refuses(fenced: ops.Context,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wit, "target_probe", lambda _c, t, s: W("target-probe", wit.UNKNOWN, "old host tools"))
    with pytest.raises(QpoolError, match="one witness is never proof"):
        ops.failover(fenced, "p1")
    assert not _started(fenced)


def test_journal_without_a_sent_power_off_is_not_proof(fenced: ops.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "_fence", lambda c, _h, _j: {"fenced_at": c.clock(), "already_off": True})
    with pytest.raises(QpoolError, match="Hetzner API does not confirm it off after a power-off"):
        ops.failover(fenced, "p1")
    assert not _started(fenced)


# -- beacon node before every start ----------------------------------------------------------------------

@pytest.mark.parametrize(("beacon", "word"), [
    ({"reachable": False}, "does not answer"),
    ({"reachable": True, "syncing": True, "head_slot": 5}, "is syncing"),
    ({"reachable": True, "syncing": None}, "does not report its sync state"),
])
def test_activate_refused_without_a_synced_beacon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  beacon: dict[str, Any], word: str) -> None:
    ctx = make_ctx(tmp_path, monkeypatch)
    fake(ctx).statuses = {PRIMARY.name: stopped_status(beacon=beacon), BACKUP.name: stopped_status()}
    with pytest.raises(QpoolError, match=f"h-primary's beacon node {word}"):
        ops.activate(ctx, "p1")
    assert fake(ctx).changed() == [] and fake(ctx).oplock == {}


def test_failover_refused_before_the_start_when_the_target_beacon_is_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx(tmp_path, monkeypatch)
    fake(ctx).statuses[BACKUP.name] = stopped_status(beacon={"reachable": False})
    with pytest.raises(QpoolError, match="h-backup's beacon node does not answer"):
        ops.failover(ctx, "p1")
    assert (BACKUP.name, "activate", "--run-id") not in fake(ctx).calls


def test_beacon_that_stops_during_the_prompt_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx(tmp_path, monkeypatch)
    fake(ctx).statuses = {PRIMARY.name: stopped_status(), BACKUP.name: stopped_status()}

    def confirm(_msg: str) -> bool:
        fake(ctx).statuses[PRIMARY.name]["beacon"] = {"reachable": True, "syncing": True}  # type: ignore[index]
        return True

    ctx.confirm = confirm
    with pytest.raises(QpoolError, match="is syncing"):
        ops.activate(ctx, "p1")
    assert fake(ctx).changed() == []


# -- qpool status shows the witnesses of an unreachable host ------------------------------------------------

def test_status_shows_the_witnesses_of_an_unreachable_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qpool.status import format_status, pair_status

    ctx = make_ctx(tmp_path, monkeypatch)
    fake(ctx).statuses[PRIMARY.name] = None
    fake(ctx).probe_answers[PRIMARY.name] = True  # cut off from the operator only: the backup still reaches it
    doc = pair_status(ctx, "p1")
    primary = next(h for h in doc["hosts"] if h["host"] == PRIMARY.name)
    assert [(w["name"], w["verdict"]) for w in primary["witnesses"]] == [("target-probe", "alive"),
                                                                          ("prometheus", "unknown")]
    assert next(h for h in doc["hosts"] if h["host"] == BACKUP.name)["witnesses"] is None
    text = format_status({"stack": "t", "pairs": [doc]})
    assert "witness target-probe: ALIVE (h-backup reached 10.0.0.11" in text
