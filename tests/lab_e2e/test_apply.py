"""`qpool lab apply` on a running lab (issue 11): a no-op apply re-runs nothing; a pair added to a running lab
comes up locked, is scraped by Prometheus with the labels the two-signer rules join on, and the existing pair's
hosts are untouched.

Why on a real lab: what matters is what the hosts end up running (locks, clients, Prometheus targets) and
that a live signer's hosts see no step at all — not what a plan says.
"""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from core import ports
from lab.apply import apply
from lab.testing import config_variant

from .conftest import LAB_MARKS, Lab, ctl_status, module_lab, one_host, out, wait_for

pytestmark = LAB_MARKS

STACK = "e2eapply"
OCTET = 28


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from module_lab(STACK, OCTET, tmp_path_factory.mktemp(STACK))


def add_pair(config: dict[str, Any]) -> None:
    """A second pair like the first, on the next two addresses of the lab's subnet."""
    pair = copy.deepcopy(config["quantapool:validatorPairs"][0])
    pair["name"] = "p2"
    pair["primary"]["privateIp"] = f"10.42.{OCTET}.13"
    pair["backup"]["privateIp"] = f"10.42.{OCTET}.14"
    config["quantapool:validatorPairs"].append(pair)


def resize_p1_backup(config: dict[str, Any]) -> None:
    """The two-pair file of the test above, plus a server-type change (a Hetzner resize) of p1's standby."""
    add_pair(config)
    config["quantapool:validatorPairs"][0]["backup"]["serverType"] = "ccx33"


def _boot_id(lab: Lab, host: str) -> str:
    return out(lab[0], host, "cat /proc/sys/kernel/random/boot_id").strip()


def _process_marks(lab: Lab, host: str) -> dict[str, str]:
    """What changes if anything restarts on a host: boot id and the clients' main PIDs and start times."""
    dep, _ = lab
    units = "qp-execution qp-beacon node-exporter prometheus-node-exporter"
    text = out(dep, host, f"cat /proc/sys/kernel/random/boot_id; for u in {units}; do "
                          "systemctl show -p MainPID -p ActiveEnterTimestampMonotonic $u 2>/dev/null; done")
    return {"state": text}


def _prom_query(lab: Lab, query: str) -> list[dict[str, Any]]:
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    url = f"http://127.0.0.1:{ports.PROMETHEUS}/api/v1/query"
    body = out(dep, mon, f"curl -sf -G {url} --data-urlencode {shlex.quote('query=' + query)}")
    return json.loads(body)["data"]["result"]


def test_noop_apply_reruns_nothing(lab: Lab) -> None:
    dep, session = lab
    log: list[str] = []
    result = apply(dep, dep.config_source, log=log.append, session=session)
    assert result.plan.empty, "\n".join(log)
    assert result.ran == [] and result.applied == []
    assert any("0 to create, 0 to update, 0 to replace, 0 to delete" in line for line in log), log


def test_added_pair_comes_up_locked_scraped_and_covered_and_the_existing_pair_is_untouched(
        lab: Lab, tmp_path: Path) -> None:
    dep, session = lab
    p1 = [spec.name for spec in dep.config.hosts() if spec.pair == "p1"]
    before = {host: _process_marks(lab, host) for host in p1}
    config = config_variant(tmp_path / f"Pulumi.{STACK}.yaml", OCTET, mutate=add_pair)
    log: list[str] = []

    result = apply(dep, config, log=log.append, session=session)

    new_hosts = [spec.name for spec in dep.config.hosts() if spec.pair == "p2"]
    assert len(new_hosts) == 2 and all(h in dep.hosts for h in new_hosts), log
    touched = {line.split(": ", 1)[0] for line in result.ran}
    assert set(new_hosts) <= touched, result.ran
    assert not touched & set(p1), f"steps re-ran on the existing pair: {result.ran}"
    assert {host: _process_marks(lab, host) for host in p1} == before, "a process of the existing pair restarted"

    for host in new_hosts:
        st = ctl_status(dep, host)
        assert st["locked"] is True and st["processes"] == [], (host, st)
        assert out(dep, host, "systemctl is-active qp-execution qp-beacon").split() == ["active", "active"], host
    inventory = json.loads(session.inventory_path.read_text())
    assert set(new_hosts) <= set(inventory["hosts"]), "new hosts missing from the lab inventory"

    # Prometheus scrapes the new hosts, with the `pair` label the two-signer rules aggregate by.
    new_ips = {dep.spec(h).private_ip for h in new_hosts}

    def scraped() -> bool:
        seen = {(s["metric"]["job"], s["metric"]["instance"].split(":")[0], s["metric"].get("pair"))
                for s in _prom_query(lab, 'up{job=~"node|validator|beacon|execution"}')}
        return all((job, ip, "p2") in seen for job in ("node", "validator", "beacon", "execution") for ip in new_ips)

    wait_for("Prometheus scraping the added pair's targets with pair=p2", scraped, timeout=180, interval=3)
    # ValidatorUnlockedOnTwoHosts / ValidatorRunningOnTwoHosts aggregate by pair: both new hosts are in p2's group.
    locks = wait_for("both p2 lock metrics in Prometheus", lambda: [
        s for s in _prom_query(lab, 'count by (pair) (quantapool_validator_locked{job="node"})')
        if s["metric"].get("pair") == "p2" and s["value"][1] == "2"], timeout=120, interval=3)
    assert locks
    running = _prom_query(lab, 'count by (pair) (up{job="validator"})')
    assert {s["metric"]["pair"]: s["value"][1] for s in running}.get("p2") == "2", running
    unlocked = _prom_query(lab, 'quantapool_validator_locked{job="node",pair="p2"} == 0')
    assert unlocked == [], f"a new host's lock metric says unlocked: {unlocked}"

    again = apply(dep, config, log=log.append, session=session)
    assert again.plan.empty and again.ran == [], "a second apply of the same two-pair file re-ran steps"


def test_server_type_change_power_cycles_only_that_host_and_it_comes_back_locked(lab: Lab, tmp_path: Path) -> None:
    dep, session = lab
    backup = next(s.name for s in dep.config.hosts() if s.pair == "p1" and s.role == "backup")
    others = [name for name in dep.hosts if name != backup]
    boots = {name: _boot_id(lab, name) for name in dep.hosts}
    log: list[str] = []

    result = apply(dep, config_variant(tmp_path / "resized.yaml", OCTET, mutate=resize_p1_backup), log=log.append,
                   session=session)

    [change] = [c for c in result.plan.changes if c.type.endswith("server:Server")]
    assert change.name == f"{backup}-server" and change.power_cycle, log
    assert _boot_id(lab, backup) != boots[backup], f"{backup} was not power-cycled"
    assert {name: _boot_id(lab, name) for name in others} == {name: boots[name] for name in others}
    st = ctl_status(dep, backup)
    assert st["locked"] is True and st["processes"] == [], st
    wait_for(f"{backup}: clients active again after the power cycle", lambda: out(
        dep, backup, "systemctl is-active qp-execution qp-beacon || true").split() == ["active", "active"])
