"""Build keystores in the stand-in of qrysm's format (operator/test side; uses ``cryptography``).

Shared contract with the keys helper and the validator stand-in::

    dk       = shake_256(password_utf8 + bytes.fromhex(salt)).digest(32)
    cipher   = AES-128-CTR(key=dk[:16], iv) over a 32-byte secret
    checksum = sha256(dk[16:32] + cipher_bytes)
    pubkey   = shake_256(b"qp-standin-pubkey" + secret).digest(2592)   (Dilithium-sized, deterministic)
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PUBKEY_BYTES = 2592
SECRET_BYTES = 32


def pubkey_for_secret(secret: bytes) -> bytes:
    """Deterministic 2592-byte stand-in public key of a secret."""
    return hashlib.shake_256(b"qp-standin-pubkey" + secret).digest(PUBKEY_BYTES)


def make_keystore(password: str, secret: bytes | None = None, index: int = 0) -> dict[str, Any]:
    """A keystore dict for ``secret`` (random when None) at derivation index ``index``."""
    if secret is None:
        secret = os.urandom(SECRET_BYTES)
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret is {len(secret)} bytes, want {SECRET_BYTES}")
    if index < 0:
        raise ValueError(f"index {index} is negative: use 0 or more")
    salt = os.urandom(32)
    iv = os.urandom(16)
    dk = hashlib.shake_256(password.encode() + salt).digest(32)
    encryptor = Cipher(algorithms.AES(dk[:16]), modes.CTR(iv)).encryptor()
    cipher_bytes = encryptor.update(secret) + encryptor.finalize()
    return {
        "crypto": {
            "kdf": {"function": "shake256", "params": {"salt": salt.hex()}, "message": ""},
            "checksum": {"function": "sha256", "params": {},
                         "message": hashlib.sha256(dk[16:32] + cipher_bytes).hexdigest()},
            "cipher": {"function": "aes-128-ctr", "params": {"iv": iv.hex()}, "message": cipher_bytes.hex()},
        },
        "pubkey": pubkey_for_secret(secret).hex(),
        "path": f"m/12381/3600/{index}/0/0",
        "uuid": str(uuid.uuid4()),
        "version": 4,
    }


def decrypt_secret(keystore: dict[str, Any], password: str) -> bytes:
    """Inverse of make_keystore (checks the password first); raises ValueError on a wrong password."""
    crypto = keystore["crypto"]
    dk = hashlib.shake_256(password.encode() + bytes.fromhex(crypto["kdf"]["params"]["salt"])).digest(32)
    cipher_bytes = bytes.fromhex(crypto["cipher"]["message"])
    if hashlib.sha256(dk[16:32] + cipher_bytes).hexdigest() != crypto["checksum"]["message"]:
        raise ValueError("wrong password for keystore: checksum mismatch")
    decryptor = Cipher(algorithms.AES(dk[:16]), modes.CTR(bytes.fromhex(crypto["cipher"]["params"]["iv"]))).decryptor()
    return decryptor.update(cipher_bytes) + decryptor.finalize()
