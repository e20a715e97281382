"""What a lab keeps between program runs, as Pulumi keeps state: the same inputs for unchanged resources.

Pulumi generates random values (JWT secrets, passwords, the backup-shipping keys) once and keeps them in the
stack's state; a later `pulumi up` reuses them, so nothing that depends on them changes. The lab's program
runs under mocks, so it has no such state: without this module every run would see new random values and
a `qpool lab apply` would re-run every secret step. Here every generated value is derived from a per-lab seed
(HMAC(seed, resource name)), and what cannot be derived (the deploy key, the lab's sealed validator keys and
their passphrase) is persisted. Every file here is 0600 under the lab's state dir, never in the repo.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lab.standins.keystore_fixture import decrypt_secret, make_keystore
from qpool.keys.seal import seal_files

SEED_FILE = "lab-seed"
DEPLOY_KEY_FILE = "deploy_ed25519"
#: The lab's operator (a human's own key in production): logs in as the admin user with full sudo; the lab and
#: its tests inspect hosts with it, while the program's steps and qpool use the deploy key (sudo: qp-* only).
OPERATOR_KEY_FILE = "operator_ed25519"
SECRETS_FILE = "lab-secrets.json"
APPLIED_FILE = "applied.json"
KEYS_FILE = "lab-keys.json"
#: Stack secrets a lab adds beyond the validator keys (e.g. heartbeatWebhookUrl pointing at a sink on the
#: bridge, tests/lab_e2e/test_monitoring_config.py); read on every program run of the lab, so `lab apply`
#: delivers a value set after `lab up`.
EXTRA_SECRETS_FILE = "lab-extra-secrets.json"
#: Serialises the read-modify-write of state files: the program's mocks call in from several threads.
_STATE_LOCK = threading.RLock()


def write_private(path: Path, data: bytes | str) -> None:
    """Write a file readable by its owner only (0600 from creation: no window where it is world-readable)."""
    raw = data.encode() if isinstance(data, str) else data
    # mkstemp: a unique name per call (the program's mocks call in from several threads) and mode 0600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw)
    os.replace(tmp, path)


class LabState:
    """The persisted, secret part of one lab's state (seed, deploy key, validator keys) in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    # -- seed and derived values -----------------------------------------------------------------------

    @property
    def seed(self) -> bytes:
        # Created once under a lock: concurrent first reads must never create two different seeds.
        with _STATE_LOCK:
            path = self.state_dir / SEED_FILE
            if not path.exists():
                write_private(path, secrets.token_bytes(32))
            return path.read_bytes()

    def derive(self, purpose: str, name: str, length: int) -> bytes:
        """``length`` bytes that depend only on the seed, the purpose and the resource name."""
        out = b""
        counter = 0
        while len(out) < length:
            out += hmac.new(self.seed, f"{purpose}\0{name}\0{counter}".encode(), hashlib.sha256).digest()
            counter += 1
        return out[:length]

    def digest(self, value: Any) -> str:
        """A keyed digest of an input value for the applied-run record: equal values compare equal, and a
        low-entropy secret cannot be guessed from the record without the seed."""
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(self.seed, text.encode(), hashlib.sha256).hexdigest()

    def ed25519_openssh(self, name: str) -> tuple[str, str]:
        """(OpenSSH private key text, public key line) of a generated Ed25519 key, derived from the seed.

        The text is kept once written: OpenSSH's private-key format carries a random check number, so
        serialising the same key twice gives different text (and a spurious diff on every step using it)."""
        with _STATE_LOCK:  # concurrent first uses of two keys must not drop one of them from the file
            path = self.state_dir / KEYS_FILE
            keys: dict[str, list[str]] = json.loads(path.read_text()) if path.exists() else {}
            if name not in keys:
                key = Ed25519PrivateKey.from_private_bytes(self.derive("ed25519", name, 32))
                keys[name] = [key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                serialization.NoEncryption()).decode(),
                              key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                            serialization.PublicFormat.OpenSSH).decode()]
                write_private(path, json.dumps(keys, indent=1) + "\n")
            return keys[name][0], keys[name][1]

    # -- deploy key --------------------------------------------------------------------------------------

    @property
    def deploy_key_path(self) -> Path:
        return self.state_dir / DEPLOY_KEY_FILE

    def deploy_key(self) -> tuple[str, str]:
        """The lab's deploy key (OpenSSH private key text, public key line): created once, then read back
        verbatim (hosts trust it through their user-data; the text is an input of every SSH step)."""
        return self._generated_key(self.deploy_key_path)

    @property
    def operator_key_path(self) -> Path:
        return self.state_dir / OPERATOR_KEY_FILE

    def operator_key(self) -> tuple[str, str]:
        """The lab operator's key (in the lab stack's operatorSshKeys): created once, then read back."""
        return self._generated_key(self.operator_key_path)

    @staticmethod
    def _generated_key(path: Path) -> tuple[str, str]:
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                  serialization.NoEncryption()))
        text = path.read_text()
        loaded = serialization.load_ssh_private_key(text.encode(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 key")
        return text, loaded.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                      serialization.PublicFormat.OpenSSH).decode()

    # -- validator keys (the stack's validatorKeys / validatorKeysPassphrase secrets) --------------------

    def lab_secrets(self, pairs: list[str]) -> dict[str, str]:
        """The sealed stand-in keys for these pairs. A pair's keys, once generated, never change: a pair added
        later gets new keys of its own and the bundle is resealed, so existing pairs import the same keys."""
        path = self.state_dir / SECRETS_FILE
        doc: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"keys": {}}
        keys: dict[str, dict[str, str]] = doc["keys"]
        missing = [p for p in pairs if p not in keys]
        for pair in missing:
            keys[pair] = _pair_keys()
        if missing or doc.get("pairs") != pairs or "sealed" not in doc:
            files: dict[str, tuple[int, bytes]] = {}
            prefix = len(pairs) > 1
            for pair in pairs:
                for name, content in keys[pair].items():
                    files[f"{pair}/{name}" if prefix else name] = (0o600, base64.b64decode(content))
            passphrase = doc.get("passphrase") or secrets.token_urlsafe(24)
            doc.update({"pairs": pairs, "passphrase": passphrase, "sealed": {
                "validatorKeys": base64.b64encode(seal_files(files, passphrase)).decode(),
                "validatorKeysPassphrase": passphrase}})
            write_private(path, json.dumps(doc, indent=2) + "\n")
        return dict(doc["sealed"])

    def move_key(self, pubkey: str, from_pair: str, to_pair: str) -> str:
        """Move one validator key from one pair's set to another's in the lab's bundle, as an operator moves a
        keystore between pair directories of `validatorKeys` (re-encrypted under the receiving pair's
        password: a pair's directory carries one password). The next program run reseals the bundle under
        the same passphrase. Returns the keystore's new file name. For the key-moved fault-matrix row."""
        with _STATE_LOCK:
            path = self.state_dir / SECRETS_FILE
            doc: dict[str, Any] = json.loads(path.read_text())
            keys: dict[str, dict[str, str]] = doc["keys"]
            src, dst = keys[from_pair], keys[to_pair]
            want = pubkey.lower().removeprefix("0x")
            found = [name for name, content in src.items() if name.startswith("keystore-")
                     and json.loads(base64.b64decode(content))["pubkey"].lower().removeprefix("0x") == want]
            if len(found) != 1:
                raise KeyError(f"{pubkey[:14]}... is not one of pair {from_pair}'s keys")
            keystore = json.loads(base64.b64decode(src.pop(found[0])))
            secret = decrypt_secret(keystore, base64.b64decode(src["password.txt"]).decode())
            index = int(keystore["path"].split("/")[3])
            moved = make_keystore(base64.b64decode(dst["password.txt"]).decode(), secret=secret, index=index)
            name = f"keystore-m_12381_238_{index}_0_0-moved-{int(time.time())}.json"
            dst[name] = base64.b64encode(json.dumps(moved).encode()).decode()
            doc.pop("sealed", None)  # resealed (same passphrase) by the next lab_secrets()
            write_private(path, json.dumps(doc, indent=2) + "\n")
            return name

    def pair_pubkeys(self, pair: str) -> list[str]:
        """The public keys (0x, lower case) of a pair's keys in the lab's bundle."""
        doc = json.loads((self.state_dir / SECRETS_FILE).read_text())
        return sorted("0x" + json.loads(base64.b64decode(c))["pubkey"].lower().removeprefix("0x")
                      for n, c in doc["keys"][pair].items() if n.startswith("keystore-"))

    def extra_secrets(self) -> dict[str, str]:
        path = self.state_dir / EXTRA_SECRETS_FILE
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def set_extra_secrets(self, values: dict[str, str]) -> None:
        write_private(self.state_dir / EXTRA_SECRETS_FILE, json.dumps(values, indent=2, sort_keys=True) + "\n")

    # -- the last applied run ------------------------------------------------------------------------------

    def load_applied(self) -> list[dict[str, Any]] | None:
        path = self.state_dir / APPLIED_FILE
        if not path.exists():
            return None
        return list(json.loads(path.read_text())["resources"])

    def save_applied(self, records: list[dict[str, Any]]) -> None:
        write_private(self.state_dir / APPLIED_FILE,
                      json.dumps({"version": 1, "resources": records}, indent=1, sort_keys=True) + "\n")


def _pair_keys(count: int = 2) -> dict[str, str]:
    """Stand-in-format keystores and their password for one pair (never usable on a real chain)."""
    password = secrets.token_urlsafe(24)
    stamp = int(time.time())
    files = {f"keystore-m_12381_238_{i}_0_0-{stamp}.json": json.dumps(make_keystore(password, index=i)).encode()
             for i in range(count)}
    files["password.txt"] = password.encode()
    return {name: base64.b64encode(content).decode() for name, content in files.items()}
