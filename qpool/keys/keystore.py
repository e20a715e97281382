"""Read qrysm deposit-CLI keystores and check they open with the password we generated.

Why: qrysm's deposit CLI has shipped a bug where an interactively typed password was shadowed and the
keystores were encrypted with the *empty* password (``new-seed`` in theQRL/qrysm
``cmd/staking-deposit-cli/deposit/newseed/cmd.go``, the ``keystorePassword, err :=`` inside the prompt
branch). A keystore under the wrong password is discovered only when the validator host refuses to
import it — or worse, is imported by whoever guesses "". So every keystore is checked here, right after
generation, against the password we wrote to the password file.

Formats verified against theQRL/qrysm ``cmd/staking-deposit-cli/stakingdeposit/keyhandling``
(``keystore.go``, ``keystorecrypto.go``):

- decryption key ``dk = SHAKE256(password_utf8 || salt)`` read to 32 bytes (kdf ``function`` is
  ``"custom"`` upstream; the test stand-in writes ``"shake256"``; both mean this derivation);
- cipher ``aes-128-ctr`` (key ``dk[:16]``) with checksum ``sha256(dk[16:32] || cipher.message)``; or
- cipher ``aes-256-gcm`` (key ``dk``, nonce ``cipher.params.iv``) whose tag authenticates the seed.

Any other combination is refused (fail closed): we would rather stop than hand over keys whose password
we could not confirm.
"""

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qpool.keys.errors import KeysError

PUBKEY_BYTES = 2592  # Dilithium (mode 5) and ML-DSA-87 public keys alike
_SHAKE_KDFS = {"custom", "shake256"}
_HEX = re.compile(r"^(?:0x)?([0-9a-fA-F]*)$")


def _unhex(value: object, what: str, path: Path) -> bytes:
    """Decode qrysm hex, which is ``0x``-prefixed in newer releases and bare in older ones."""
    match = _HEX.match(value) if isinstance(value, str) else None
    if match is None or len(match.group(1)) % 2:
        raise KeysError(f"{path.name}: {what} is not hex")
    return bytes.fromhex(match.group(1))


def normalize_pubkey(value: object, where: str) -> str:
    """Return ``0x`` + lowercase hex of a 2592-byte public key, or raise."""
    match = _HEX.match(value) if isinstance(value, str) else None
    if match is None or len(match.group(1)) != 2 * PUBKEY_BYTES:
        raise KeysError(f"{where}: pubkey is not {PUBKEY_BYTES} bytes of hex")
    return "0x" + match.group(1).lower()


@dataclass(frozen=True)
class KeystoreInfo:
    """The public facts of one keystore file."""

    path: Path
    pubkey: str
    derivation_path: str
    index: int


def read_keystore(path: Path) -> tuple[KeystoreInfo, dict]:
    """Parse one keystore file; the raw JSON is returned for password checking."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeysError(f"{path.name}: not a readable keystore ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("crypto"), dict):
        raise KeysError(f"{path.name}: not a keystore (no crypto section)")
    derivation_path = data.get("path")
    parts = derivation_path.split("/") if isinstance(derivation_path, str) else []
    if len(parts) < 4 or parts[0] != "m" or not parts[3].isdigit():
        raise KeysError(f"{path.name}: unexpected derivation path {derivation_path!r}")
    info = KeystoreInfo(
        path=path,
        pubkey=normalize_pubkey(data.get("pubkey"), path.name),
        derivation_path=derivation_path,
        index=int(parts[3]),
    )
    return info, data


def password_opens(keystore: dict, password: str, path: Path) -> bool:
    """True if *password* opens *keystore*; KeysError if the format can't be checked at all."""
    try:
        crypto = keystore["crypto"]
        kdf, cipher, checksum = crypto["kdf"], crypto["cipher"], crypto.get("checksum") or {}
        kdf_function, cipher_function = kdf["function"], cipher["function"]
        salt = _unhex(kdf["params"]["salt"], "kdf salt", path)
        message = _unhex(cipher["message"], "cipher message", path)
        iv = _unhex(cipher["params"]["iv"], "cipher iv", path)
    except (KeyError, TypeError):
        raise KeysError(f"{path.name}: keystore crypto section is incomplete") from None
    if kdf_function not in _SHAKE_KDFS:
        raise KeysError(f"{path.name}: cannot verify keystore KDF {kdf_function!r}; refusing unverified keys")
    dk = hashlib.shake_256(password.encode("utf-8") + salt).digest(32)
    if cipher_function == "aes-128-ctr":
        if checksum.get("function") != "sha256":
            raise KeysError(f"{path.name}: cannot verify checksum {checksum.get('function')!r}")
        expected = _unhex(checksum.get("message"), "checksum", path)
        return hmac.compare_digest(hashlib.sha256(dk[16:32] + message).digest(), expected)
    if cipher_function == "aes-256-gcm":
        try:
            AESGCM(dk).decrypt(iv, message, None)
        except (InvalidTag, ValueError):
            return False
        return True
    raise KeysError(f"{path.name}: cannot verify keystore cipher {cipher_function!r}; refusing unverified keys")
