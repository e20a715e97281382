"""Key generation through the deposit-CLI stand-in: flags, password delivery, verification, cleanup."""

import hashlib
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from qpool.keys.errors import KeysError
from qpool.keys.generate import MAX_EFFECTIVE_BALANCE, generate_keys

ADDRESS = "Z" + "Ab" * 20


def _runs(tmp_path: Path) -> list[dict]:
    log = tmp_path / "standin-argv.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(f"--{name}") + 1]


def _opens(keystore: dict, password: str) -> bool:
    """Independent re-implementation of the stand-in keystore check (SHAKE256 KDF, sha256 checksum)."""
    crypto = keystore["crypto"]
    dk = hashlib.shake_256(password.encode() + bytes.fromhex(crypto["kdf"]["params"]["salt"])).digest(32)
    digest = hashlib.sha256(dk[16:32] + bytes.fromhex(crypto["cipher"]["message"])).hexdigest()
    return digest == crypto["checksum"]["message"]


def test_generate_with_password_file(standin: Path, tmp_path: Path) -> None:
    out = tmp_path / "keys"
    keys = generate_keys(
        out, num_validators=2, chain_name="betanet", deposit_cli=str(standin), start_index=5, execution_address=ADDRESS
    )

    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in keys.files)
    for path in keys.files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert [re.sub(r"-\d+\.json$", "", p.name) for p in keys.keystores] == [
        "keystore-m_12381_238_5_0_0",
        "keystore-m_12381_238_6_0_0",
    ]
    assert re.fullmatch(r"deposit_data-\d+\.json", keys.deposit_data.name)

    seed = keys.seed_file.read_text().strip()
    password = keys.password_file.read_text()
    assert re.fullmatch(r"0x[0-9a-f]{96}", seed)
    assert len(password) >= 32 and password.strip() == password

    [run] = _runs(tmp_path)
    argv = run["argv"]
    assert argv[0] == "existing-seed"
    assert _flag(argv, "seed") == seed
    assert _flag(argv, "keystore-password-file") == str(keys.password_file)
    assert _flag(argv, "num-validators") == "2"
    assert _flag(argv, "validator-start-index") == "5"
    assert _flag(argv, "chain-name") == "betanet"
    assert _flag(argv, "folder") == str(out)
    assert _flag(argv, "execution-address") == ADDRESS
    assert run["stdin_isatty"] is False

    deposits = json.loads(keys.deposit_data.read_text())
    for path, pubkey, deposit in zip(keys.keystores, keys.pubkeys, deposits, strict=True):
        keystore = json.loads(path.read_text())
        assert _opens(keystore, password)
        assert not _opens(keystore, "")
        assert pubkey == "0x" + keystore["pubkey"] == deposit["pubkey"]
        assert deposit["amount"] == MAX_EFFECTIVE_BALANCE == 40_000 * 10**9
        assert deposit["withdrawal_credentials"] == "0x01" + "00" * 11 + ADDRESS[1:].lower()


def test_generate_types_the_password_on_a_tty_when_the_cli_has_no_password_file_flag(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_DEPOSIT_MODE", "tty")
    keys = generate_keys(tmp_path / "keys", num_validators=1, chain_name="betanet", deposit_cli=str(standin))
    [run] = _runs(tmp_path)
    assert "--keystore-password-file" not in run["argv"]
    assert run["stdin_isatty"] is True
    assert _opens(json.loads(keys.keystores[0].read_text()), keys.password_file.read_text())


def test_cli_found_through_environment_variable(standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QPOOL_DEPOSIT_CLI", str(standin))
    keys = generate_keys(tmp_path / "keys", num_validators=1, chain_name="dev")
    assert len(keys.keystores) == 1


def test_secrets_never_reach_our_output(
    standin: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], guard
) -> None:
    keys = generate_keys(tmp_path / "keys", num_validators=1, chain_name="betanet", deposit_cli=str(standin))
    out, err = capfd.readouterr()
    guard.add(keys.seed_file.read_text().strip(), "seed")
    guard.add(keys.password_file.read_text(), "keystore password")
    guard.add(keys.keystores[0].read_text(), "keystore")
    guard.scan_text(out + err, "captured stdout/stderr")
    guard.scan_text(repr(keys), "repr(GeneratedKeys)")
    guard.assert_clean()


def test_missing_cli_is_a_clear_error_and_no_keys_appear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.delenv("QPOOL_DEPOSIT_CLI", raising=False)
    with pytest.raises(KeysError, match=r"deposit CLI not found.*theQRL/qrysm") as info:
        generate_keys(tmp_path / "keys", num_validators=1, chain_name="betanet")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "keys").exists()


def test_named_cli_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(KeysError, match="not an executable"):
        generate_keys(tmp_path / "keys", num_validators=1, chain_name="betanet", deposit_cli=str(tmp_path / "nope"))
    assert not (tmp_path / "keys").exists()


