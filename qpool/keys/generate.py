"""Generate validator keys with qrysm's deposit CLI, and leave nothing unverified behind.

What was verified, and where (theQRL/qrysm, ``cmd/staking-deposit-cli``, read through the code index;
the project pins qrysm ``dev`` of 2025-02):

- ``deposit/main.go``: a urfave/cli v2 app with subcommands ``existing-seed`` (alias ``exst-seed``),
  ``new-seed``, a withdrawal-change command and ``submit``.
- ``deposit/existingseed/cmd.go``: flags ``--seed`` (required string), ``--validator-start-index``
  (uint64, default 0), ``--num-validators`` (required uint64), ``--folder`` (default
  ``validator_keys``), ``--chain-name`` (default ``betanet``), ``--execution-address`` (required in
  later revisions). **It has no ``--keystore-password-file``**: it reads the password twice with
  ``term.ReadPassword(stdin)``, so it needs a terminal. The newest (QRL 2.0, ML-DSA-87) revision
  replaced ``--seed`` with ``--extended-seed``; that generation is refused here, not guessed at.
- ``deposit/newseed/cmd.go``: the only command with ``--keystore-password-file`` (trailing CR/LF
  trimmed); without it, one revision encrypted with the empty password (see ``keystore.py``).
- ``misc/helper.go`` + go-qrllib ``common/const.go``: the seed is ``0x`` + hex of ``SeedSize`` = 48
  bytes (``DecodeHex`` panics without the ``0x``).
- ``stakingdeposit/credential.go`` / ``credentials.go``: keystores are written to the folder as
  ``keystore-<path with / as _>-<unix time>.json`` (path ``m/12381/238/<index>/0/0``), deposit data as
  ``deposit_data-<unix time>.json`` (0440). ``stakingdeposit/generatekeys.go`` prints the seed (and in
  later revisions the mnemonic) to stdout, so the CLI's stdout is captured and never shown.
- ``contracts/deposit/deposit.go`` (Zond revision): the deposit's withdrawal credentials are the 0x00
  kind (hash of the Dilithium withdrawal key) even when ``--execution-address`` is given; later
  revisions write 0x01 + the address. So an execution address we asked for is checked in the output,
  and an output that silently ignored it is refused.
- ``config/params/mainnet_config.go``: deposit ``amount`` is ``MaxEffectiveBalance`` = 40000 * 1e9
  (40,000 QRL in the chain's 1e-9 unit); ``stakingdeposit/depositdata.go``: ``network_name`` is the
  chain name.

So: the seed comes from the OS CSPRNG (``secrets``), the password is generated and written 0600 before
the CLI runs, and it reaches the CLI through ``--keystore-password-file`` when the CLI's help lists that
flag for ``existing-seed``, otherwise through a no-echo pseudo-terminal (``tty.py``). Either way every
keystore is then checked to open with that password, the deposit data is checked against the keystores,
and on any failure the output directory is wiped: a half-made key set must never be mistaken for a
usable one. Limitation (upstream design): ``--seed`` is an argument, so the seed is visible in the
process table while the CLI runs; generate on a machine no one else is logged into.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qpool.keys.errors import KeysError
from qpool.keys.keystore import KeystoreInfo, normalize_pubkey, password_opens, read_keystore
from qpool.keys.tty import run_with_typed_lines

ENV_DEPOSIT_CLI = "QPOOL_DEPOSIT_CLI"
CLI_NAMES = ("deposit", "staking-deposit-cli")
SEED_BYTES = 48
MAX_EFFECTIVE_BALANCE = 40_000 * 10**9
PASSWORD_FILE = "password.txt"  # noqa: S105 - a file name, not a secret
SEED_FILE = "seed.txt"
DEFAULT_TIMEOUT = 900.0
_CHAIN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_ADDRESS = re.compile(r"^[ZQ][0-9a-fA-F]{40}$")
_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")
_LONG_HEX = re.compile(r"(?:0x)?[0-9a-fA-F]{32,}")
_GET_IT = (
    "build it from theQRL/qrysm (cmd/staking-deposit-cli/deposit, e.g. "
    "`go build -o deposit ./cmd/staking-deposit-cli/deposit`) and pass --deposit-cli, set "
    f"{ENV_DEPOSIT_CLI}, or put `deposit` on PATH"
)


@dataclass(frozen=True)
class GeneratedKeys:
    """A complete, verified key set in ``out_dir`` (every file 0600, the directory 0700)."""

    out_dir: Path
    keystores: tuple[Path, ...]  # ordered by validator index
    deposit_data: Path
    password_file: Path
    seed_file: Path
    pubkeys: tuple[str, ...]  # ``0x`` + hex, same order as keystores
    start_index: int
    chain_name: str

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file of the set, e.g. to seal or to stream."""
        return (*self.keystores, self.deposit_data, self.password_file, self.seed_file)


