"""Issue 15: what `pulumi up` would reject or regret is refused before any resource, identically by
`qpool validate`, `qpool plan` and the program itself (run under Pulumi's mocks).

Every case of the corpus starts from the mainnet stack as tests see it (tests/conftest.py: the committed file
with test-only pins filled in), breaks one thing, and expects exactly one `quantapool:<key>: problem; fix`
line naming that key and the fix.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from click.testing import CliRunner

from core.config import UNSET_SHA256, ConfigError, load_stack_config
from qpool import program
from qpool.cli import main
from qpool.stacks import load_stack
from tests.conftest import REPO, filled_mainnet_doc, stack_raw

Raw = dict[str, Any]


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Raw], None]
    key: str  # the config key the (first) error line names
    fix: str  # a fragment of the fix it proposes
    lines: int = 1  # error lines: one, except where one edit overflows several hosts' user-data


def _set(path: str, value: Any) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return mutate


def _many_trusted_addresses(raw: Raw) -> None:
    # 8000 distinct /32s (gzip'ed user-data: repetitive text would not grow it): the first-boot firewall of
    # every host carries them. Client config (bootstrap records, pins) and monitoring config no longer reach
    # user-data at all: they travel in bundles (issue 11), so nothing else can overflow it.
    raw["network"]["sshAllowedCidrs"] = [
        f"{(i >> 16) % 200 + 11}.{(i >> 8) & 255}.{i & 255}.{hashlib.sha256(str(i).encode()).digest()[0]}/32"
        for i in range(8000)]


TESTNET_KEY = yaml.safe_load((REPO / "Pulumi.testnet.yaml").read_text())["config"]["quantapool:operatorSshKeys"][0]

CORPUS = [
    Case("retired-type-cx32", _set("monitoring.serverType", "cx32"), "monitoring.serverType", "use cx33"),
    Case("retired-type-cpx41", _set("validatorPairs.0.primary.serverType", "cpx41"),
         "validatorPairs[0].primary.serverType", "use cpx42"),
    Case("environment-testnet-in-mainnet-stack", _set("environment", "testnet"), "environment",
         "set quantapool:environment to mainnet"),
    Case("v4-halves-cover-internet", _set("network.sshAllowedCidrs", ["0.0.0.0/1", "128.0.0.0/1"]),
         "network.sshAllowedCidrs", "list trusted addresses only"),
    Case("v4-union-of-three-covers-internet",
         _set("network.grafanaAllowedCidrs", ["203.0.113.7/32", "0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"]),
         "network.grafanaAllowedCidrs", "list trusted addresses only"),
    Case("v6-halves-cover-internet", _set("network.sshAllowedCidrs", ["203.0.113.7/32", "::/1", "8000::/1"]),
         "network.sshAllowedCidrs", "list trusted addresses only"),
    Case("v4-prefix-too-wide", _set("network.sshAllowedCidrs", ["203.0.113.7/32", "100.0.0.0/10"]),
         "network.sshAllowedCidrs[1]", "list your hosts' or office's range"),
    Case("v6-prefix-too-wide", _set("network.sshAllowedCidrs", ["2000::/8"]),
         "network.sshAllowedCidrs[0]", "list your hosts' or office's range"),
    Case("zero-client-pin", _set("clients.validator.sha256", UNSET_SHA256), "clients.validator.sha256",
         "set the `sha256sum`"),
    Case("zero-network-file-pin", _set("clients.networkFiles.1.sha256", UNSET_SHA256),
         "clients.networkFiles[1].sha256", "set the `sha256sum`"),
    Case("empty-bootstrap-nodes", _set("clients.beaconBootstrapNodes", []), "clients.beaconBootstrapNodes",
         "list the network's published bootstrap records"),
    Case("plaintext-secret", _set("pagerdutyRoutingKey", "plain-text-routing-key"), "pagerdutyRoutingKey",
         "pulumi config set --secret pagerdutyRoutingKey"),
    Case("operator-key-shared-with-testnet", _set("operatorSshKeys", [TESTNET_KEY]), "operatorSshKeys[0]",
         "give each environment its own key"),
    Case("operator-key-listed-twice", lambda raw: raw["operatorSshKeys"].append(raw["operatorSshKeys"][0] + " again"),
         "operatorSshKeys[1]", "list each key once"),
    Case("user-data-over-hetzner-limit", _many_trusted_addresses, "validatorPairs", "shorten what lands in it",
         lines=2),  # the key hosts' line, then the monitoring host's
]


def _variant(case: Case) -> Raw:
    raw = copy.deepcopy(stack_raw("mainnet"))
    case.mutate(raw)
    return raw


def _write(tmp_path: Path, raw: Raw) -> Path:
    doc = filled_mainnet_doc()
    doc["config"] = {f"quantapool:{k}": v for k, v in raw.items()}
    path = tmp_path / "Pulumi.mainnet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _error_lines(output: str) -> list[str]:
    return [line.removeprefix("error: ") for line in output.splitlines() if line.startswith("error:")]


def _program_refusal(raw: Raw, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """Run the real program under mocks; return (its logged error lines, resource types it registered)."""
    logged: list[str] = []
    registered: list[str] = []
    monkeypatch.setattr(pulumi.log, "error", lambda msg, *a, **k: logged.append(str(msg)))
    original = program.RecordingMonitor.RegisterResource

    def record(self: program.RecordingMonitor, request: Any) -> Any:
        registered.append(request.type)
        return original(self, request)

    monkeypatch.setattr(program.RecordingMonitor, "RegisterResource", record)
    with pytest.raises(pulumi.RunError, match="nothing was changed"):
        program.run_program("mainnet", raw)
    return logged, [t for t in registered if t != "pulumi:pulumi:Stack"]


def test_fixture_mainnet_is_deployable():
    """The baseline every case breaks is itself accepted (else a case could pass for the wrong reason)."""
    assert len(load_stack_config(stack_raw("mainnet"), stack="mainnet").hosts()) == 5
    assert load_stack("mainnet", preflight=True).config.environment == "mainnet"


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_bad_config_refused_alike_by_validate_plan_and_program(case: Case, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    raw = _variant(case)
    path = _write(tmp_path, raw)
    runner = CliRunner()

    validate = runner.invoke(main, ["validate", "--stack", "mainnet", "--config-file", str(path)])
    assert validate.exit_code == 2, validate.output
    lines = _error_lines(validate.output)
    assert len(lines) == case.lines, lines
    assert lines[0].startswith(f"quantapool:{case.key}: ") and case.fix in lines[0], lines[0]
    assert "Traceback" not in validate.output

    plan = runner.invoke(main, ["plan", "--stack", "mainnet", "--config-file", str(path)])
    assert plan.exit_code == 2 and _error_lines(plan.output) == lines, plan.output

    logged, registered = _program_refusal(raw, monkeypatch)
    assert logged == lines
    assert registered == [], "the program registered resources before refusing"


def test_committed_mainnet_file_lists_what_to_fill():
    """The repo's mainnet file is honest: validate fails and names every value an operator must fill."""
    result = CliRunner().invoke(main, ["validate", "--stack", "mainnet", "--config-file",
                                       str(REPO / "Pulumi.mainnet.yaml")])
    assert result.exit_code == 2
    keys = {line.split(": ", 1)[0] for line in _error_lines(result.output)}
    assert keys == {"quantapool:clients.execution.sha256", "quantapool:clients.beacon.sha256",
                    "quantapool:clients.validator.sha256", "quantapool:clients.networkFiles[0].sha256",
                    "quantapool:clients.networkFiles[1].sha256", "quantapool:clients.beaconBootstrapNodes"}


