"""Turn the sealed key bundle from stack config into what a key host imports.

Decryption happens here, on the operator's machine running the program; only the keystores and their
password leave it, streamed over SSH into the host's import script. The seed and deposit data never do.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import PurePosixPath

from qpool.errors import QpoolError
from qpool.keys.seal import tar_for_stream, unseal_bytes

PASSWORD_NAMES = ("password.txt", "keystore-password.txt")
HOST_PASSWORD_NAME = "keystore-password.txt"  # noqa: S105 - a file name


def host_key_tar_b64(sealed_b64: str, passphrase: str) -> str:
    """base64 tar of keystore-*.json + keystore-password.txt, from a `qpool keys seal` bundle."""
    try:
        blob = base64.b64decode(sealed_b64, validate=True)
    except (binascii.Error, ValueError):
        raise QpoolError("validatorKeys is not base64; set it with "
                         "`pulumi config set --secret validatorKeys \"$(base64 -w0 keys.sealed)\"`") from None
    files = unseal_bytes(blob, passphrase)
    keystores = {name: entry for name, entry in files.items()
                 if PurePosixPath(name).name.startswith("keystore-") and name.endswith(".json")}
    passwords = [entry for name, entry in files.items() if PurePosixPath(name).name in PASSWORD_NAMES]
    if not keystores:
        raise QpoolError("validatorKeys holds no keystore-*.json; seal the output directory of `qpool keys generate`")
    if len(passwords) != 1:
        raise QpoolError("validatorKeys must hold exactly one password.txt (the keystores' password)")
    out = {PurePosixPath(name).name: (0o600, entry[1]) for name, entry in keystores.items()}
    out[HOST_PASSWORD_NAME] = (0o600, passwords[0][1])
    return base64.b64encode(tar_for_stream(out)).decode()
