"""Engine-API JWT (HS256) as the execution and beacon clients use it.

The lab must surface a mismatched JWT secret between beacon and execution the way production would: the
execution client answers 401 and the beacon stays unsynced. That needs real HS256 signing and checking of
the ``iat`` claim (±60 s, as go-zond's node/jwt_handler does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path

IAT_WINDOW_SECONDS = 60


class JwtSecretError(Exception):
    """The JWT secret file is missing or malformed."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_secret(text: str, source: str) -> bytes:
    """32-byte secret from hex text (optional 0x prefix, surrounding whitespace ignored)."""
    raw = text.strip()
    if raw.startswith(("0x", "0X")):
        raw = raw[2:]
    try:
        secret = bytes.fromhex(raw)
    except ValueError:
        raise JwtSecretError(f"JWT secret in {source} is not hex: write 64 hex characters") from None
    if len(secret) != 32:
        raise JwtSecretError(f"JWT secret in {source} is {len(secret)} bytes, want 32: write 64 hex characters")
    return secret


def load_secret(path: Path) -> bytes:
    """Read a JWT secret file; a missing file is an error naming the path."""
    try:
        return parse_secret(path.read_text(), str(path))
    except FileNotFoundError:
        raise JwtSecretError(f"JWT secret file {path} does not exist: create it (32 bytes hex)") from None


def load_or_create_secret(path: Path) -> bytes:
    """go-zond behaviour: use the file if present, else generate one and write it (mode 0600)."""
    if path.exists():
        return load_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    path.write_text("0x" + secret.hex())
    path.chmod(0o600)
    return secret


def make_token(secret: bytes, iat: int | None = None) -> str:
    """HS256 JWT with only the ``iat`` claim (what the consensus clients send)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64(json.dumps({"iat": int(time.time()) if iat is None else iat}, separators=(",", ":")).encode())
    signing_input = f"{header}.{claims}".encode()
    sig = _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return f"{header}.{claims}.{sig}"


def check_token(token: str, secret: bytes, now: float | None = None) -> str | None:
    """Return None when the token is valid, else a short reason (logged by the execution stand-in)."""
    parts = token.split(".")
    if len(parts) != 3:
        return "malformed token"
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        sig = _unb64(parts[2])
    except (ValueError, TypeError):
        return "malformed token"
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return "unexpected signing algorithm"
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(sig, expected):
        return "signature invalid"
    iat = claims.get("iat") if isinstance(claims, dict) else None
    if not isinstance(iat, int | float):
        return "missing issued-at"
    current = time.time() if now is None else now
    if abs(current - iat) > IAT_WINDOW_SECONDS:
        return "stale token"
    return None


def bearer(headers: object) -> str | None:
    """Token from an ``Authorization: Bearer ...`` header, if any."""
    value = headers.get("Authorization") if hasattr(headers, "get") else None
    if not isinstance(value, str) or not value.startswith("Bearer "):
        return None
    return value[len("Bearer "):].strip()