def test_non_empty_out_dir_is_refused_untouched(standin: Path, tmp_path: Path) -> None:
    out = tmp_path / "keys"
    out.mkdir()
    (out / "keystore-old.json").write_text("{}")
    with pytest.raises(KeysError, match="not empty"):
        generate_keys(out, num_validators=1, chain_name="betanet", deposit_cli=str(standin))
    assert [p.name for p in out.iterdir()] == ["keystore-old.json"]
    assert _runs(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_validators": 0}, "at least 1"),
        ({"start_index": -1}, "negative"),
        ({"chain_name": "Bad Name"}, "chain name"),
        ({"execution_address": "0x" + "ab" * 20}, "execution address"),
    ],
)
def test_bad_arguments_fail_before_running_the_cli(standin: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"num_validators": 1, "chain_name": "betanet", "deposit_cli": str(standin)} | kwargs
    with pytest.raises(KeysError, match=message):
        generate_keys(tmp_path / "keys", **args)
    assert _runs(tmp_path) == []
    assert not (tmp_path / "keys").exists()


def test_cli_failure_wipes_output_and_redacts_the_seed(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guard
) -> None:
    monkeypatch.setenv("STANDIN_DEPOSIT_FAIL", "exit")
    with pytest.raises(KeysError, match=r"deposit CLI failed \(exit 1\).*keys discarded") as info:
        generate_keys(tmp_path / "keys", num_validators=1, chain_name="betanet", deposit_cli=str(standin))
    [run] = _runs(tmp_path)
    guard.add(_flag(run["argv"], "seed"), "seed")
    guard.scan_text(str(info.value), "KeysError message")
    guard.assert_clean()
    assert "<redacted>" in str(info.value)
    assert not (tmp_path / "keys").exists()


def test_keystores_under_the_wrong_password_are_discarded(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_DEPOSIT_FAIL", "empty-password")
    out = tmp_path / "keys"
    out.mkdir()
    with pytest.raises(KeysError, match="does not open with the generated password"):
        generate_keys(out, num_validators=2, chain_name="betanet", deposit_cli=str(standin))
    assert out.is_dir() and list(out.iterdir()) == []


def test_missing_keystore_is_detected(standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_DEPOSIT_FAIL", "short")
    with pytest.raises(KeysError, match="wrote 2 keystores, expected 3"):
        generate_keys(tmp_path / "keys", num_validators=3, chain_name="betanet", deposit_cli=str(standin))
    assert not (tmp_path / "keys").exists()


def test_ignored_execution_address_is_refused(standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_DEPOSIT_FAIL", "ignore-address")
    with pytest.raises(KeysError, match="ignored the execution address"):
        generate_keys(
            tmp_path / "keys",
            num_validators=1,
            chain_name="betanet",
            deposit_cli=str(standin),
            execution_address=ADDRESS,
        )
    assert not (tmp_path / "keys").exists()


def test_ml_dsa_generation_cli_is_refused(standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_DEPOSIT_FAIL", "extended")
    with pytest.raises(KeysError, match="ML-DSA-87"):
        generate_keys(tmp_path / "keys", num_validators=1, chain_name="betanet", deposit_cli=str(standin))
    assert not (tmp_path / "keys").exists()


# -- the stand-in itself enforces the interface (so the tests above would catch a wrong call) ----------


def _standin(standin: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(standin), *args], capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL, check=False
    )


def test_standin_rejects_a_call_without_the_password_file(standin: Path, tmp_path: Path) -> None:
    seed = "0x" + "11" * 48
    proc = _standin(standin, "existing-seed", "--seed", seed, "--num-validators", "1", cwd=tmp_path)
    assert proc.returncode == 2
    assert 'Incorrect Usage: Required flag "keystore-password-file" not set' in proc.stderr


def test_standin_rejects_unknown_flags_and_commands(standin: Path, tmp_path: Path) -> None:
    proc = _standin(standin, "existing-seed", "--mnemonic", "x", cwd=tmp_path)
    assert proc.returncode == 2
    assert "flag provided but not defined: -mnemonic" in proc.stderr
    assert _standin(standin, "new-mnemonic", cwd=tmp_path).returncode == 2


def test_standin_rejects_an_empty_password_file(standin: Path, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    proc = _standin(
        standin,
        "existing-seed",
        "--seed", "0x" + "11" * 48,
        "--num-validators", "1",
        "--keystore-password-file", str(tmp_path / "pw"),
        "--folder", str(tmp_path / "out"),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "empty" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_standin_in_tty_mode_needs_a_terminal(standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_DEPOSIT_MODE", "tty")
    proc = _standin(standin, "existing-seed", "--seed", "0x" + "11" * 48, "--num-validators", "1", cwd=tmp_path)
    assert proc.returncode == 1
    assert "inappropriate ioctl" in proc.stderr
    assert os.listdir(tmp_path) == ["standin-argv.jsonl"]
