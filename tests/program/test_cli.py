"""`qpool validate/plan/render` as an operator runs them (click's runner, no Pulumi CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from qpool.cli import main
from tests.conftest import filled_mainnet_doc

REPO = Path(__file__).resolve().parents[2]


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_validate_ok():
    result = invoke("validate", "--stack", "testnet")
    assert result.exit_code == 0, result.output
    assert "valid (3 hosts)" in result.output


def write_variant(tmp_path, mutate):
    """The mainnet stack as tests see it (test-only pins filled, see tests/conftest.py), mutated."""
    doc = filled_mainnet_doc()
    mutate(doc["config"])
    path = tmp_path / "proposed.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_validate_bad_config_exit_2_one_line_per_problem(tmp_path):
    def mutate(c):
        c["quantapool:network"]["sshAllowedCidrs"] = ["0.0.0.0/0"]
        c["quantapool:hetzner"]["backups"] = False

    path = write_variant(tmp_path, mutate)
    result = invoke("validate", "--stack", "mainnet", "--config-file", str(path))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 2
    assert any("quantapool:network.sshAllowedCidrs[0]" in line for line in lines)
    assert any("quantapool:hetzner.backups" in line for line in lines)
    assert "Traceback" not in result.output


def test_missing_stack_file():
    result = invoke("validate", "--stack", "staging")
    assert result.exit_code == 2 and "Pulumi.staging.yaml not found" in result.output


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("config: [unclosed")
    result = invoke("plan", "--stack", "testnet", "--config-file", str(path))
    assert result.exit_code == 2 and "not valid YAML" in result.output


def test_plan_json_shape():
    result = CliRunner().invoke(main, ["plan", "--stack", "mainnet", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["stack"] == "mainnet"
    assert all(set(r) == {"type", "name", "parent", "inputs"} for r in doc["resources"])
    names = {r["name"] for r in doc["resources"]}
    assert {"qp-net", "qp-subnet", "qp-fw-validator", "qp-fw-monitoring"} <= names


def test_plan_text_lists_resources_and_warnings():
    result = CliRunner().invoke(main, ["plan", "--stack", "testnet"])
    assert result.exit_code == 0
    assert "+ hcloud:index/firewall:Firewall qp-fw-validator" in result.stdout
    assert "warning: no alert receiver configured" in result.stderr


def test_plan_hides_encrypted_secrets(tmp_path):
    def mutate(c):
        c["quantapool:discordWebhookUrl"] = {"secure": "v1:AAAA"}

    path = write_variant(tmp_path, mutate)
    result = CliRunner().invoke(main, ["plan", "--stack", "mainnet", "--config-file", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert "v1:AAAA" not in result.stdout and "offline-standin" not in result.stdout


def test_render_writes_plan_and_refuses_foreign_dir(tmp_path):
    out = tmp_path / "review"
    result = invoke("render", "--stack", "testnet", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "plan.json").read_text())["stack"] == "testnet"
    # re-render replaces its own previous output
    assert invoke("render", "--stack", "testnet", "--out", str(out)).exit_code == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    result = invoke("render", "--stack", "testnet", "--out", str(foreign))
    assert result.exit_code == 2 and (foreign / "keep.txt").exists()



def test_render_is_deterministic(tmp_path):
    """Reviewers diff renders in PRs: the same config must render byte-identically."""
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert invoke("render", "--stack", "mainnet", "--out", str(out)).exit_code == 0
        outputs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1]