def test_retired_default_replaced():
    raw = _variant(Case("no-type", lambda r: r["monitoring"].pop("serverType"), "", ""))
    assert load_stack_config(raw, stack="mainnet").monitoring.server_type == "cx33"


def test_guardrails_follow_the_stack_not_the_value():
    """`environment: testnet` in the mainnet stack: besides the mismatch, every guardrail still applies."""
    raw = _variant(Case("env", _set("environment", "testnet"), "", ""))
    raw["hetzner"]["backups"] = False
    raw["network"]["sshAllowedCidrs"] = ["0.0.0.0/0"]
    with pytest.raises(ConfigError) as err:
        load_stack_config(raw, stack="mainnet")
    assert {i.path for i in err.value.issues} == {"environment", "hetzner.backups", "network.sshAllowedCidrs[0]"}
    # the very same values are an ordinary testnet stack when the stack is one (no guardrails there)
    assert load_stack_config(raw, stack="testnet").environment == "testnet"
    # and a testnet stack may not claim to be mainnet either (names, labels and inventory follow environment)
    with pytest.raises(ConfigError, match="quantapool:environment: is mainnet but the stack is testnet"):
        load_stack_config(stack_raw("mainnet"), stack="testnet")


def test_trusted_cidrs_are_checked_by_arithmetic():
    """Two quarters and a half leave no gap (refused as a union); a quarter missing leaves one, and then each
    entry is refused on its own for being wider than the mainnet limit. A testnet stack accepts all of it."""
    union = _variant(Case("u", _set("network.sshAllowedCidrs", ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"]), "", ""))
    with pytest.raises(ConfigError) as err:
        load_stack_config(union, stack="mainnet")
    assert [i.path for i in err.value.issues] == ["network.sshAllowedCidrs"]
    assert "together cover the whole IPv4 internet" in err.value.issues[0].message

    gap = _variant(Case("g", _set("network.sshAllowedCidrs", ["0.0.0.0/2", "128.0.0.0/1"]), "", ""))
    with pytest.raises(ConfigError) as err:
        load_stack_config(gap, stack="mainnet")
    assert [i.path for i in err.value.issues] == ["network.sshAllowedCidrs[0]", "network.sshAllowedCidrs[1]"]
    assert all("wider than the mainnet limit /16" in i.message for i in err.value.issues)

    for raw in (union, gap):
        raw["environment"] = "testnet"
        assert load_stack_config(raw, stack="testnet")
