"""In-process tests of the stand-ins' building blocks (no subprocesses)."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from pathlib import Path

import pytest

from lab.standins import chain, cli, jwtauth, wallet
from lab.standins.build import SHEBANG, archive_bytes, build
from lab.standins.flagsets import flags_for
from lab.standins.keystore_fixture import decrypt_secret, make_keystore
from lab.standins.slashing_db import DbError, _parse_interchange, _slashable


def test_cli_accepts_urfave_forms() -> None:
    args = cli.parse(["--datadir", "/d", "--http.port=8545", "-metrics", "--http=false", "init", "g.json"],
                     flags_for("gzond"))
    assert args.get("datadir") == "/d"
    assert args.get_int("http.port", 0) == 8545
    assert args.flag("metrics")
    assert args.has("http") and not args.flag("http")
    assert args.positional == ["init", "g.json"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--nope"], "flag provided but not defined: -nope"),
    (["--datadir"], "flag needs an argument: -datadir"),
    (["--http=maybe"], 'invalid boolean value "maybe" for -http: parse error'),
])
def test_cli_errors_match_urfave(argv: list[str], message: str) -> None:
    with pytest.raises(cli.UsageError, match=message):
        cli.parse(argv, flags_for("gzond"))


def test_gqrl_flag_differences() -> None:
    gqrl = flags_for("gqrl")
    assert "usb" not in gqrl and "qrl.requiredblocks" in gqrl and "zond.requiredblocks" not in gqrl
    assert "rpc.qrvmtimeout" in gqrl and "qrlstats" in gqrl
    assert "zondstats" in flags_for("gzond")


def test_client_flag_tables_are_distinct() -> None:
    assert "jwt-secret" in flags_for("beacon-chain") and "jwt-secret" not in flags_for("validator")
    assert "keys-dir" in flags_for("validator") and "keys-dir" not in flags_for("beacon-chain")
    assert flags_for("validator")["accept-terms-of-use"] == "bool"


def test_jwt_roundtrip_and_rejections() -> None:
    secret = bytes(range(32))
    token = jwtauth.make_token(secret, iat=1000)
    assert jwtauth.check_token(token, secret, now=1030) is None
    assert jwtauth.check_token(token, secret, now=1061) == "stale token"
    assert jwtauth.check_token(token, bytes(32), now=1000) == "signature invalid"
    assert jwtauth.check_token("abc", secret) == "malformed token"


def test_jwt_secret_parsing(tmp_path: Path) -> None:
    path = tmp_path / "jwt"
    path.write_text("0x" + "ab" * 32 + "\n")
    assert jwtauth.load_secret(path) == bytes.fromhex("ab" * 32)
    path.write_text("abcd")
    with pytest.raises(jwtauth.JwtSecretError, match="want 32"):
        jwtauth.load_secret(path)
    with pytest.raises(jwtauth.JwtSecretError, match="does not exist"):
        jwtauth.load_secret(tmp_path / "missing")


def test_clock_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(chain.ENV_GENESIS_TIME, "1000")
    monkeypatch.setenv(chain.ENV_SLOT_SECONDS, "2")
    monkeypatch.setenv(chain.ENV_SLOTS_PER_EPOCH, "8")
    clock = chain.Clock.from_env()
    assert clock.slot_at(999) == 0
    assert clock.slot_at(1000 + 2 * 17 + 1) == 17
    assert clock.epoch_of(17) == 2
    monkeypatch.setenv(chain.ENV_SLOT_SECONDS, "fast")
    with pytest.raises(chain.ConfigError, match="QP_STANDIN_SLOT_SECONDS"):
        chain.Clock.from_env()


def test_gvr_depends_on_genesis_time_only() -> None:
    assert chain.genesis_validators_root(5) == chain.genesis_validators_root(5)
    assert chain.genesis_validators_root(5) != chain.genesis_validators_root(6)
    assert len(chain.genesis_validators_root(5)) == 66


@pytest.mark.parametrize(("history", "new", "refused"), [
    ([], (4, 5), False),
    ([(4, 5)], (5, 6), False),
    ([(4, 5)], (4, 5), True),  # same target: double vote
    ([(4, 7)], (5, 6), True),  # lower target than signed
    ([(3, 4)], (2, 5), True),  # surrounds (3,4)
    ([(3, 4)], (1, 9), True),
    ([(5, 6)], (4, 9), True),  # source below the lowest signed source (and surrounding)
])
def test_slashing_rules(history: list[tuple[int, int]], new: tuple[int, int], refused: bool) -> None:
    assert (_slashable(history, *new) is not None) is refused


def test_keystore_fixture_matches_validator_check() -> None:
    secret = bytes(range(32))
    ks = make_keystore("pw", secret=secret, index=3)
    assert wallet.keystore_password_ok(ks, "pw")
    assert not wallet.keystore_password_ok(ks, "wrong")
    assert decrypt_secret(ks, "pw") == secret
    assert len(bytes.fromhex(ks["pubkey"])) == 2592
    assert make_keystore("other", secret=secret)["pubkey"] == ks["pubkey"]
    assert wallet.keystore_account(ks, 0).index == 3


def test_wallet_import_is_idempotent_and_password_protected(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    for i in range(2):
        (keys / f"keystore-{i}.json").write_text(json.dumps(make_keystore("acc", index=i)))
    assert wallet.import_keystores(tmp_path / "w", "wpw", keys, "acc") == 2
    assert wallet.import_keystores(tmp_path / "w", "wpw", keys, "acc") == 0
    assert len(wallet.open_wallet(tmp_path / "w", "wpw")) == 2
    with pytest.raises(wallet.WalletError, match="wrong password for wallet"):
        wallet.open_wallet(tmp_path / "w", "nope")
    with pytest.raises(wallet.WalletError, match="incorrect password for keystore"):
        wallet.import_keystores(tmp_path / "w", "wpw", keys, "bad")


def test_build_is_reproducible_and_executable(tmp_path: Path) -> None:
    assert archive_bytes("gzond") == archive_bytes("gzond")
    assert archive_bytes("gzond") != archive_bytes("gqrl")
    built = build(tmp_path)
    assert set(built) == {"gzond", "gqrl", "beacon-chain", "validator"}
    for path in built.values():
        assert path.read_bytes().startswith(SHEBANG)
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
    digest = hashlib.sha256(built["validator"].read_bytes()).hexdigest()
    assert digest == hashlib.sha256(archive_bytes("validator")).hexdigest()


def test_executables_need_only_the_stdlib(tmp_path: Path) -> None:
    """-I -S: no site-packages, no user paths — what a minimal lab host has."""
    built = build(tmp_path)
    for client, path in built.items():
        res = subprocess.run(["/usr/bin/python3", "-I", "-S", str(path), "--help"], capture_output=True,
                             text=True, timeout=30, check=False)
        assert res.returncode == 0, (client, res.stderr)
        assert "stand-in" in res.stdout


@pytest.mark.parametrize(("data", "message"), [
    ([{"pubkey": "0x1234"}], "valid pubkey"),
    ([{"pubkey": "0x" + "cd" * 2592, "signed_blocks": {"slot": "1"}}], "must be a list of objects"),
    ([{"pubkey": "0x" + "cd" * 2592, "signed_attestations": [{"source_epoch": 1, "target_epoch": "2"}]}],
     "decimal string"),
    ([{"pubkey": "0x" + "cd" * 2592, "signed_attestations": [{"source_epoch": "3", "target_epoch": "2"}]}],
     "source_epoch 3 > target_epoch 2"),
    ([{"pubkey": "0x" + "cd" * 2592,
       "signed_attestations": [{"source_epoch": "1", "target_epoch": "2", "signing_root": "0x12"}]}],
     "invalid signing_root"),
])
def test_interchange_validation(data: list, message: str) -> None:
    gvr = "0x" + "ab" * 32
    doc = {"metadata": {"interchange_format_version": "5", "genesis_validators_root": gvr}, "data": data}
    with pytest.raises(DbError, match=message):
        _parse_interchange(doc, gvr)


def test_a_second_release_differs_and_reports_its_name(tmp_path: Path) -> None:
    """Issue 11: the lab mirror serves a second build so a test can bump pins (other bytes, other sha256)."""
    from lab.standins.build import build_release

    first = build(tmp_path)
    second = build_release(tmp_path, "lab2")
    for client, path in second.items():
        assert path == tmp_path / "lab2" / client
        assert path.read_bytes() != first[client].read_bytes()
        assert archive_bytes(client, "lab2") == path.read_bytes(), "reproducible per release"
    out = subprocess.run(["/usr/bin/python3", "-I", "-S", str(second["gzond"]), "version"], capture_output=True,
                         text=True, timeout=30, check=False).stdout
    assert "+lab2" in out
    plain = subprocess.run(["/usr/bin/python3", "-I", "-S", str(first["gzond"]), "version"], capture_output=True,
                           text=True, timeout=30, check=False).stdout
    assert "+" not in plain
    with pytest.raises(ValueError, match="stand-in release"):
        build_release(tmp_path, "../evil")


def test_lab_overlay_pins_a_bumped_release_from_the_mirror(tmp_path: Path) -> None:
    """A stack file whose pin names a release on the mirror gets that build; anything else the default."""
    import copy

    from lab import overlay
    from lab.standins.build import build_release
    from qpool.stacks import load_stack

    artifacts = build(tmp_path)
    second = build_release(tmp_path, "lab2")
    loaded = load_stack("testnet")
    raw = copy.deepcopy(loaded.raw)
    raw["clients"]["beacon"]["version"] = "lab2"
    raw["clients"]["validator"]["version"] = "../lab2"  # not a release name: the default build
    out = overlay.lab_raw_config(raw, loaded.config, "http://m:1", artifacts, {})["clients"]
    assert out["beacon"] == {"version": "lab2", "url": "http://m:1/lab2/beacon-chain",
                             "sha256": hashlib.sha256(second["beacon-chain"].read_bytes()).hexdigest()}
    assert out["validator"]["version"] == "lab" and out["validator"]["url"] == "http://m:1/validator"
    assert out["execution"]["version"] == "lab"
