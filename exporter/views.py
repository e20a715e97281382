"""The read-only views of the pool's contracts and the gauges each output feeds.

One table drives encoding, decoding and metric naming, so adding a view is one line here plus a
line in METRICS.md (a test cross-checks the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from exporter.abi import EventSpec, parse_event, selector

WEI = 10**18


class Kind(Enum):
    """How a raw ABI value becomes a sample value."""

    QRL = "qrl"  # 18-decimal QRL amount -> float QRL
    UNITS = "units"  # 18-decimal share/token amount -> float whole units
    RATIO = "ratio"  # 1e18-scaled ratio -> float
    COUNT = "count"  # plain integer
    BOOL = "bool"  # 1 / 0
    ADDRESS = "address"  # info-style series: value 1, the address in a label


def scale(kind: Kind, value: object) -> float:
    """Sample value for a decoded ABI value; never called for ADDRESS."""
    if kind is Kind.BOOL:
        return 1.0 if value else 0.0
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer for a {kind.value} output, got {value!r}")
    if kind in (Kind.QRL, Kind.UNITS, Kind.RATIO):
        return value / WEI
    return float(value)


@dataclass(frozen=True)
class Output:
    """One ABI output and the metric it sets; ``labels`` are fixed extra labels (besides address labels)."""

    abi_type: str
    metric: str
    kind: Kind
    labels: tuple[tuple[str, str], ...] = ()
    field: str = ""  # name of a tuple component, for help texts


@dataclass(frozen=True)
class View:
    """A zero-argument view function on one of the configured contracts."""

    contract: str
    function: str
    outputs: tuple[Output, ...]
    # Optional: added in v2.3, absent from the legacy v2.2 deployment. A revert of an optional view
    # ("this contract has no such function") leaves its series absent and call_success 0 without
    # lowering quantapool_exporter_up; any other failure of it (timeout, transport, bad answer) does.
    optional: bool = False

    @property
    def selector(self) -> bytes:
        return selector(f"{self.function}()")

    @property
    def abi_types(self) -> list[str]:
        return [o.abi_type for o in self.outputs]


def _one(contract: str, function: str, abi_type: str, metric: str, kind: Kind, /, optional: bool = False,
         **labels: str) -> View:
    return View(contract, function, (Output(abi_type, metric, kind, tuple(labels.items())),), optional)


def _u(field: str, metric: str, kind: Kind) -> Output:
    return Output("uint256", metric, kind, field=field)


_DP = "deposit_pool"
_ST = "stqrl"
_VM = "validator_manager"

VIEWS: tuple[View, ...] = (
    # DepositPoolV2 (it has no totalPooledQRL()/totalShares(): those are stQRLv2's, below, and
    # getPoolStatus() forwards them; lab/standins/pool_abi.py lists what each contract has)
    _one(_DP, "bufferedQRL", "uint256", "quantapool_pool_buffered_qrl", Kind.QRL),
    _one(_DP, "stakedQRL", "uint256", "quantapool_pool_staked_qrl", Kind.QRL, optional=True),
    _one(_DP, "validatorCount", "uint256", "quantapool_pool_validators", Kind.COUNT),
    _one(_DP, "minDeposit", "uint256", "quantapool_pool_min_deposit_qrl", Kind.QRL),
    _one(_DP, "minDepositFloor", "uint256", "quantapool_pool_min_deposit_floor_qrl", Kind.QRL),
    _one(_DP, "paused", "bool", "quantapool_pool_paused", Kind.BOOL, contract=_DP),
    _one(_DP, "totalWithdrawalShares", "uint256", "quantapool_pool_withdrawal_shares", Kind.UNITS),
    _one(_DP, "withdrawalReserve", "uint256", "quantapool_pool_withdrawal_reserve_qrl", Kind.QRL),
    _one(_DP, "bufferedQRLInReserve", "uint256", "quantapool_pool_buffered_in_reserve_qrl", Kind.QRL,
         optional=True),
    _one(_DP, "lastSyncBlock", "uint256", "quantapool_pool_last_sync_block", Kind.COUNT),
    _one(_DP, "totalRewardsReceived", "uint256", "quantapool_pool_total_rewards_qrl", Kind.QRL),
    _one(_DP, "totalSlashingLosses", "uint256", "quantapool_pool_total_slashing_losses_qrl", Kind.QRL),
    _one(_DP, "owner", "address", "quantapool_contract_owner_info", Kind.ADDRESS, contract=_DP),
    View(_DP, "getPoolStatus", (
        _u("totalPooled", "quantapool_pool_status_total_pooled_qrl", Kind.QRL),
        _u("totalShares", "quantapool_pool_status_total_shares", Kind.UNITS),
        _u("buffered", "quantapool_pool_status_buffered_qrl", Kind.QRL),
        _u("validators", "quantapool_pool_status_validators", Kind.COUNT),
        _u("pendingWithdrawalShares", "quantapool_pool_status_pending_withdrawal_shares", Kind.UNITS),
        _u("reserveBalance", "quantapool_pool_status_reserve_balance_qrl", Kind.QRL),
        _u("exchangeRate", "quantapool_pool_status_exchange_rate", Kind.RATIO),
    )),
    View(_DP, "getRewardStats", (
        _u("totalRewards", "quantapool_pool_reward_stats_total_rewards_qrl", Kind.QRL),
        _u("totalSlashing", "quantapool_pool_reward_stats_total_slashing_qrl", Kind.QRL),
        _u("netRewards", "quantapool_pool_reward_stats_net_rewards_qrl", Kind.QRL),
        _u("lastSync", "quantapool_pool_reward_stats_last_sync_block", Kind.COUNT),
    )),
    View(_DP, "canFundValidator", (
        Output("bool", "quantapool_pool_can_fund_validator", Kind.BOOL, field="possible"),
        _u("bufferedAmount", "quantapool_pool_can_fund_buffered_qrl", Kind.QRL),
    )),
    _one(_DP, "VALIDATOR_STAKE", "uint256", "quantapool_pool_validator_stake_qrl", Kind.QRL),
    _one(_DP, "WITHDRAWAL_DELAY", "uint256", "quantapool_pool_withdrawal_delay_blocks", Kind.COUNT),
    # stQRLv2
    _one(_ST, "totalSupply", "uint256", "quantapool_stqrl_total_supply", Kind.UNITS),
    _one(_ST, "totalShares", "uint256", "quantapool_stqrl_total_shares", Kind.UNITS),
    _one(_ST, "totalPooledQRL", "uint256", "quantapool_stqrl_total_pooled_qrl", Kind.QRL),
    _one(_ST, "getExchangeRate", "uint256", "quantapool_pool_exchange_rate", Kind.RATIO),
    _one(_ST, "minStakeBlocks", "uint256", "quantapool_stqrl_min_stake_blocks", Kind.COUNT, optional=True),
    _one(_ST, "paused", "bool", "quantapool_pool_paused", Kind.BOOL, contract=_ST),
    _one(_ST, "depositPool", "address", "quantapool_stqrl_deposit_pool_info", Kind.ADDRESS),
    # ValidatorManager
    _one(_VM, "totalValidators", "uint256", "quantapool_validators_registered", Kind.COUNT),
    _one(_VM, "activeValidatorCount", "uint256", "quantapool_validators_active", Kind.COUNT),
    _one(_VM, "pendingValidatorCount", "uint256", "quantapool_validators_pending", Kind.COUNT),
    View(_VM, "getStats", (
        _u("total", "quantapool_validators_stats_registered", Kind.COUNT),
        _u("pending", "quantapool_validators_stats_pending", Kind.COUNT),
        _u("active", "quantapool_validators_stats_active", Kind.COUNT),
        _u("totalStaked", "quantapool_validators_stats_total_staked_qrl", Kind.QRL),
    )),
)

# Label that carries the address for each ADDRESS-kind metric.
ADDRESS_LABEL: dict[str, str] = {
    "quantapool_contract_owner_info": "owner",
    "quantapool_stqrl_deposit_pool_info": "deposit_pool",
}

EVENTS: tuple[EventSpec, ...] = tuple(
    parse_event(contract, decl)
    for contract, decl in (
        (_DP, "Deposited(address indexed user, uint256 qrlAmount, uint256 sharesReceived)"),
        (_DP, "WithdrawalRequested(address indexed user, uint256 shares, uint256 qrlAmount, uint256 requestBlock)"),
        (_DP, "WithdrawalClaimed(address indexed user, uint256 shares, uint256 qrlAmount)"),
        (_DP, "WithdrawalCancelled(address indexed user, uint256 indexed requestId, uint256 shares)"),
        (_DP, "RewardsSynced(uint256 rewardsAmount, uint256 newTotalPooled, uint256 blockNumber)"),
        (_DP, "SlashingDetected(uint256 lossAmount, uint256 newTotalPooled, uint256 blockNumber)"),
        (_DP, "ValidatorFunded(uint256 indexed validatorId, bytes pubkey, uint256 amount)"),
        (_DP, "ValidatorExitRecorded(uint256 amount, uint256 remainingStaked)"),
        (_DP, "WithdrawalReserveFunded(uint256 amount)"),
        (_DP, "WithdrawalReserveReleased(uint256 amount, uint256 bufferRestored)"),
        (_DP, "Paused(address account)"),
        (_DP, "Unpaused(address account)"),
        (_DP, "EmergencyWithdrawal(address indexed to, uint256 amount)"),
        (_VM, "ValidatorRegistered(uint256 indexed validatorId, bytes pubkey, uint8 status)"),
        (_VM, "ValidatorActivated(uint256 indexed validatorId, uint256 activatedBlock)"),
        (_VM, "ValidatorExitRequested(uint256 indexed, uint256)"),
        (_VM, "ValidatorExited(uint256 indexed, uint256)"),
        (_VM, "ValidatorSlashed(uint256 indexed validatorId, uint256 slashedBlock)"),
    )
)
