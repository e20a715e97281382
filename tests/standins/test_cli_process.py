"""Command-line behaviour of the built executables: rejected flags and start-up refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.standins.harness import Runner


@pytest.mark.parametrize("client", ["gzond", "gqrl", "beacon-chain", "validator"])
def test_unknown_flag_is_rejected(runner: Runner, client: str) -> None:
    terms = [] if client in ("gzond", "gqrl") else ["--accept-terms-of-use"]
    res = runner.run(client, *terms, "--no-such-flag", "x")
    assert res.returncode == 1
    assert "flag provided but not defined: -no-such-flag" in res.stderr


def test_gqrl_rejects_gzond_only_flag(runner: Runner) -> None:
    res = runner.run("gqrl", "--zond.requiredblocks", "1=0x00")
    assert res.returncode == 1
    assert "flag provided but not defined: -zond.requiredblocks" in res.stderr


def test_flag_of_other_client_is_rejected(runner: Runner) -> None:
    res = runner.run("beacon-chain", "--accept-terms-of-use", "--wallet-dir", "/tmp/x")
    assert res.returncode == 1
    assert "flag provided but not defined: -wallet-dir" in res.stderr


def test_engine_on_http_api_is_refused(runner: Runner, tmp_path: Path) -> None:
    res = runner.run("gzond", "--datadir", str(tmp_path / "el"), "--http", "--http.api", "zond,engine")
    assert res.returncode == 1
    assert "refusing to expose the engine API" in res.stderr


@pytest.mark.parametrize("client", ["beacon-chain", "validator"])
def test_terms_of_use_required(runner: Runner, client: str, tmp_path: Path) -> None:
    res = runner.run(client, "--datadir", str(tmp_path / "d"))
    assert res.returncode == 1
    assert "--accept-terms-of-use" in res.stderr


@pytest.mark.parametrize("flag", ["--clear-db", "--force-clear-db"])
def test_validator_refuses_clear_db(runner: Runner, flag: str, tmp_path: Path) -> None:
    res = runner.run("validator", "--accept-terms-of-use", flag, "--datadir", str(tmp_path / "v"))
    assert res.returncode == 1
    assert "refused in stand-in" in res.stderr


def test_beacon_refuses_unreadable_jwt(runner: Runner, tmp_path: Path) -> None:
    bad = tmp_path / "jwt.hex"
    bad.write_text("not-hex")
    res = runner.run("beacon-chain", "--accept-terms-of-use", "--datadir", str(tmp_path / "b"),
                     "--jwt-secret", str(bad))
    assert res.returncode == 1
    assert "JWT secret" in res.stderr


def test_init_writes_genesis_chain_id(runner: Runner, tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    genesis.write_text('{"config": {"chainId": 4242}, "alloc": {}}')
    res = runner.run("gzond", "init", "--datadir", str(tmp_path / "el"), str(genesis))
    assert res.returncode == 0, res.stderr
    assert '"chain_id": 4242' in (tmp_path / "el" / "gzond" / "standin-state.json").read_text()
    genesis.write_text("{broken")
    res = runner.run("gzond", "init", "--datadir", str(tmp_path / "el"), str(genesis))
    assert res.returncode == 1
    assert "invalid genesis file" in res.stderr
