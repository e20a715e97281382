"""Keystores and the wallet of the validator stand-in (stdlib only).

Keystores follow the project's stand-in of qrysm's format (SHAKE256 KDF, sha256 checksum over
``dk[16:32] + ciphertext``, AES-128-CTR cipher). Verifying the checksum is enough to reject a wrong
password exactly where the real client does; the secret itself is never needed because the stand-in's
signatures are hashes. The wallet (``<wallet-dir>/direct/accounts/all-accounts.keystore.json``, the path
qrysm's local keymanager uses) stores the imported public keys, encrypted under the wallet password with a
SHAKE256 keystream so that a wrong ``--wallet-password-file`` fails the start as in production.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runtime

PUBKEY_BYTES = 2592
_PATH_RE = re.compile(r"^m/12381/3600/(\d+)/0(/0)?$")


class WalletError(Exception):
    """A keystore or wallet problem; the message names the file and what to do."""


@dataclass(frozen=True)
class Account:
    """One imported validator key."""

    pubkey: str  # 0x + 5184 hex
    index: int  # derivation index: decides the attestation slot offset within an epoch


def read_password_file(path: Path, flag: str) -> str:
    """Password text from a file, trailing newline(s) removed as qrysm does."""
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise WalletError(f"could not read --{flag} {path}: {exc.strerror}") from None


def derive_key(password: str, salt_hex: str) -> bytes:
    """The stand-in KDF: shake_256(password || salt), 32 bytes."""
    return hashlib.shake_256(password.encode() + bytes.fromhex(salt_hex)).digest(32)


def _field(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            raise KeyError(".".join(keys))
        doc = doc[key]
    return doc


def load_keystore(path: Path) -> dict[str, Any]:
    """Parse and shape-check one keystore file."""
    try:
        doc = json.loads(path.read_text())
        if _field(doc, "crypto", "kdf", "function") != "shake256":
            raise WalletError(f"keystore {path}: unsupported kdf (want shake256)")
        bytes.fromhex(_field(doc, "crypto", "kdf", "params", "salt"))
        bytes.fromhex(_field(doc, "crypto", "checksum", "message"))
        bytes.fromhex(_field(doc, "crypto", "cipher", "message"))
        pubkey = bytes.fromhex(str(_field(doc, "pubkey")).removeprefix("0x"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WalletError(f"keystore {path} is not a valid keystore ({exc}): re-create it") from None
    if len(pubkey) != PUBKEY_BYTES:
        raise WalletError(f"keystore {path}: pubkey is {len(pubkey)} bytes, want {PUBKEY_BYTES}")
    return doc


def keystore_password_ok(doc: dict[str, Any], password: str) -> bool:
    """Checksum test of a keystore password (constant-time compare)."""
    crypto = doc["crypto"]
    dk = derive_key(password, crypto["kdf"]["params"]["salt"])
    digest = hashlib.sha256(dk[16:32] + bytes.fromhex(crypto["cipher"]["message"])).digest()
    return hmac.compare_digest(digest, bytes.fromhex(crypto["checksum"]["message"]))


def keystore_account(doc: dict[str, Any], fallback_index: int) -> Account:
    """Account record of a keystore (index from its derivation path when it has one)."""
    match = _PATH_RE.match(str(doc.get("path", "")))
    index = int(match.group(1)) if match else fallback_index
    return Account("0x" + str(doc["pubkey"]).removeprefix("0x").lower(), index)


def wallet_file(wallet_dir: Path) -> Path:
    """Where the local keymanager keeps its accounts."""
    return wallet_dir / "direct" / "accounts" / "all-accounts.keystore.json"


def _keystream(dk: bytes, iv: bytes, length: int) -> bytes:
    return hashlib.shake_256(dk[:16] + iv).digest(length)


def open_wallet(wallet_dir: Path, password: str) -> list[Account]:
    """Decrypt the wallet; a missing wallet or a wrong password is a WalletError."""
    path = wallet_file(wallet_dir)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise WalletError(f"no wallet found at {wallet_dir}: run 'validator accounts import' first") from None
    except (OSError, ValueError) as exc:
        raise WalletError(f"wallet {path} is unreadable ({exc}): restore it from backup") from None
    try:
        crypto = doc["crypto"]
        dk = derive_key(password, crypto["kdf"]["params"]["salt"])
        ciphertext = bytes.fromhex(crypto["cipher"]["message"])
        expected = bytes.fromhex(crypto["checksum"]["message"])
        iv = bytes.fromhex(crypto["cipher"]["params"]["iv"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WalletError(f"wallet {path} is malformed ({exc}): restore it from backup") from None
    if not hmac.compare_digest(hashlib.sha256(dk[16:32] + ciphertext).digest(), expected):
        raise WalletError(f"wrong password for wallet at {wallet_dir}: check --wallet-password-file")
    plain = bytes(a ^ b for a, b in zip(ciphertext, _keystream(dk, iv, len(ciphertext)), strict=True))
    records = json.loads(plain)["accounts"]
    return [Account(r["pubkey"], int(r["index"])) for r in records]


def save_wallet(wallet_dir: Path, password: str, accounts: list[Account]) -> None:
    """Encrypt and write the wallet atomically (mode 0600, directories 0700)."""
    salt = secrets.token_bytes(32)
    iv = secrets.token_bytes(16)
    dk = derive_key(password, salt.hex())
    plain = json.dumps({"accounts": [{"pubkey": a.pubkey, "index": a.index} for a in accounts]}).encode()
    ciphertext = bytes(a ^ b for a, b in zip(plain, _keystream(dk, iv, len(plain)), strict=True))
    doc = {
        "crypto": {
            "kdf": {"function": "shake256", "params": {"salt": salt.hex()}, "message": ""},
            "checksum": {"function": "sha256", "params": {},
                         "message": hashlib.sha256(dk[16:32] + ciphertext).hexdigest()},
            "cipher": {"function": "shake256-xor", "params": {"iv": iv.hex()}, "message": ciphertext.hex()},
        },
        "name": "all-accounts",
        "uuid": str(uuid.uuid4()),
        "version": 4,
    }
    runtime.ensure_dir(wallet_file(wallet_dir).parent)
    runtime.atomic_write(wallet_file(wallet_dir), json.dumps(doc).encode())


def keystore_files(keys_dir: Path) -> list[Path]:
    """``keystore-*.json`` files of a directory (or the file itself, as qrysm accepts)."""
    if keys_dir.is_file():
        return [keys_dir]
    if not keys_dir.is_dir():
        raise WalletError(f"--keys-dir {keys_dir} does not exist: point it at the keystore directory")
    files = sorted(keys_dir.glob("keystore-*.json"))
    if not files:
        raise WalletError(f"no keystore-*.json files in --keys-dir {keys_dir}")
    return files


def import_keystores(wallet_dir: Path, wallet_password: str, keys_dir: Path, account_password: str) -> int:
    """Verify every keystore, then merge its key into the wallet; returns how many keys were new.

    All keystores are checked before anything is written, so a wrong password imports nothing.
    """
    new_accounts: list[Account] = []
    for position, path in enumerate(keystore_files(keys_dir)):
        doc = load_keystore(path)
        if not keystore_password_ok(doc, account_password):
            raise WalletError(f"incorrect password for keystore {path}: check --account-password-file")
        new_accounts.append(keystore_account(doc, position))
    existing = open_wallet(wallet_dir, wallet_password) if wallet_file(wallet_dir).exists() else []
    known = {a.pubkey for a in existing}
    added: list[Account] = []
    for account in new_accounts:
        if account.pubkey not in known:
            known.add(account.pubkey)
            added.append(account)
    if added or not wallet_file(wallet_dir).exists():
        save_wallet(wallet_dir, wallet_password, existing + added)
    return len(added)


def delete_accounts(wallet_dir: Path, wallet_password: str, pubkeys: list[str]) -> int:
    """Remove the listed keys from the wallet (qrysm `accounts delete --delete-public-keys`); returns how many
    were removed. An empty wallet is an error, as in qrysm ("wallet is empty, no accounts to delete"); a key
    not in the wallet is an error too (qrysm's filter refuses keys it does not hold)."""
    existing = open_wallet(wallet_dir, wallet_password)
    if not existing:
        raise WalletError("wallet is empty, no accounts to delete")
    held = {a.pubkey.lower() for a in existing}
    wanted = {k.lower() if k.lower().startswith("0x") else "0x" + k.lower() for k in pubkeys if k}
    missing = sorted(wanted - {h if h.startswith("0x") else "0x" + h for h in held})
    if missing:
        raise WalletError(f"could not filter public keys for deletion: {missing[0][:14]}... is not in the wallet")
    kept = [a for a in existing if (a.pubkey.lower() if a.pubkey.lower().startswith("0x")
                                    else "0x" + a.pubkey.lower()) not in wanted]
    save_wallet(wallet_dir, wallet_password, kept)
    return len(existing) - len(kept)
