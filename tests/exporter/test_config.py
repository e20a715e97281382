"""Config validation: bad input stops the exporter with one line naming the key, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.__main__ import main
from exporter.addresses import PROFILES, format_address, parse_address
from exporter.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "exporter" / "example-config.yaml"

GOOD = {
    "profile": "gqrl",
    "rpc_url": "http://127.0.0.1:8545",
    "contracts": {
        "deposit_pool": "Q8e01Ea0bC7e337806154573A5B46Bb37F50Ea8fC",
        "stqrl": "Q7d4cA4872502a1ab02bCA855C093449aaE2bee58",
        "validator_manager": "Qd84648a8F7314652B3E98D346645415eA03cce5f",
    },
}


def with_(**changes):
    data = {**GOOD, "contracts": dict(GOOD["contracts"])}
    for key, val in changes.items():
        if key.startswith("contracts__"):
            data["contracts"][key.removeprefix("contracts__")] = val
        elif val is None:
            data.pop(key)
        else:
            data[key] = val
    return data


def errors_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.lines


def test_defaults():
    config = parse_config(GOOD)
    assert (config.listen_address, config.listen_port, config.interval_seconds) == ("0.0.0.0", 9101, 30)
    assert config.profile_info.namespace == "qrl"
    assert config.address_bytes("stqrl").hex() == "7d4ca4872502a1ab02bca855c093449aae2bee58"


def test_gzond_profile_takes_z_addresses():
    data = with_(profile="gzond", **{f"contracts__{k}": "Z" + v[1:] for k, v in GOOD["contracts"].items()})
    assert parse_config(data).profile_info.address_prefix == "Z"


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"contracts__stqrl": "Z7d4cA4872502a1ab02bCA855C093449aaE2bee58"}, "contracts.stqrl", "profile gqrl uses 'Q'"),
    ({"contracts__stqrl": "0x7d4cA4872502a1ab02bCA855C093449aaE2bee58"}, "contracts.stqrl", "40 hex"),
    ({"contracts__stqrl": "Q7d4cA4872502a1ab02bCA855C093449aaE2bee5"}, "contracts.stqrl", "40 hex"),
    ({"contracts__stqrl": "Q7d4cA4872502a1ab02bCA855C093449aaE2beeZZ"}, "contracts.stqrl", "40 hex"),
    ({"contracts__stqrl": "Q7D4cA4872502a1ab02bCA855C093449aaE2bee58"}, "contracts.stqrl", "checksum"),
    ({"contracts__stqrl": GOOD["contracts"]["deposit_pool"]}, "contracts", "distinct"),
    ({"profile": "geth"}, "profile", "'gzond' or 'gqrl'"),
    ({"rpc_url": "127.0.0.1:8545"}, "rpc_url", "http(s) URL"),
    ({"listen_address": "localhost"}, "listen_address", "IP address"),
    ({"listen_port": 70000}, "listen_port", "65535"),
    ({"rpc_retries": 1000}, "rpc_retries", "10"),
    ({"rpc_timeout_seconds": 0}, "rpc_timeout_seconds", "greater than 0"),
    ({"reorg_depth": 64, "log_max_block_range": 10, "log_max_ranges_per_cycle": 2}, "log_max_ranges_per_cycle",
     "must exceed reorg_depth"),
    ({"start_block": -1}, "start_block", "greater than or equal to 0"),
    ({"intervall_seconds": 5}, "intervall_seconds", "unknown key"),
    ({"rpc_url": None}, "rpc_url", "set exactly one of rpc_url"),
    ({"rpc_urls": ["http://127.0.0.1:8545"]}, "rpc_url", "set exactly one of rpc_url"),
    ({"rpc_url": None, "rpc_urls": ["http://a:1", "http://a:1"]}, "rpc_urls", "twice"),
    ({"rpc_url": None, "rpc_urls": ["http://a:1", "a:2"]}, "rpc_urls", "http(s) URL"),
    ({"rpc_url": None, "rpc_urls": []}, "rpc_urls", "at least 1"),
])
def test_bad_config_names_the_key(changes, key, words):
    lines = errors_of(with_(**changes))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{key}: "), lines
    assert words in lines[0], lines


def test_every_bad_key_gets_its_own_line():
    lines = errors_of(with_(rpc_url="nope", contracts__stqrl="Zdead"))
    assert [line.split(":")[0] for line in lines] == ["rpc_url", "contracts.stqrl"]


def test_profile_mismatch_reports_each_address():
    lines = errors_of(with_(profile="gzond"))
    assert [line.split(":")[0] for line in lines] == [f"contracts.{k}" for k in GOOD["contracts"]]
    assert all("profile gzond uses 'Z' addresses" in line for line in lines)


def test_main_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(with_(contracts__validator_manager="Zd84648a8F7314652B3E98D346645415eA03cce5f")))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"config {path}: contracts.validator_manager: ")


@pytest.mark.parametrize(("content", "words"), [
    (None, "cannot read"),
    ("profile: [unclosed", "invalid YAML at line 1"),
    ("- a list", "top level must be a mapping"),
])
def test_unreadable_config_exits_2(tmp_path, capsys, content, words):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_example_config_is_valid():
    assert main(["--config", str(EXAMPLE), "--check-config"]) == 0


def test_module_entry_point_reports_bad_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(with_(profile="gzond")))
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 3  # one line per bad contract address
    assert "contracts.deposit_pool: address 'Q8e01" in proc.stderr


def test_address_round_trip_per_profile():
    raw = bytes.fromhex("d84648a8f7314652b3e98d346645415ea03cce5f")
    assert format_address(raw, PROFILES["gqrl"]) == "Qd84648a8F7314652B3E98D346645415eA03cce5f"
    assert format_address(raw, PROFILES["gzond"]) == "Zd84648a8F7314652B3E98D346645415eA03cce5f"
    assert parse_address("Zd84648a8f7314652b3e98d346645415ea03cce5f", PROFILES["gzond"]) == raw
    assert parse_address("ZD84648A8F7314652B3E98D346645415EA03CCE5F", PROFILES["gzond"]) == raw
