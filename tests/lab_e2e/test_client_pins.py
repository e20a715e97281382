"""Issue 11 on a running lab: client pins bumped in the stack file and applied like `pulumi up`.

From a healthy lab with the primary signing, the execution and beacon pins are bumped to a second build of
the stand-ins that the lab's mirror serves (other bytes, other sha256s). After `qpool lab apply`:
- both hosts run the new build (installed, verified, and the running processes report it);
- the standby's clients were restarted before the active host's (journal timestamps), and the active
  host's restarts began only after the standby's step (restarts + health gate) finished;
- the active validator's process was never restarted (same PID, same start time);
- the signing logs show exactly one signer throughout (no double or surround vote, nothing on the standby).
Then the validator pin is bumped: the apply installs it but restarts nothing; `qpool status` shows
"restart pending"; `qpool validator-restart` restarts it in place on the same host (still one signer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import ports
from lab.apply import apply
from lab.standins.build import build_release
from lab.testing import config_variant
from qpool.status import pair_status
from qpool.validator_restart import restart_validator
from tests.failover import detector
from tests.failover.test_fault_matrix import PAIR, Lab, signing_lab

from .conftest import LAB_MARKS, out

pytestmark = LAB_MARKS

STACK = "e2epins"
OCTET = 25
RELEASE = "lab2"
#: systemd's "unit started" journal message (sd-messages.h SD_MESSAGE_UNIT_STARTED)
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from signing_lab(tmp_path_factory.mktemp(STACK), STACK, OCTET)


def bumped(tmp_path: Path, *roles: str) -> Path:
    def mutate(config: dict[str, Any]) -> None:
        for role in roles:
            config["quantapool:clients"][role]["version"] = RELEASE  # the overlay pins the mirror's second build
    return config_variant(tmp_path / f"Pulumi.{STACK}.yaml", OCTET, mutate=mutate)


def starts(lab: Lab, role: str, unit: str) -> list[int]:
    """Realtime (µs) of every start of `unit` on `role`'s host, from its journal."""
    text = out(lab.dep, lab.host(role).name, f"journalctl -u {unit} -o json --no-pager")
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    return sorted(int(e["__REALTIME_TIMESTAMP"]) for e in entries if e.get("MESSAGE_ID") == UNIT_STARTED)


def validator_process(lab: Lab, role: str) -> tuple[str, str]:
    text = out(lab.dep, lab.host(role).name,
               "systemctl show -p MainPID -p ExecMainStartTimestampMonotonic qp-validator.service")
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return props["MainPID"], props["ExecMainStartTimestampMonotonic"]


def running_versions(lab: Lab, role: str) -> tuple[str, str]:
    """What the RUNNING execution client and beacon node report (not just what is on disk)."""
    host = lab.host(role).name
    ns = lab.dep.config.clients.rpc_namespace
    rpc = out(lab.dep, host, "curl -sf -H 'Content-Type: application/json' --data "
                             "'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"web3_clientVersion\",\"params\":[]}' "
                             f"http://127.0.0.1:{ports.EXECUTION_RPC}")
    rest = out(lab.dep, host, f"curl -sf http://127.0.0.1:{ports.BEACON_REST}/{ns}/v1/node/version")
    return json.loads(rpc)["result"], json.loads(rest)["data"]["version"]


def one_signer(lab: Lab) -> None:
    report = detector.scan(lab.key_hosts)
    assert not report.findings, [f"{f.kind}: {f.a.short()} / {f.b.short()}" for f in report.findings]
    assert detector.read_signing_log(lab.host("backup")) == [], "the standby signed"


def test_execution_and_beacon_pin_bump_restarts_standby_first_and_never_the_validator(
        lab: Lab, tmp_path: Path) -> None:
    assert lab.active_role() == "primary" and lab.signers() == ["primary"]
    build_release(lab.dep.state_dir / "mirror", RELEASE)
    validator_before = validator_process(lab, "primary")
    before = {(role, unit): starts(lab, role, unit) for role in ("primary", "backup")
              for unit in ("qp-execution.service", "qp-beacon.service")}
    signed_before = lab.log_len("primary")

    log: list[str] = []
    result = apply(lab.dep, bumped(tmp_path, "execution", "beacon"), log=log.append, session=lab.session)
    assert sorted(c.name for c in result.plan.changes) == sorted(
        f"{lab.host(r).name}-bundle-clients" for r in ("primary", "backup")), "\n".join(log)

    for role in ("primary", "backup"):
        execution, beacon = running_versions(lab, role)
        assert execution.endswith(f"+{RELEASE}") or f"+{RELEASE}/" in execution, (role, execution)
        assert beacon.endswith(f"+{RELEASE}"), (role, beacon)
        links = out(lab.dep, lab.host(role).name, "readlink /opt/quantapool/bin/gqrl /opt/quantapool/bin/beacon-chain")
        assert links.split() == [f"gqrl-{RELEASE}", f"beacon-chain-{RELEASE}"]

    new = {key: [t for t in starts(lab, *key) if t not in before[key]] for key in before}
    assert all(len(times) == 1 for times in new.values()), new  # each client restarted exactly once
    standby_last = max(new[("backup", u)][0] for u in ("qp-execution.service", "qp-beacon.service"))
    active_first = min(new[("primary", u)][0] for u in ("qp-execution.service", "qp-beacon.service"))
    assert standby_last < active_first, "the active host restarted before the standby's step finished"
    print(f"\npin apply: {len(result.ran)} step(s) in {result.seconds:.1f}s; standby restarts at "
          f"+{(standby_last - min(new[('backup', 'qp-execution.service')])) / 1e6:.1f}s, active's first restart "
          f"{(active_first - standby_last) / 1e6:.1f}s after the standby's last; "
          f"validator PID {validator_before[0]} kept")

    assert validator_process(lab, "primary") == validator_before, "the apply restarted the active validator"
    lab.wait_signs("primary", after=signed_before)
    one_signer(lab)
    st = lab.status("primary")
    assert st is not None and st.get("restart_pending") is None


def test_validator_pin_bump_is_pending_until_qpool_restarts_it_in_place(lab: Lab, tmp_path: Path) -> None:
    validator_before = validator_process(lab, "primary")
    result = apply(lab.dep, bumped(tmp_path, "execution", "beacon", "validator"), log=lambda _m: None,
                   session=lab.session)
    assert result.ran, "the validator pin bump re-runs both hosts' clients steps"
    assert validator_process(lab, "primary") == validator_before, "pulumi must never restart a validator"
    ctx = lab.context()
    doc = pair_status(ctx, PAIR)
    [primary] = [h for h in doc["hosts"] if h["role"] == "primary"]
    [backup] = [h for h in doc["hosts"] if h["role"] == "backup"]
    assert primary["restart_pending"] and backup["restart_pending"] is None  # the standby's is not running
    metric = out(lab.dep, lab.host("primary").name, "cat /var/lib/prometheus/node-exporter/quantapool_clients.prom")
    assert "quantapool_validator_restart_pending 1" in metric

    signed = lab.log_len("primary")
    restart_validator(ctx, PAIR)
    assert validator_process(lab, "primary") != validator_before
    assert lab.signers() == ["primary"]
    st = lab.status("primary")
    assert st is not None and st.get("restart_pending") is None
    lab.wait_signs("primary", after=signed)
    one_signer(lab)
