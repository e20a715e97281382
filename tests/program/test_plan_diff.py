"""`qpool plan --diff OLD.json`: a PR's offline preview against a plan saved from main (issue 11 item 4).

What a reviewer must see: which resources change and how (create/update/replace/delete, deferred changes),
and which files change on which host, with a readable diff — and never a secret value.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from qpool.cli import main
from qpool.plan_diff import format_plan_diff, records_of_plan_json, records_of_run
from qpool.review import plan_stack

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def variant(tmp_path: Path, name: str, mutate: Any) -> Path:
    doc = yaml.safe_load((REPO / "Pulumi.testnet.yaml").read_text())
    mutate(doc["config"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def main_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`qpool plan --json` of the unchanged stack: what the PR workflow saves from main."""
    result = invoke("plan", "--stack", "testnet", "--json")
    assert result.exit_code == 0, result.output
    path = tmp_path_factory.mktemp("main") / "main-plan.json"
    path.write_text(result.stdout)
    return path


def test_unchanged_config_shows_no_change(main_plan: Path) -> None:
    result = invoke("plan", "--stack", "testnet", "--diff", str(main_plan))
    assert result.exit_code == 0, result.output
    assert "Resources: 0 to create, 0 to update, 0 to replace, 0 to delete" in result.stdout
    assert "Host files: no change" in result.stdout


def test_trusted_address_edit_lists_firewalls_and_each_hosts_ruleset_diff(main_plan: Path, tmp_path: Path) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["quantapool:network"]["sshAllowedCidrs"][0] = "198.51.100.9/32"

    result = invoke("plan", "--stack", "testnet", "--config-file", str(variant(tmp_path, "ssh", edit)),
                    "--diff", str(main_plan))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "~  hcloud:index/firewall:Firewall qp-fw-validator update [rules]" in out
    for host in ("qp-testnet-p1-primary", "qp-testnet-p1-backup", "qp-testnet-monitoring"):
        section = out.split(f"  {host}:\n", 1)[1].split("\n  qp-", 1)[0]
        assert "etc/nftables.conf" in section, (host, out)
        assert "-\t\telements = { 203.0.113.7/32 }" in section and "+\t\telements = { 198.51.100.9/32 }" in section


def test_added_pair_and_resize_show_creates_new_hosts_bundle_changes_and_the_power_cycle(
        main_plan: Path, tmp_path: Path) -> None:
    def edit(c: dict[str, Any]) -> None:
        pair = copy.deepcopy(c["quantapool:validatorPairs"][0])
        pair.update(name="p2")
        pair["primary"]["privateIp"], pair["backup"]["privateIp"] = "10.42.1.13", "10.42.1.14"
        c["quantapool:validatorPairs"].append(pair)
        c["quantapool:validatorPairs"][0]["backup"]["serverType"] = "ccx33"

    result = invoke("plan", "--stack", "testnet", "--config-file", str(variant(tmp_path, "p2", edit)),
                    "--diff", str(main_plan))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "+  hcloud:index/server:Server qp-testnet-p2-primary-server create" in out
    assert "+  hcloud:index/server:Server qp-testnet-p2-backup-server create" in out
    assert "qp-testnet-p1-backup-server update [serverType] (power cycle" in out
    assert "  qp-testnet-p2-primary (new host):" in out
    # the monitoring host's tools bundle (a non-secret base64 tar) changes: listed with its diff
    monitoring = out.split("  qp-testnet-monitoring:\n", 1)[1].split("\n  qp-", 1)[0]
    assert "~ etc/quantapool/validator-ctl.json  (step qp-testnet-monitoring-host-tools)" in monitoring
    assert "+++ b/etc/quantapool/validator-ctl.json" in monitoring


def test_secret_values_never_appear_and_secret_steps_are_not_decoded(main_plan: Path) -> None:
    stack = plan_stack("testnet")
    secret_values = [v for r in stack.run.resources for k, v in r.plain_inputs().items()
                     if r.input_is_secret(k) and isinstance(v, str) and len(v) >= 8]
    assert secret_values, "the plan has secret inputs (JWTs, keys): otherwise this test checks nothing"
    old = json.loads(main_plan.read_text())
    for r in old["resources"]:  # pretend every secret step changed: still nothing secret to show
        if r["inputs"].get("stdin") == "[secret]":
            r["inputs"]["triggers"] = ["changed"]
    text = format_plan_diff(old, stack.run, "main")
    assert "replace [triggers]" in text
    assert not [v for v in secret_values if v in text]
    assert "[secret]" not in text.split("Host files:", 1)[1]


def test_plan_json_and_mocked_run_give_the_same_records(main_plan: Path) -> None:
    """The two sides of the diff are built differently (a saved JSON, a live run): they must agree."""
    run = plan_stack("testnet").run
    old = {(r["type"], r["name"]): r for r in records_of_plan_json(json.loads(main_plan.read_text()))}
    new = {(r["type"], r["name"]): r for r in records_of_run(run)}
    assert old.keys() == new.keys()
    for key, rec in new.items():
        assert old[key]["inputs"] == rec["inputs"], key
        assert old[key]["host"] == rec["host"] and old[key].get("files") == rec.get("files"), key


def test_not_a_plan_json_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"stack": "testnet"}')
    result = invoke("plan", "--stack", "testnet", "--diff", str(bad))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "qpool plan --stack testnet --json" in result.stderr


def test_resizing_both_hosts_resizes_the_standby_and_defers_the_active_host(main_plan: Path, tmp_path: Path) -> None:
    """Issue 11 item 5: a resize powers a server off; on the pair's active host it is deferred, and said so."""
    def edit(c: dict[str, Any]) -> None:
        for role in ("primary", "backup"):
            c["quantapool:validatorPairs"][0][role]["serverType"] = "ccx33"

    result = invoke("plan", "--stack", "testnet", "--config-file", str(variant(tmp_path, "resize", edit)),
                    "--diff", str(main_plan))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "~  hcloud:index/server:Server qp-testnet-p1-backup-server update [serverType] (power cycle" in out
    assert "qp-testnet-p1-primary-server update" not in out
    assert "=  hcloud:index/server:Server qp-testnet-p1-primary-server deferred: serverType" in out
    assert "`qpool failover`, `pulumi up`, `qpool failover --to primary`" in out
    assert "Resources: 0 to create, 1 to update, 0 to replace, 0 to delete" in out