def find_deposit_cli(deposit_cli: str | None = None) -> str:
    """Locate the deposit CLI: explicit argument, then ``$QPOOL_DEPOSIT_CLI``, then PATH."""
    explicit = deposit_cli or os.environ.get(ENV_DEPOSIT_CLI)
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise KeysError(f"deposit CLI {explicit!r} is not an executable file; {_GET_IT}")
        return found
    for name in CLI_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise KeysError(f"qrysm deposit CLI not found; {_GET_IT}")


def _probe_flags(cli: str, timeout: float) -> set[str]:
    """Flags ``existing-seed`` accepts, read from its help, so we never pass one it would reject."""
    try:
        proc = subprocess.run(
            [cli, "existing-seed", "--help"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KeysError(f"cannot run deposit CLI {cli}: {exc.__class__.__name__}") from None
    flags = set(_FLAG.findall(proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")))
    if "seed" not in flags:
        if "extended-seed" in flags:
            raise KeysError(
                f"{cli} is the QRL 2.0 (ML-DSA-87) deposit CLI (--extended-seed); this qpool supports "
                "the Zond generation (--seed) only"
            )
        raise KeysError(f"{cli} does not look like qrysm's deposit CLI (no `existing-seed --seed`); {_GET_IT}")
    missing = {"num-validators", "validator-start-index", "folder", "chain-name"} - flags
    if missing:
        raise KeysError(f"{cli} existing-seed lacks flags {', '.join(sorted(missing))}; {_GET_IT}")
    return flags


def _prepare_out_dir(out_dir: Path) -> bool:
    """Create *out_dir* 0700 or accept it if empty; return whether we created it."""
    if out_dir.is_symlink():
        raise KeysError(f"{out_dir} is a symlink; refusing to write keys through it")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise KeysError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()):
            raise KeysError(f"{out_dir} is not empty; refusing to mix key sets (use a new directory)")
        out_dir.chmod(0o700)
        return False
    out_dir.mkdir(parents=True, mode=0o700)
    out_dir.chmod(0o700)
    return True


def _wipe(out_dir: Path, created: bool) -> None:
    """Remove everything generation put into *out_dir* (it was empty or absent when we started)."""
    if created:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for child in out_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _write_secret(path: Path, text: str) -> None:
    """Create a new 0600 file (never follow or reuse an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _scrub(text: str, secret_values: list[str]) -> str:
    """Make CLI error output safe to show: our secrets and any long hex (derived seeds) redacted."""
    for value in secret_values:
        text = text.replace(value, "<redacted>")
    return _LONG_HEX.sub("<hex>", text)


def _failure_line(proc: subprocess.CompletedProcess[bytes], secret_values: list[str]) -> str:
    """The last line of stderr, scrubbed; stdout is never used (the CLI prints the seed there)."""
    lines = [line.strip() for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    last = _scrub(lines[-1], secret_values) if lines else "no error output"
    return last[:200]


def _verify(
    out_dir: Path,
    *,
    num_validators: int,
    start_index: int,
    chain_name: str,
    execution_address: str | None,
    password: str,
) -> tuple[list[KeystoreInfo], Path]:
    """Check the CLI's output is exactly the key set we asked for, under our password."""
    keystore_paths = sorted(out_dir.glob("keystore-*.json"))
    if len(keystore_paths) != num_validators:
        raise KeysError(f"deposit CLI wrote {len(keystore_paths)} keystores, expected {num_validators}")
    infos: list[KeystoreInfo] = []
    for path in keystore_paths:
        info, raw = read_keystore(path)
        if not password_opens(raw, password, path):
            raise KeysError(f"{path.name} does not open with the generated password; keys discarded")
        infos.append(info)
    infos.sort(key=lambda info: info.index)
    if [info.index for info in infos] != list(range(start_index, start_index + num_validators)):
        raise KeysError(f"keystore indices {[info.index for info in infos]} do not match the request")
    if len({info.pubkey for info in infos}) != num_validators:
        raise KeysError("deposit CLI wrote duplicate public keys")

    deposit_paths = sorted(out_dir.glob("deposit_data-*.json"))
    if len(deposit_paths) != 1:
        raise KeysError(f"expected one deposit_data-*.json, found {len(deposit_paths)}")
    try:
        deposits = json.loads(deposit_paths[0].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise KeysError(f"{deposit_paths[0].name} is not valid JSON") from None
    if not isinstance(deposits, list) or len(deposits) != num_validators:
        raise KeysError(f"{deposit_paths[0].name} does not hold {num_validators} deposits")
    credentials = None
    if execution_address:
        credentials = "0x01" + "00" * 11 + execution_address[1:].lower()
    for entry in deposits:
        if not isinstance(entry, dict):
            raise KeysError(f"{deposit_paths[0].name}: malformed deposit entry")
        if entry.get("amount") != MAX_EFFECTIVE_BALANCE:
            raise KeysError(f"deposit amount {entry.get('amount')!r} is not {MAX_EFFECTIVE_BALANCE} (40,000 QRL)")
        if entry.get("network_name") != chain_name:
            raise KeysError(f"deposit data is for network {entry.get('network_name')!r}, not {chain_name!r}")
        found = entry.get("withdrawal_credentials")
        found = found.lower().removeprefix("0x") if isinstance(found, str) else ""
        if credentials and found.startswith("00"):
            raise KeysError(
                "deposit CLI ignored the execution address (its deposits carry 0x00 Dilithium-key withdrawal "
                "credentials); keys discarded: omit the execution address or use a CLI that writes 0x01"
            )
        if credentials and found != credentials[2:]:
            raise KeysError("deposit withdrawal credentials do not point at the execution address given")
    deposit_pubkeys = {normalize_pubkey(entry.get("pubkey"), deposit_paths[0].name) for entry in deposits}
    if deposit_pubkeys != {info.pubkey for info in infos}:
        raise KeysError("deposit data public keys do not match the keystores")
    return infos, deposit_paths[0]


def generate_keys(
    out_dir: Path,
    *,
    num_validators: int,
    chain_name: str,
    deposit_cli: str | None = None,
    start_index: int = 0,
    execution_address: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> GeneratedKeys:
    """Generate *num_validators* keys into *out_dir* (new or empty) with a fresh seed and password.

    Never returns placeholder keys: without the real CLI this raises ``KeysError``.
    """
    if num_validators < 1:
        raise KeysError("num_validators must be at least 1")
    if start_index < 0:
        raise KeysError("start_index must not be negative")
    if not _CHAIN.match(chain_name):
        raise KeysError(f"chain name {chain_name!r} is not valid (lowercase letters, digits, dashes)")
    if execution_address is not None and not _ADDRESS.match(execution_address):
        raise KeysError(f"execution address {execution_address!r} is not Z/Q + 40 hex digits")
    cli = find_deposit_cli(deposit_cli)
    flags = _probe_flags(cli, timeout=60.0)
    if execution_address and "execution-address" not in flags:
        raise KeysError(f"{cli} existing-seed has no --execution-address")

    out_dir = Path(out_dir).absolute()
    created = _prepare_out_dir(out_dir)
    password = secrets.token_urlsafe(32)
    seed = "0x" + secrets.token_bytes(SEED_BYTES).hex()
    secret_values = [password, seed, seed[2:]]
    try:
        password_file = out_dir / PASSWORD_FILE
        seed_file = out_dir / SEED_FILE
        _write_secret(password_file, password)
        _write_secret(seed_file, seed + "\n")
        argv = [
            cli, "existing-seed",
            "--seed", seed,
            "--num-validators", str(num_validators),
            "--validator-start-index", str(start_index),
            "--chain-name", chain_name,
            "--folder", str(out_dir),
        ]  # fmt: skip
        if execution_address:
            argv += ["--execution-address", execution_address]
        if "keystore-password-file" in flags:
            argv += ["--keystore-password-file", str(password_file)]
            try:
                proc = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, capture_output=True, cwd=out_dir, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired:
                raise KeysError(f"deposit CLI did not finish within {timeout:.0f}s; keys discarded") from None
        else:
            proc = run_with_typed_lines(argv, [password, password], cwd=out_dir, timeout=timeout)
        if proc.returncode != 0:
            raise KeysError(
                f"deposit CLI failed (exit {proc.returncode}): {_failure_line(proc, secret_values)}; keys discarded"
            )
        infos, deposit_data = _verify(
            out_dir,
            num_validators=num_validators,
            start_index=start_index,
            chain_name=chain_name,
            execution_address=execution_address,
            password=password,
        )
        keys = GeneratedKeys(
            out_dir=out_dir,
            keystores=tuple(info.path for info in infos),
            deposit_data=deposit_data,
            password_file=password_file,
            seed_file=seed_file,
            pubkeys=tuple(info.pubkey for info in infos),
            start_index=start_index,
            chain_name=chain_name,
        )
        for path in keys.files:
            path.chmod(0o600)
        out_dir.chmod(0o700)
        return keys
    except BaseException:
        _wipe(out_dir, created)
        raise
