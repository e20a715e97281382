"""The shared chain clock and network identity of the stand-ins.

All three processes (and the test/lab harness) derive slot, epoch and the genesis validators root from the
same environment variables, so independent processes agree on "now" without talking to each other, exactly
like real clients that share a genesis time.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass

# 2023-11-14T22:13:20Z: any fixed instant in the past works; it only has to be the same everywhere.
DEFAULT_GENESIS_TIME = 1_700_000_000
DEFAULT_SLOT_SECONDS = 60.0
DEFAULT_SLOTS_PER_EPOCH = 128

ENV_SLOT_SECONDS = "QP_STANDIN_SLOT_SECONDS"
ENV_SLOTS_PER_EPOCH = "QP_STANDIN_SLOTS_PER_EPOCH"
ENV_GENESIS_TIME = "QP_STANDIN_GENESIS_TIME"
ENV_PROFILE = "QP_STANDIN_PROFILE"
ENV_PEERS = "QP_STANDIN_PEERS"
ENV_SYNC_SECONDS = "QP_STANDIN_SYNC_SECONDS"
ENV_P2P_BIND = "QP_STANDIN_P2P_BIND"

PROFILES = ("gzond", "gqrl")


class ConfigError(Exception):
    """A bad environment value or input file; the message names it and says what to do."""


#: On lab hosts every stand-in invocation (services, and one-shot commands run through runuser/sudo, which
#: do not inherit the units' environment) reads the shared clock from this file when the variable is unset.
ENV_FILE = "/etc/quantapool/lab-standin.env"


def _file_env() -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        with open(ENV_FILE) as fh:
            for line in fh:
                key, sep, value = line.strip().partition("=")
                if sep and key.startswith("QP_STANDIN_"):
                    values[key] = value
    except OSError:
        pass
    return values


def env(name: str, default: str = "") -> str:
    """A QP_STANDIN_* setting: the process environment first, then the lab host's env file."""
    value = os.environ.get(name)
    if value is None:
        value = _file_env().get(name, default)
    return value


def _env_number(name: str, default: float, *, integer: bool, minimum: float) -> float:
    raw = env(name).strip()
    if not raw:
        return default
    try:
        value = int(raw, 10) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}: fix or unset it") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum}: fix or unset it")
    return value


@dataclass(frozen=True)
class Clock:
    """Slot arithmetic from genesis time, slot length and epoch length."""

    genesis_time: int
    slot_seconds: float
    slots_per_epoch: int

    @classmethod
    def from_env(cls) -> Clock:
        """Read QP_STANDIN_GENESIS_TIME / _SLOT_SECONDS / _SLOTS_PER_EPOCH (defaults: mainnet-like)."""
        return cls(
            genesis_time=int(_env_number(ENV_GENESIS_TIME, DEFAULT_GENESIS_TIME, integer=True, minimum=0)),
            slot_seconds=_env_number(ENV_SLOT_SECONDS, DEFAULT_SLOT_SECONDS, integer=False, minimum=0.05),
            slots_per_epoch=int(
                _env_number(ENV_SLOTS_PER_EPOCH, DEFAULT_SLOTS_PER_EPOCH, integer=True, minimum=1)
            ),
        )

    def slot_at(self, unix: float) -> int:
        """Slot number at a unix time (0 before genesis)."""
        if unix <= self.genesis_time:
            return 0
        return int((unix - self.genesis_time) // self.slot_seconds)

    def current_slot(self) -> int:
        """Slot number now."""
        return self.slot_at(time.time())

    def epoch_of(self, slot: int) -> int:
        """Epoch containing a slot."""
        return slot // self.slots_per_epoch

    def seconds_to_next_slot(self) -> float:
        """Time until the next slot boundary, used to sleep exactly as long as needed."""
        now = time.time()
        start_next = self.genesis_time + (self.slot_at(now) + 1) * self.slot_seconds
        return max(0.0, start_next - now)


def genesis_validators_root(genesis_time: int) -> str:
    """The network's genesis validators root: a constant derived from the genesis time (0x + 64 hex)."""
    return "0x" + hashlib.sha256(f"quantapool-standin-gvr:{genesis_time}".encode()).hexdigest()


def profile_from_env() -> str:
    """Which client generation the beacon/validator emulate (REST prefix ``zond`` or ``qrl``)."""
    value = env(ENV_PROFILE, "gzond").strip() or "gzond"
    if value not in PROFILES:
        raise ConfigError(f"{ENV_PROFILE}={value!r} is not one of {', '.join(PROFILES)}: fix or unset it")
    return value


def rest_prefix(profile: str) -> str:
    """Beacon REST path prefix of a profile: ``/zond`` or ``/qrl``."""
    return "/zond" if profile == "gzond" else "/qrl"


def peers_from_env(cap: int | None = None) -> int:
    """Emulated peer count (env QP_STANDIN_PEERS, default 5), capped by the client's max-peers flag."""
    peers = int(_env_number(ENV_PEERS, 5, integer=True, minimum=0))
    return peers if cap is None else min(peers, cap)


def sync_seconds_from_env() -> float:
    """How long the execution stand-in 'syncs' after the first authenticated forkchoice update."""
    return _env_number(ENV_SYNC_SECONDS, 2.0, integer=False, minimum=0)


def p2p_bind_from_env() -> str:
    """Address for P2P listeners that have no address flag in the real client (default all interfaces)."""
    return env(ENV_P2P_BIND).strip() or "0.0.0.0"  # noqa: S104 - real clients listen on all
