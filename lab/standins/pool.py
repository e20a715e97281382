"""The pool's contracts inside the lab's stand-in execution client: real read functions, plausible state.

Why: the lab runs the contract exporter for real, against the key hosts' execution stand-ins, so the lab's
Prometheus shows its target up and its alerts quiet on a healthy lab. The contracts answer exactly the
functions the real ones have (pool_abi.py): a selector they lack reverts as go-zond reports it (-32000
"execution reverted", no fallback in any of them); the zero-argument views return ABI-encoded state; the
functions with arguments or side effects are not modelled and say so with a -32603 error.

State is a pure function of the block number (one deposit of 5,000 QRL every 10 blocks, a reward sync of
5 QRL every 25, a validator funded and activated every 8 deposits), so every stand-in on every host
answers the same at the same block and reads pinned to a block form one consistent snapshot. Logs for
``Deposited``, ``RewardsSynced``, ``ValidatorFunded``, ``ValidatorRegistered`` and ``ValidatorActivated``
follow the same schedule, ABI-encoded with the real topics and ``indexed`` layout.

Addresses come from ``QP_STANDIN_POOL_CONTRACTS`` (``deposit_pool=<40 hex>,stqrl=<40 hex>,
validator_manager=<40 hex>``), which the lab overlay writes from the stack's ``poolContracts``; unset, the
node has no contracts (a call returns ``0x`` like any account without code).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from . import pool_abi

ENV = "QP_STANDIN_POOL_CONTRACTS"
KEYS = ("deposit_pool", "stqrl", "validator_manager")
WEI = 10**18
DEPOSIT = 5_000 * WEI
DEPOSIT_EVERY, DEPOSIT_OFFSET = 10, 3
REWARD = 5 * WEI
REWARD_EVERY = 25
DEPOSITS_PER_VALIDATOR = 8
VALIDATOR_STAKE = 40_000 * WEI
PUBKEY_LENGTH = 2592  # Dilithium public key (DepositPool-v2.sol PUBKEY_LENGTH)
OWNER = bytes.fromhex("0b5e" + "00" * 17 + "01")
DEPOSIT_CONTRACT = bytes.fromhex("42" * 20)


class Revert(Exception):
    """The call reverted without revert data."""


class NotModelled(Exception):
    """A real function the stand-in does not model (it takes arguments or changes state)."""


def _word(value: int | bool | bytes) -> bytes:
    if isinstance(value, bytes):
        return value.rjust(32, b"\0")
    return int(value).to_bytes(32, "big")


def _bytes_tail(data: bytes) -> bytes:
    return _word(len(data)) + data + b"\0" * (-len(data) % 32)


@dataclass(frozen=True)
class PoolState:
    """The pool at one block."""

    block: int

    @property
    def deposits(self) -> int:
        return 0 if self.block < DEPOSIT_OFFSET else (self.block - DEPOSIT_OFFSET) // DEPOSIT_EVERY + 1

    @property
    def rewards_synced(self) -> int:
        return self.block // REWARD_EVERY

    @property
    def validators(self) -> int:
        return self.deposits // DEPOSITS_PER_VALIDATOR

    @property
    def shares(self) -> int:
        return self.deposits * DEPOSIT

    @property
    def rewards(self) -> int:
        return self.rewards_synced * REWARD

    @property
    def pooled(self) -> int:
        return self.shares + self.rewards

    @property
    def staked(self) -> int:
        return self.validators * VALIDATOR_STAKE

    @property
    def buffered(self) -> int:
        return self.shares - self.staked

    @property
    def last_sync(self) -> int:
        return self.rewards_synced * REWARD_EVERY

    @property
    def balance(self) -> int:
        """Native balance of the deposit pool: the buffer plus synced rewards (staked QRL is off-contract)."""
        return self.pooled - self.staked


@dataclass(frozen=True)
class PoolContracts:
    deposit_pool: bytes
    stqrl: bytes
    validator_manager: bytes

    @classmethod
    def parse(cls, value: str) -> PoolContracts:
        """``deposit_pool=<hex40>,stqrl=<hex40>,validator_manager=<hex40>``; ValueError names the problem."""
        found: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            key, _, text = item.partition("=")
            if key not in KEYS:
                raise ValueError(f"{ENV}: unknown contract {key!r}; expected {', '.join(KEYS)}")
            text = text.strip().removeprefix("0x")
            if len(text) != 40:
                raise ValueError(f"{ENV}: {key} must be 40 hex digits")
            found[key] = bytes.fromhex(text)
        missing = [k for k in KEYS if k not in found]
        if missing:
            raise ValueError(f"{ENV}: missing {', '.join(missing)}")
        return cls(**found)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PoolContracts | None:
        value = (os.environ if env is None else env).get(ENV, "")
        return cls.parse(value) if value.strip() else None

    def key_of(self, address: bytes) -> str | None:
        for key in KEYS:
            if getattr(self, key) == address:
                return key
        return None

    # ---- calls ------------------------------------------------------------------------------------
    def views(self, key: str, s: PoolState) -> dict[str, tuple[Any, ...]]:
        """Zero-argument view -> output values, for one contract at one block."""
        rate = s.pooled * WEI // s.shares if s.shares else WEI
        if key == "deposit_pool":
            return {
                "VALIDATOR_STAKE()": (VALIDATOR_STAKE,), "DEPOSIT_CONTRACT()": (DEPOSIT_CONTRACT,),
                "WITHDRAWAL_DELAY()": (128,), "ABSOLUTE_MIN_DEPOSIT()": (WEI // 1000,),
                "stQRL()": (self.stqrl,), "owner()": (OWNER,), "bufferedQRL()": (s.buffered,),
                "validatorCount()": (s.validators,), "minDeposit()": (100 * WEI,),
                "minDepositFloor()": (100 * WEI,), "paused()": (False,), "totalWithdrawalShares()": (0,),
                "withdrawalReserve()": (0,), "bufferedQRLInReserve()": (0,), "lastSyncBlock()": (s.last_sync,),
                "totalRewardsReceived()": (s.rewards,), "totalSlashingLosses()": (0,), "stakedQRL()": (s.staked,),
                "getPoolStatus()": (s.pooled, s.shares, s.buffered, s.validators, 0, 0, rate),
                "getRewardStats()": (s.rewards, 0, s.rewards, s.last_sync),
                "canFundValidator()": (s.buffered >= VALIDATOR_STAKE, s.buffered),
            }
        if key == "stqrl":
            virtual = 10**3  # stQRL-v2.sol VIRTUAL_SHARES / VIRTUAL_ASSETS
            return {
                "decimals()": (18,), "MAX_MIN_STAKE_BLOCKS()": (46_500,), "minStakeBlocks()": (1536,),
                "owner()": (OWNER,), "depositPool()": (self.deposit_pool,), "paused()": (False,),
                "totalSupply()": (s.shares,), "totalShares()": (s.shares,), "totalPooledQRL()": (s.pooled,),
                "getExchangeRate()": ((s.pooled + virtual) * WEI // (s.shares + virtual),),
            }
        return {
            "VALIDATOR_STAKE()": (VALIDATOR_STAKE,), "owner()": (OWNER,), "depositPool()": (self.deposit_pool,),
            "totalValidators()": (s.validators,), "activeValidatorCount()": (s.validators,),
            "pendingValidatorCount()": (0,), "getStats()": (s.validators, 0, s.validators, s.staked),
        }

    def call(self, to: bytes, data: bytes, block: int) -> bytes | None:
        """Return data of a call; None if ``to`` is not a pool contract. Raises Revert or NotModelled."""
        key = self.key_of(to)
        if key is None:
            return None
        table = pool_abi.selectors(key)
        entry = table.get(data[:4])
        if entry is None:
            raise Revert()
        signature, outputs = entry
        values = self.views(key, PoolState(block)).get(signature)
        if values is None:
            raise NotModelled(signature)
        if any(t in ("string", "bytes") or t.endswith("]") for t in outputs):
            raise NotModelled(signature)  # dynamic outputs: none of the modelled views has one
        return b"".join(_word(v) for v in values)

    def balance(self, address: bytes, block: int) -> int:
        return PoolState(block).balance if address == self.deposit_pool else 0

    # ---- logs -------------------------------------------------------------------------------------
    def logs(self, lo: int, hi: int) -> list[dict[str, Any]]:
        """Every pool event in blocks lo..hi as (address, topics, data, block, index) dicts, in order."""
        topic = {sig.split("(")[0]: bytes.fromhex(t) for _c, t, sig in pool_abi.EVENT_TOPICS}
        out: list[dict[str, Any]] = []
        for block in range(max(lo, 1), hi + 1):
            entries: list[tuple[bytes, list[bytes], bytes]] = []
            if block >= DEPOSIT_OFFSET and (block - DEPOSIT_OFFSET) % DEPOSIT_EVERY == 0:
                n = PoolState(block).deposits
                user = hashlib.sha256(f"lab-depositor-{n % 7}".encode()).digest()[:20]
                entries.append((self.deposit_pool, [topic["Deposited"], _word(user)],
                                _word(DEPOSIT) + _word(DEPOSIT)))
                if n % DEPOSITS_PER_VALIDATOR == 0:
                    vid = n // DEPOSITS_PER_VALIDATOR
                    pubkey = _pubkey(vid)
                    entries.append((self.deposit_pool, [topic["ValidatorFunded"], _word(vid)],
                                    _word(64) + _word(VALIDATOR_STAKE) + _bytes_tail(pubkey)))
                    entries.append((self.validator_manager, [topic["ValidatorRegistered"], _word(vid)],
                                    _word(64) + _word(1) + _bytes_tail(pubkey)))
                    entries.append((self.validator_manager, [topic["ValidatorActivated"], _word(vid)],
                                    _word(block)))
            if block % REWARD_EVERY == 0:
                s = PoolState(block)
                entries.append((self.deposit_pool, [topic["RewardsSynced"]],
                                _word(REWARD) + _word(s.pooled) + _word(block)))
            for index, (address, topics, data) in enumerate(entries):
                out.append({"address": address, "topics": topics, "data": data, "block": block, "index": index})
        return out


def _pubkey(validator_id: int) -> bytes:
    seed = hashlib.sha256(f"lab-validator-{validator_id}".encode()).digest()
    return (seed * (PUBKEY_LENGTH // 32 + 1))[:PUBKEY_LENGTH]
