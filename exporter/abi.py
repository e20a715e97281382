"""Selectors, topics and signature parsing (Keccak-256 via eth-hash, encoding via eth-abi).

Event specs are written exactly as in the pool's ABI, ``indexed`` keywords and parameter names
included; the canonical signature (types only) is derived here so a copy-paste of the ABI cannot
produce a wrong topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eth_hash.auto import keccak

_SIG = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$")


def selector(signature: str) -> bytes:
    """First 4 bytes of Keccak-256 of a canonical function signature, e.g. ``paused()``."""
    return keccak(signature.encode())[:4]


def topic(signature: str) -> bytes:
    """Keccak-256 of a canonical event signature: the event's topic 0."""
    return keccak(signature.encode())


@dataclass(frozen=True)
class EventSpec:
    """One event the exporter counts."""

    contract: str  # config key of the emitting contract, e.g. "deposit_pool"
    name: str
    types: tuple[str, ...]
    indexed: tuple[bool, ...]

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.types)})"

    @property
    def topic0(self) -> bytes:
        return topic(self.signature)

    @property
    def topic_count(self) -> int:
        """Topics a matching (non-anonymous) log carries: topic 0 plus one per indexed parameter."""
        return 1 + sum(self.indexed)


def parse_event(contract: str, declaration: str) -> EventSpec:
    """Parse ``Name(type [indexed] [name], ...)`` into an EventSpec.

    Only elementary types are supported (the pool's events use nothing else); anything else is a
    programming error and raises ValueError at import time.
    """
    match = _SIG.match(declaration)
    if not match:
        raise ValueError(f"not an event declaration: {declaration!r}")
    name, body = match.groups()
    types: list[str] = []
    indexed: list[bool] = []
    for param in filter(None, (p.strip() for p in body.split(","))):
        words = param.split()
        if any(ch in words[0] for ch in "()[]"):
            raise ValueError(f"unsupported parameter type {words[0]!r} in {declaration!r}")
        if len(words) > 3 or (len(words) >= 2 and words[1] != "indexed" and len(words) == 3):
            raise ValueError(f"cannot parse parameter {param!r} in {declaration!r}")
        types.append(words[0])
        indexed.append(len(words) >= 2 and words[1] == "indexed")
    return EventSpec(contract=contract, name=name, types=tuple(types), indexed=tuple(indexed))
