"""Profile-aware address handling.

The two client generations spell the same 20-byte address differently (``Z`` + 40 hex for gzond,
``Q`` + 40 hex for gqrl). A config written for one profile must never be silently accepted by the
other, so parsing is always done against the profile's prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from eth_utils import to_checksum_address

ProfileName = Literal["gzond", "gqrl"]

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class Profile:
    """What differs between the client generations as far as this exporter is concerned."""

    name: ProfileName
    namespace: str  # JSON-RPC method prefix, e.g. "zond" -> "zond_call"
    address_prefix: str  # text form of addresses, e.g. "Z"


PROFILES: dict[str, Profile] = {
    "gzond": Profile(name="gzond", namespace="zond", address_prefix="Z"),
    "gqrl": Profile(name="gqrl", namespace="qrl", address_prefix="Q"),
}


def parse_address(text: str, profile: Profile) -> bytes:
    """Return the 20 address bytes of ``text``, which must use ``profile``'s prefix.

    Mixed-case input must carry a valid EIP-55 checksum over the hex part (the clients print
    addresses that way); all-lower or all-upper hex is accepted unchecked.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected an address string like {profile.address_prefix}<40 hex>, got {text!r}")
    prefix, body = text[0], text[1:]
    if prefix != profile.address_prefix:
        if prefix in {p.address_prefix for p in PROFILES.values()} and _HEX40.fullmatch(body):
            raise ValueError(
                f"address {text!r} has prefix {prefix!r} but profile {profile.name} uses "
                f"{profile.address_prefix!r} addresses"
            )
        raise ValueError(f"address {text!r} must be {profile.address_prefix!r} followed by 40 hex digits")
    if not _HEX40.fullmatch(body):
        raise ValueError(f"address {text!r} must be {profile.address_prefix!r} followed by 40 hex digits")
    if body != body.lower() and body != body.upper() and to_checksum_address("0x" + body)[2:] != body:
        raise ValueError(f"address {text!r} has a bad checksum (mixed case); copy it exactly or use lowercase")
    return bytes.fromhex(body)


def format_address(raw: bytes, profile: Profile) -> str:
    """Text form of a 20-byte address for ``profile``: prefix + EIP-55 checksummed hex."""
    if len(raw) != 20:
        raise ValueError(f"an address is 20 bytes, got {len(raw)}")
    return profile.address_prefix + to_checksum_address("0x" + raw.hex())[2:]


def address_from_rpc(text: object, profile: Profile) -> bytes | None:
    """Lenient parse of an address the node returned (profile prefix or ``0x``); None if unparsable.

    Nodes are the source of truth for their own output format, so the checksum is not enforced.
    """
    if not isinstance(text, str) or len(text) < 40:
        return None
    for prefix in (profile.address_prefix, "0x"):
        if text.startswith(prefix) and _HEX40.fullmatch(text[len(prefix) :]):
            return bytes.fromhex(text[len(prefix) :])
    return None
