"""The host (qp-validator-ctl) and the operator (qpool.signing) agree on "stopped and locked", on codes.

Why: the host script is shipped alone and cannot import qpool, so the same four checks exist twice. Every
combination of the four observations must give the same codes on both sides, and the operator's
decisions (may_sign, stopped_reasons) must follow the codes only, not the wording of any message.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from qpool import signing
from qpool.signing import NotStopped

CTL_FILE = Path(__file__).resolve().parents[2] / "cloud_init" / "files" / "qp_validator_ctl.py"

UNIT_STATES = ["active", "activating", "deactivating", "reloading", "inactive", "failed", "maintenance", None]
COMBINATIONS = list(itertools.product(UNIT_STATES, [[], [4242]], [False, True], [False, True]))


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The host script as hosts load it, with a config naming a lock file and metrics port (for its texts)."""
    spec = importlib.util.spec_from_file_location("qp_validator_ctl_codes", CTL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = tmp_path_factory.mktemp("ctl") / "validator-ctl.json"
    config.write_text(json.dumps({"lock_file": "/etc/quantapool/VALIDATOR_LOCKED", "metrics_port": 8081}))
    module.CONFIG_PATH = config
    module.CFG = module.load_config()
    return module


def observations(unit: str | None, processes: list[int], port: bool, locked: bool) -> dict[str, Any]:
    return {"unit": {"active": unit}, "processes": processes, "metrics_port_open": port, "locked": locked}


def test_code_values_are_the_same_on_both_sides(ctl: ModuleType) -> None:
    host = {ctl.NOT_STOPPED_UNIT, ctl.NOT_STOPPED_PROCESSES, ctl.NOT_STOPPED_METRICS_PORT, ctl.NOT_STOPPED_UNLOCKED}
    assert host == {code.value for code in NotStopped}


@pytest.mark.parametrize(("unit", "processes", "port", "locked"), COMBINATIONS)
def test_host_and_operator_agree(ctl: ModuleType, unit: str | None, processes: list[int], port: bool,
                                 locked: bool) -> None:
    st = observations(unit, processes, port, locked)
    host_codes = ctl.not_stopped_codes(st)
    assert host_codes == [code.value for code in signing.observed(st)]
    assert len(ctl.stopped_reasons(st)) == len(host_codes)
    # The operator decides the same on a status the host annotated as on the bare observations.
    reported = {**st, "not_stopped": host_codes, "not_stopped_reasons": ctl.stopped_reasons(st)}
    assert signing.evidence(reported) == host_codes
    assert signing.may_sign(reported) == signing.may_sign(st) == bool(set(host_codes) - {"lock-file-absent"})
    assert bool(signing.stopped_reasons(reported)) == bool(host_codes)
    expected_stopped = unit in ("inactive", "failed") and not processes and not port and locked
    assert (host_codes == []) == expected_stopped


def test_a_code_the_host_reports_counts_even_if_this_side_sees_nothing() -> None:
    stopped = observations("inactive", [], False, True)
    assert signing.stopped_reasons(stopped) == [] and not signing.may_sign(stopped)
    assert signing.may_sign({**stopped, "not_stopped": ["validator-processes"]})
    assert signing.may_sign({**stopped, "not_stopped": ["a-check-from-a-newer-host"]})
    assert signing.stopped_reasons({**stopped, "not_stopped": ["a-check-from-a-newer-host"]}) == [
        "host reports a-check-from-a-newer-host"]
    assert not signing.may_sign({**stopped, "not_stopped": ["lock-file-absent"]})


def test_decisions_do_not_read_the_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewording every message (even to mention a lock) changes no decision."""
    unlocked_only = observations("inactive", [], False, False)
    live = observations("active", [1], True, True)
    monkeypatch.setattr(signing, "_text", lambda code, status: "lock lock lock")
    assert not signing.may_sign(unlocked_only)
    assert signing.may_sign(live)
