"""A test helper that fails a test when a known secret shows up where it must not (output, logs, files).

Tell it every secret a test creates (``add``), feed it whatever might leak (``scan_text``, ``scan_file``,
``scan_tree``), then ``assert_clean()``. Reports name the secret and the encoding found, never the value,
so a failing test doesn't itself leak.

Each secret is registered with the encodings a careless program would produce: raw, hex (lower and
upper), base64 std and urlsafe, with and without padding. A JSON secret (a keystore, say) is also
registered leaf by leaf: every string leaf of at least 8 characters, except under keys that are public
by design (``PUBLIC_JSON_KEYS``: pubkey, path, uuid, function names...), so a deposit file carrying the
public key is not flagged.

Limitation, base64 inside a larger base64 blob: base64 maps 3 input bytes to 4 characters, so the
secret's encoding appears verbatim in the blob only if the secret starts at an offset that is a multiple
of 3 in the encoded data (aligned). The guard also registers the encoding of the secret's whole 3-byte
groups (its "aligned prefix"), which catches an aligned occurrence even when the secret's tail shares a
group with the bytes that follow; an unaligned occurrence (offset 1 or 2 mod 3) is NOT detected.
Catching those would need decoding every base64 run at three offsets, which this helper doesn't do.
"""

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

MIN_SECRET_LEN = 8
PUBLIC_JSON_KEYS = frozenset(
    {
        "pubkey",
        "path",
        "uuid",
        "version",
        "description",
        "function",
        "name",
        "network_name",
        "fork_version",
        "deposit_cli_version",
        "withdrawal_credentials",
        "amount",
    }
)


@dataclass(frozen=True)
class Finding:
    """One secret (by name and encoding) seen at one place."""

    where: str
    name: str
    encoding: str

    def __str__(self) -> str:
        return f"{self.where}: secret {self.name!r} ({self.encoding})"


class LeakGuard:
    """Collects secrets and findings; see the module docstring."""

    def __init__(self) -> None:
        self._needles: dict[bytes, tuple[str, str]] = {}
        self.findings: list[Finding] = []

    # -- registering ----------------------------------------------------------------------------
    def add(self, secret: str | bytes, name: str) -> None:
        """Register *secret* (at least 8 characters/bytes) and its common encodings under *name*."""
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(raw) < MIN_SECRET_LEN:
            raise ValueError(f"secret {name!r} is shorter than {MIN_SECRET_LEN}; a guard on it would be noise")
        self._register(raw, name)
        for leaf_path, leaf in self._json_leaves(raw):
            self._register(leaf.encode("utf-8"), f"{name}{leaf_path}")

    def _register(self, raw: bytes, name: str) -> None:
        aligned = raw[: len(raw) // 3 * 3]
        variants = {
            "raw": raw,
            "hex": raw.hex().encode(),
            "HEX": raw.hex().upper().encode(),
            "base64": base64.b64encode(raw),
            "base64-nopad": base64.b64encode(raw).rstrip(b"="),
            "base64url": base64.urlsafe_b64encode(raw),
            "base64url-nopad": base64.urlsafe_b64encode(raw).rstrip(b"="),
            "base64-aligned": base64.b64encode(aligned),
            "base64url-aligned": base64.urlsafe_b64encode(aligned),
        }
        for encoding, needle in variants.items():
            if len(needle) >= MIN_SECRET_LEN:
                self._needles.setdefault(needle, (name, encoding))

    @staticmethod
    def _json_leaves(raw: bytes) -> list[tuple[str, str]]:
        """String leaves (≥ 8 chars) of a JSON object/array, skipping public keys."""
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return []
        leaves: list[tuple[str, str]] = []

        def walk(node: object, where: str) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key not in PUBLIC_JSON_KEYS:
                        walk(value, f"{where}.{key}")
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    walk(value, f"{where}[{i}]")
            elif isinstance(node, str) and len(node) >= MIN_SECRET_LEN:
                leaves.append((where, node))

        if isinstance(doc, dict | list):
            walk(doc, "")
        return leaves

    # -- scanning -------------------------------------------------------------------------------
    def scan_text(self, text: str | bytes, where: str) -> list[Finding]:
        """Record every registered secret (in any registered encoding) found in *text*."""
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
        found = []
        seen: set[str] = set()
        for needle, (name, encoding) in self._needles.items():
            if name not in seen and needle in data:
                seen.add(name)
                found.append(Finding(where, name, encoding))
        self.findings.extend(found)
        return found

    def scan_file(self, path: Path) -> list[Finding]:
        """Scan one file's bytes."""
        return self.scan_text(Path(path).read_bytes(), str(path))

    def scan_tree(self, directory: Path) -> list[Finding]:
        """Scan every regular file under *directory* (symlinks are not followed)."""
        found = []
        for root, _dirs, files in os.walk(directory, followlinks=False):
            for filename in files:
                path = Path(root) / filename
                if path.is_file() and not path.is_symlink():
                    found.extend(self.scan_file(path))
        return found

    def assert_clean(self) -> None:
        """Raise AssertionError naming every leak seen (never the secret itself)."""
        if self.findings:
            lines = "\n".join(f"  {finding}" for finding in self.findings)
            raise AssertionError(f"secret material leaked ({len(self.findings)}):\n{lines}")
