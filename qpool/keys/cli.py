"""``qpool keys``: generate validator keys, seal them for storage, unseal them for use.

The passphrase never comes from a plain argument (it would sit in shell history and the process table):
``--passphrase-file``, then ``$QPOOL_KEYS_PASSPHRASE``, then a hidden prompt (confirmed when sealing,
where a typo would lock the keys away for good).
"""

import os
from pathlib import Path
from typing import NoReturn

import click

from core.config import KEYS_PASSPHRASE_ENV
from qpool.errors import QpoolError
from qpool.keys import seal as seal_mod
from qpool.keys.errors import SealError
from qpool.keys.generate import generate_keys

ENV_PASSPHRASE = KEYS_PASSPHRASE_ENV
_passphrase_file_option = click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"File holding the passphrase (else ${ENV_PASSPHRASE}, else a hidden prompt).",
)


def _fail(exc: QpoolError) -> NoReturn:
    """One line on stderr and the operator-error exit code; no traceback."""
    click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(getattr(exc, "exit_code", 2))


def _passphrase(passphrase_file: Path | None, *, confirm: bool) -> str:
    """Resolve the passphrase from file, environment or prompt, in that order."""
    if passphrase_file is not None:
        text = passphrase_file.read_text(encoding="utf-8")
        text = text[:-1] if text.endswith("\n") else text
        text = text[:-1] if text.endswith("\r") else text
        if not text:
            raise SealError(f"passphrase file {passphrase_file} is empty")
        return text
    from_env = os.environ.get(ENV_PASSPHRASE)
    if from_env:
        return from_env
    return click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)


def _short(pubkey: str) -> str:
    return f"{pubkey[:18]}…{pubkey[-8:]}"


@click.group("keys")
def keys() -> None:
    """Validator keys: generate with qrysm's deposit CLI, seal at rest, unseal for use."""


@keys.command("generate")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--num-validators", type=click.IntRange(min=1), required=True, help="How many keys.")
@click.option("--chain-name", required=True, help="Deposit CLI chain name (e.g. betanet, testnet).")
@click.option(
    "--start-index",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of the first key in the derivation path (m/12381/238/<index>/...).",
)
@click.option("--execution-address", default=None, help="Withdrawal address (Z… or Q… + 40 hex).")
@click.option("--deposit-cli", default=None, help="Path to qrysm's deposit CLI (else $QPOOL_DEPOSIT_CLI or PATH).")
def generate(
    out_dir: Path,
    num_validators: int,
    chain_name: str,
    start_index: int,
    execution_address: str | None,
    deposit_cli: str | None,
) -> None:
    """Generate keys into OUT_DIR (new or empty) with a fresh seed and password."""
    try:
        result = generate_keys(
            out_dir,
            num_validators=num_validators,
            chain_name=chain_name,
            deposit_cli=deposit_cli,
            start_index=start_index,
            execution_address=execution_address,
        )
    except QpoolError as exc:
        _fail(exc)
    last = result.start_index + len(result.keystores) - 1
    click.echo(f"generated {len(result.keystores)} keys for {result.chain_name} (index {result.start_index}..{last})")
    for path, pubkey in zip(result.keystores, result.pubkeys, strict=True):
        click.echo(f"  {path.name}  {_short(pubkey)}")
    click.echo(f"deposit data: {result.deposit_data}")
    click.echo(f"keystore password: {result.password_file}")
    click.echo(f"seed: {result.seed_file}")
    click.echo(f"seal before the keys leave this machine: qpool keys seal {result.out_dir} <file>")


@keys.command("seal")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@_passphrase_file_option
@click.option("--overwrite", is_flag=True, help="Replace DEST if it exists.")
def seal(src: Path, dest: Path, passphrase_file: Path | None, overwrite: bool) -> None:
    """Seal the key directory SRC into the encrypted file DEST (0600)."""
    try:
        passphrase = _passphrase(passphrase_file, confirm=True)
        seal_mod.seal_dir_to_file(src, dest, passphrase, kdf_n=seal_mod.DEFAULT_KDF_N, overwrite=overwrite)
    except QpoolError as exc:
        _fail(exc)
    click.echo(f"sealed {src} into {dest}")


@keys.command("unseal")
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest_dir", type=click.Path(file_okay=False, path_type=Path))
@_passphrase_file_option
def unseal(src: Path, dest_dir: Path, passphrase_file: Path | None) -> None:
    """Open the sealed file SRC into DEST_DIR (new or empty; 0700)."""
    try:
        passphrase = _passphrase(passphrase_file, confirm=False)
        written = seal_mod.unseal_file_to_dir(src, dest_dir, passphrase, min_kdf_n=seal_mod.MIN_KDF_N)
    except QpoolError as exc:
        _fail(exc)
    click.echo(f"unsealed {len(written)} files into {dest_dir}")
