#!/usr/bin/env python3
"""Test stand-in for qrysm's ``deposit`` CLI (``existing-seed`` only). NOT a key generator.

It checks its arguments the way the real urfave/cli app would (unknown flag, missing required flag →
"Incorrect Usage" and exit 2) and writes files shaped like the real ones, with fake crypto:

- ``keystore-m_12381_238_<i>_0_0-<unix time>.json`` (naming from qrysm ``stakingdeposit/credential.go``)
  holding ``{"crypto": {kdf shake256(password || salt), checksum sha256(dk[16:32] || cipher),
  cipher aes-128-ctr(dk[:16], iv) of a 32-byte secret derived from seed and path}, "pubkey":
  shake256(secret) as 2592 bytes, "path", "uuid", "version": 4}``;
- ``deposit_data-<unix time>.json``: a list of ``pubkey``, ``amount`` (40000 * 1e9), ``withdrawal_
  credentials``, ``deposit_data_root``, ``signature``, ``message_root``, ``fork_version``,
  ``network_name``, ``deposit_cli_version`` (field names from qrysm ``stakingdeposit/depositdata.go``);
- the seed on stdout, as the real ``GenerateKeys`` prints it (the wrapper must swallow it).

Environment knobs for tests:
- ``STANDIN_DEPOSIT_MODE``: ``file`` (default: ``--keystore-password-file`` defined and required) or
  ``tty`` (upstream behaviour: no such flag; the password is read twice from stdin, which must be a tty).
- ``STANDIN_DEPOSIT_FAIL``: ``exit`` (die with the seed in stderr), ``empty-password`` (encrypt with ""
  like the upstream bug), ``short`` (write one keystore too few), ``extended`` (pretend to be the
  ML-DSA-87 generation with ``--extended-seed``), ``ignore-address`` (0x00 withdrawal credentials even
  with ``--execution-address``, as the Zond-era qrysm does).
- ``STANDIN_DEPOSIT_ARGV_LOG``: append one JSON line per run (argv, whether stdin was a tty).

Needs the ``cryptography`` package (tests put the venv's python first on PATH).
"""

import hashlib
import json
import os
import re
import sys
import time
import uuid

APP = "deposit"
AMOUNT = 40_000 * 10**9
PUBKEY_BYTES = 2592
SIGNATURE_BYTES = 4595
# betanet/mainnet/dev from qrysm cmd/staking-deposit-cli/config/config.go; "testnet" is stand-in only.
FORK_VERSIONS = {"betanet": "0x20000089", "mainnet": "0x00000000", "dev": "0x10000000", "testnet": "0x20000090"}


def usage_error(message: str) -> None:
    sys.stderr.write(f"Incorrect Usage: {message}\n\n")
    sys.stderr.write(f"NAME:\n   {APP} existing-seed\n\nUSAGE:\n   {APP} existing-seed [command options]\n")
    sys.exit(2)


def fatal(message: str, code: int = 1) -> None:
    sys.stderr.write(f'level=fatal msg="Could not generate using an existing seed" error="{message}"\n')
    sys.exit(code)


def flag_spec(mode: str, fail: str) -> dict[str, bool]:
    """Flag name → required."""
    seed_flag = "extended-seed" if fail == "extended" else "seed"
    spec = {
        seed_flag: True,
        "validator-start-index": False,
        "num-validators": True,
        "folder": False,
        "chain-name": False,
        "execution-address": False,
    }
    if mode == "file":
        spec["keystore-password-file"] = True
    return spec


def print_help(spec: dict[str, bool]) -> None:
    print(f"NAME:\n   {APP} existing-seed\n\nUSAGE:\n   {APP} existing-seed [command options]\n\nOPTIONS:")
    for name in spec:
        print(f"   --{name} value")
    print("   --help, -h  show help")


def parse(args: list[str], spec: dict[str, bool]) -> dict[str, str]:
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            usage_error(f"unexpected argument {arg!r}")
        name = arg.lstrip("-")
        value = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in ("help", "h"):
            print_help(spec)
            sys.exit(0)
        if name not in spec:
            usage_error(f"flag provided but not defined: -{name}")
        if value is None:
            i += 1
            if i >= len(args):
                usage_error(f"flag needs an argument: -{name}")
            value = args[i]
        values[name] = value
        i += 1
    missing = [name for name, required in spec.items() if required and name not in values]
    if missing:
        usage_error(f'Required flag{"s" if len(missing) > 1 else ""} "{", ".join(missing)}" not set')
    return values


def read_tty_password() -> str:
    if not os.isatty(0):
        fatal("inappropriate ioctl for device")
    print("Create a password that secures your validator keystore(s).", flush=True)
    first = sys.stdin.readline().rstrip("\r\n")
    print("Re-enter password ", flush=True)
    second = sys.stdin.readline().rstrip("\r\n")
    if first != second:
        fatal("password mismatch")
    return first


