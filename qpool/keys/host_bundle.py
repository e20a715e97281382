"""Turn the sealed key bundle from stack config into what a key host imports (called by the stack wiring).

Decryption happens here, on the operator's machine running the program; only the keystores and their
password leave it, streamed over SSH into the host's import script. The seed and deposit data never do.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import PurePosixPath

from qpool.errors import QpoolError
from qpool.keys.seal import tar_for_stream, unseal_bytes

PASSWORD_NAMES = ("password.txt", "keystore-password.txt")
HOST_PASSWORD_NAME = "keystore-password.txt"  # noqa: S105 - a file name


def _pubkey(name: str, content: bytes) -> str:
    try:
        return str(json.loads(content)["pubkey"]).lower().removeprefix("0x")
    except (ValueError, KeyError, TypeError):
        raise QpoolError(f"validatorKeys: {name} is not a keystore JSON with a pubkey") from None


def _key_set(files: dict[str, tuple[int, bytes]], where: str) -> dict[str, tuple[int, bytes]]:
    keystores = {name: entry for name, entry in files.items()
                 if PurePosixPath(name).name.startswith("keystore-") and name.endswith(".json")}
    passwords = [entry for name, entry in files.items() if PurePosixPath(name).name in PASSWORD_NAMES]
    if not keystores:
        raise QpoolError(f"validatorKeys holds no keystore-*.json {where}; seal the output directory of "
                         "`qpool keys generate`")
    if len(passwords) != 1:
        raise QpoolError(f"validatorKeys must hold exactly one password.txt {where} (the keystores' password)")
    out = {PurePosixPath(name).name: (0o600, entry[1]) for name, entry in keystores.items()}
    out[HOST_PASSWORD_NAME] = (0o600, passwords[0][1])
    return out


def host_key_tars_b64(sealed_b64: str, passphrase: str, pairs: list[str]) -> dict[str, str]:
    """pair -> base64 tar (keystore-*.json + keystore-password.txt) from a `qpool keys seal` bundle.

    Each pair must get its own keys: the same key in two pairs would be two signers once both pairs are
    active. With one pair the bundle may be flat; with several it holds one directory per pair (`p1/...`),
    and no pubkey may appear in two of them.
    """
    try:
        blob = base64.b64decode(sealed_b64, validate=True)
    except (binascii.Error, ValueError):
        raise QpoolError("validatorKeys is not base64; set it with "
                         "`pulumi config set --secret validatorKeys \"$(base64 -w0 keys.sealed)\"`") from None
    files = unseal_bytes(blob, passphrase)
    by_pair: dict[str, dict[str, tuple[int, bytes]]] = {}
    flat = {n: e for n, e in files.items() if "/" not in n}
    if len(pairs) == 1 and any(PurePosixPath(n).name.startswith("keystore-") for n in flat):
        by_pair[pairs[0]] = _key_set(flat, "")
    else:
        for pair in pairs:
            members = {n.split("/", 1)[1]: e for n, e in files.items() if n.startswith(pair + "/")}
            by_pair[pair] = _key_set(members, f"in {pair}/ (one directory per validator pair)")
    owner: dict[str, str] = {}
    for pair, key_set in by_pair.items():
        for name, (_mode, content) in key_set.items():
            if name == HOST_PASSWORD_NAME:
                continue
            pubkey = _pubkey(name, content)
            if pubkey in owner and owner[pubkey] != pair:
                raise QpoolError(f"validatorKeys: the same key {pubkey[:18]}... is in pairs {owner[pubkey]} and "
                                 f"{pair}; every pair needs its own keys (two active pairs would double-sign)")
            owner[pubkey] = pair
    return {pair: base64.b64encode(tar_for_stream(key_set)).decode() for pair, key_set in by_pair.items()}
