"""`qpool keys` commands through click's CliRunner."""

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from qpool.keys.cli import keys

PASS = "cli test passphrase, long enough"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("QPOOL_KEYS_PASSPHRASE", raising=False)
    return CliRunner()


def _one_error_line(stderr: str, fragment: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], stderr


def test_generate_prints_files_but_no_secrets(standin: Path, tmp_path: Path, runner: CliRunner, guard) -> None:
    out = tmp_path / "keys"
    result = runner.invoke(
        keys, ["generate", str(out), "--num-validators", "2", "--chain-name", "betanet", "--deposit-cli", str(standin)]
    )
    assert result.exit_code == 0, result.output
    assert "generated 2 keys for betanet (index 0..1)" in result.stdout
    assert "keystore-m_12381_238_0_0_0-" in result.stdout and "keystore-m_12381_238_1_0_0-" in result.stdout
    guard.add((out / "seed.txt").read_text().strip(), "seed")
    guard.add((out / "password.txt").read_text(), "keystore password")
    guard.scan_text(result.output, "qpool keys generate output")
    guard.assert_clean()


def test_generate_without_cli_exits_2_with_one_line(tmp_path: Path, runner: CliRunner, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("QPOOL_DEPOSIT_CLI", raising=False)
    result = runner.invoke(keys, ["generate", str(tmp_path / "k"), "--num-validators", "1", "--chain-name", "betanet"])
    assert result.exit_code == 2
    _one_error_line(result.stderr, "theQRL/qrysm")


def test_seal_with_file_unseal_with_env(
    key_dir: Path, tmp_path: Path, runner: CliRunner, fast_kdf: int, monkeypatch
) -> None:
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASS + "\n")
    sealed = tmp_path / "keys.sealed"
    result = runner.invoke(keys, ["seal", str(key_dir), str(sealed), "--passphrase-file", str(pass_file)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600

    monkeypatch.setenv("QPOOL_KEYS_PASSPHRASE", PASS)
    out = tmp_path / "restored"
    result = runner.invoke(keys, ["unseal", str(sealed), str(out)])
    assert result.exit_code == 0, result.output
    assert "unsealed 4 files" in result.stdout
    assert (out / "password.txt").read_bytes() == (key_dir / "password.txt").read_bytes()
    assert stat.S_IMODE((out / "password.txt").stat().st_mode) == 0o400


def test_passphrase_file_wins_over_environment(
    key_dir: Path, tmp_path: Path, runner: CliRunner, fast_kdf: int, monkeypatch
) -> None:
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASS)
    monkeypatch.setenv("QPOOL_KEYS_PASSPHRASE", "a different passphrase entirely")
    sealed = tmp_path / "keys.sealed"
    assert runner.invoke(keys, ["seal", str(key_dir), str(sealed), "--passphrase-file", str(pass_file)]).exit_code == 0
    result = runner.invoke(keys, ["unseal", str(sealed), str(tmp_path / "out")])
    assert result.exit_code == 2
    _one_error_line(result.stderr, "wrong passphrase")
    assert not (tmp_path / "out").exists()


def test_interactive_prompt_is_hidden_and_confirmed(
    key_dir: Path, tmp_path: Path, runner: CliRunner, fast_kdf: int
) -> None:
    sealed = tmp_path / "keys.sealed"
    result = runner.invoke(keys, ["seal", str(key_dir), str(sealed)], input=f"{PASS}\n{PASS}\n")
    assert result.exit_code == 0, result.output
    assert PASS not in result.output  # hidden input is not echoed
    assert "Repeat for confirmation" in result.output

    mismatch = runner.invoke(keys, ["seal", str(key_dir), str(tmp_path / "other.sealed")], input=f"{PASS}\nnope\n")
    assert mismatch.exit_code != 0
    assert not (tmp_path / "other.sealed").exists()

    result = runner.invoke(keys, ["unseal", str(sealed), str(tmp_path / "out")], input=f"{PASS}\n")
    assert result.exit_code == 0, result.output


def test_no_plain_passphrase_argument(key_dir: Path, tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(keys, ["seal", str(key_dir), str(tmp_path / "s"), "--passphrase", PASS])
    assert result.exit_code == 2
    assert "No such option" in result.stderr
    assert not (tmp_path / "s").exists()


def test_empty_passphrase_file_is_refused(key_dir: Path, tmp_path: Path, runner: CliRunner) -> None:
    pass_file = tmp_path / "pass"
    pass_file.write_text("\n")
    result = runner.invoke(keys, ["seal", str(key_dir), str(tmp_path / "s"), "--passphrase-file", str(pass_file)])
    assert result.exit_code == 2
    _one_error_line(result.stderr, "is empty")


def test_tampered_file_exits_2(key_dir: Path, tmp_path: Path, runner: CliRunner, fast_kdf: int, monkeypatch) -> None:
    monkeypatch.setenv("QPOOL_KEYS_PASSPHRASE", PASS)
    sealed = tmp_path / "keys.sealed"
    assert runner.invoke(keys, ["seal", str(key_dir), str(sealed)]).exit_code == 0
    blob = bytearray(sealed.read_bytes())
    blob[-1] ^= 0x80
    sealed.write_bytes(bytes(blob))
    result = runner.invoke(keys, ["unseal", str(sealed), str(tmp_path / "out")])
    assert result.exit_code == 2
    _one_error_line(result.stderr, "the file was modified")