def encrypt_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        fatal("stand-in needs the `cryptography` package on this python3")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def keystore(secret: bytes, password: str, path: str) -> dict:
    salt = os.urandom(32)
    iv = os.urandom(16)
    dk = hashlib.shake_256(password.encode("utf-8") + salt).digest(32)
    cipher = encrypt_ctr(dk[:16], iv, secret)
    return {
        "crypto": {
            "kdf": {"function": "shake256", "params": {"salt": salt.hex()}, "message": ""},
            "checksum": {"function": "sha256", "params": {}, "message": hashlib.sha256(dk[16:32] + cipher).hexdigest()},
            "cipher": {"function": "aes-128-ctr", "params": {"iv": iv.hex()}, "message": cipher.hex()},
        },
        "pubkey": hashlib.shake_256(secret).digest(PUBKEY_BYTES).hex(),
        "path": path,
        "uuid": str(uuid.uuid4()),
        "version": 4,
    }


def write_readonly(path: str, data: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.chmod(path, 0o440)


def main(argv: list[str]) -> None:
    mode = os.environ.get("STANDIN_DEPOSIT_MODE", "file")
    fail = os.environ.get("STANDIN_DEPOSIT_FAIL", "")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(f"NAME:\n   {APP}\n\nCOMMANDS:\n   existing-seed, exst-seed\n   new-seed\n   submit")
        sys.exit(0)
    if argv[0] not in ("existing-seed", "exst-seed"):
        usage_error(f"No help topic for '{argv[0]}'")
    spec = flag_spec(mode, fail)
    values = parse(argv[1:], spec)
    log = os.environ.get("STANDIN_DEPOSIT_ARGV_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"argv": argv, "stdin_isatty": os.isatty(0)}) + "\n")

    seed = values["seed"]
    if not re.fullmatch(r"0x[0-9a-f]{96}", seed):
        fatal(f"invalid seed size or prefix: {seed}")
    if fail == "exit":
        fatal(f"panic: cannot derive key from seed {seed}")
    chain = values.get("chain-name", "betanet")
    if chain not in FORK_VERSIONS:
        fatal(f"cannot find chain settings for {chain}")
    try:
        count = int(values["num-validators"])
        start = int(values.get("validator-start-index", "0"))
    except ValueError:
        usage_error("invalid value for a uint64 flag")
    address = values.get("execution-address", "")
    if address and not re.fullmatch(r"[ZQ][0-9a-fA-F]{40}", address):
        fatal(f"invalid address {address}")

    if mode == "file":
        password_file = values["keystore-password-file"]
        if not os.path.isfile(password_file):
            fatal(f"could not read file as bytes: open {password_file}: no such file or directory")
        with open(password_file, encoding="utf-8") as handle:
            password = handle.read().rstrip("\r\n")
        if not password:
            fatal("keystore password file is empty")
    else:
        password = read_tty_password()
    if fail == "empty-password":
        password = ""

    folder = values.get("folder", "validator_keys")
    os.makedirs(folder, mode=0o775, exist_ok=True)
    stamp = int(time.time())
    seed_bytes = bytes.fromhex(seed[2:])
    deposits = []
    made = count - 1 if fail == "short" else count
    for index in range(start, start + made):
        path = f"m/12381/238/{index}/0/0"
        secret = hashlib.shake_256(seed_bytes + path.encode()).digest(32)
        data = keystore(secret, password, path)
        write_readonly(os.path.join(folder, f"keystore-{path.replace('/', '_')}-{stamp}.json"), json.dumps(data))
        if address and fail != "ignore-address":
            credentials = "0x01" + "00" * 11 + address[1:].lower()
        else:
            withdrawal_secret = hashlib.shake_256(seed_bytes + path[:-2].encode()).digest(32)
            withdrawal_pk = hashlib.shake_256(withdrawal_secret).digest(PUBKEY_BYTES)
            credentials = "0x00" + hashlib.sha256(withdrawal_pk).hexdigest()[2:]
        pubkey = "0x" + data["pubkey"]
        message_root = hashlib.sha256(f"{pubkey}{credentials}{AMOUNT}".encode()).hexdigest()
        signature = hashlib.shake_256(b"sig" + secret + bytes.fromhex(message_root)).digest(SIGNATURE_BYTES).hex()
        deposits.append(
            {
                "pubkey": pubkey,
                "amount": AMOUNT,
                "withdrawal_credentials": credentials,
                "deposit_data_root": "0x" + hashlib.sha256(bytes.fromhex(message_root + signature)).hexdigest(),
                "signature": "0x" + signature,
                "message_root": "0x" + message_root,
                "fork_version": FORK_VERSIONS[chain],
                "network_name": chain,
                "deposit_cli_version": "",
            }
        )
    write_readonly(os.path.join(folder, f"deposit_data-{stamp}.json"), json.dumps(deposits))
    print("Please note down your Dilithium seed: ", seed)


if __name__ == "__main__":
    main(sys.argv[1:])
