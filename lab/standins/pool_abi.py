"""The pool contracts' public/external functions, as the real Solidity sources declare them (stdlib only).

Extracted from DigitalGuards/QuantaPool at commit d7927b9 (contracts/solidity/DepositPool-v2.sol,
stQRL-v2.sol, ValidatorManager.sol): every ``public``/``external`` function, plus the getter the compiler
generates for every ``public`` state variable and constant (a ``public`` mapping's getter takes its keys;
an enum is ``uint8`` in a signature). Nothing else: none of the three has a ``fallback``, so a call with any
other selector reverts with empty revert data (DepositPoolV2's ``receive()`` only takes calls without data).

Cross-checked against the repository's frontend ABI (frontend/src/abi/*.ts), which predates v2.3 and lacks
only the v2.3 additions (``stakedQRL``, ``bufferedQRLInReserve``, ``recordValidatorExit``,
``releaseWithdrawalReserve``, ``MAX_MIN_STAKE_BLOCKS``, ``setMinStakeBlocks``).

One copy, two users: the lab's stand-in execution client (a stdlib zipapp, which cannot compute Keccak-256,
hence the selectors written out) and the exporter test fixtures. tests/exporter/test_pool_abi.py recomputes
every selector with eth-hash and checks that every read the exporter makes is in this table.

Rows: (selector hex, canonical signature, comma-separated output types; "" for none).
Regenerate the hex columns with eth-hash (keccak) if a signature changes; the test says which row is wrong.
"""

from __future__ import annotations

FUNCTIONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "deposit_pool": (
        ("e6f8afe1", "VALIDATOR_STAKE()", "uint256"),
        ("6b96736b", "DEPOSIT_CONTRACT()", "address"),
        ("0ebb172a", "WITHDRAWAL_DELAY()", "uint256"),
        ("322d7a67", "ABSOLUTE_MIN_DEPOSIT()", "uint256"),
        ("c7f6042f", "stQRL()", "address"),
        ("8da5cb5b", "owner()", "address"),
        ("a3e9b92e", "bufferedQRL()", "uint256"),
        ("0f43a677", "validatorCount()", "uint256"),
        ("41b3d185", "minDeposit()", "uint256"),
        ("4199f1a8", "minDepositFloor()", "uint256"),
        ("5c975abb", "paused()", "bool"),
        ("4e5a2328", "withdrawalRequests(address,uint256)", "uint256,uint256,uint256,bool"),
        ("686b46ec", "nextWithdrawalIndex(address)", "uint256"),
        ("bcda9110", "totalWithdrawalShares()", "uint256"),
        ("475239c2", "withdrawalReserve()", "uint256"),
        ("261b1853", "bufferedQRLInReserve()", "uint256"),
        ("1d0c399f", "lastSyncBlock()", "uint256"),
        ("4d5428a7", "totalRewardsReceived()", "uint256"),
        ("54de06e5", "totalSlashingLosses()", "uint256"),
        ("e5ab6cfd", "stakedQRL()", "uint256"),
        ("d0e30db0", "deposit()", "uint256"),
        ("ef8b30f7", "previewDeposit(uint256)", "uint256"),
        ("9ee679e8", "requestWithdrawal(uint256)", "uint256,uint256"),
        ("6e66d84a", "claimWithdrawal()", "uint256"),
        ("3efcfda4", "cancelWithdrawal(uint256)", ""),
        ("f2847e64", "getWithdrawalRequest(address,uint256)", "uint256,uint256,uint256,bool,uint256,bool"),
        ("fcc48030", "getWithdrawalRequestCount(address)", "uint256,uint256"),
        ("72c0c211", "syncRewards()", ""),
        ("a7bf16b9", "fundValidator(bytes,bytes,bytes,bytes32)", "uint256"),
        ("2467c22c", "fundValidatorMVP()", "uint256"),
        ("0e4f28c3", "recordValidatorExit(uint256)", ""),
        ("38d20bb5", "fundWithdrawalReserve(uint256)", ""),
        ("ff7febd6", "releaseWithdrawalReserve(uint256)", ""),
        ("7f79496c", "getPoolStatus()", "uint256,uint256,uint256,uint256,uint256,uint256,uint256"),
        ("3217e57a", "getRewardStats()", "uint256,uint256,uint256,uint256"),
        ("3ef7143b", "canFundValidator()", "bool,uint256"),
        ("b17e1c2e", "setStQRL(address)", ""),
        ("8fcc9cfb", "setMinDeposit(uint256)", ""),
        ("4c042604", "setMinDepositFloor(uint256)", ""),
        ("8456cb59", "pause()", ""),
        ("3f4ba83a", "unpause()", ""),
        ("f2fde38b", "transferOwnership(address)", ""),
        ("95ccea67", "emergencyWithdraw(address,uint256)", ""),
    ),
    "stqrl": (
        ("06fdde03", "name()", "string"),
        ("95d89b41", "symbol()", "string"),
        ("313ce567", "decimals()", "uint8"),
        ("0a7863ce", "MAX_MIN_STAKE_BLOCKS()", "uint256"),
        ("64012224", "minStakeBlocks()", "uint256"),
        ("8da5cb5b", "owner()", "address"),
        ("2a343709", "depositPool()", "address"),
        ("5c975abb", "paused()", "bool"),
        ("18160ddd", "totalSupply()", "uint256"),
        ("70a08231", "balanceOf(address)", "uint256"),
        ("dd62ed3e", "allowance(address,address)", "uint256"),
        ("a9059cbb", "transfer(address,uint256)", "bool"),
        ("095ea7b3", "approve(address,uint256)", "bool"),
        ("23b872dd", "transferFrom(address,address,uint256)", "bool"),
        ("3a98ef39", "totalShares()", "uint256"),
        ("f5eb42dc", "sharesOf(address)", "uint256"),
        ("cf0f15a6", "getQRLValue(address)", "uint256"),
        ("ad911332", "getSharesByPooledQRL(uint256)", "uint256"),
        ("0d14f69d", "getPooledQRLByShares(uint256)", "uint256"),
        ("ca438251", "totalPooledQRL()", "uint256"),
        ("e6aa216c", "getExchangeRate()", "uint256"),
        ("528c198a", "mintShares(address,uint256)", "uint256"),
        ("ee7a7c04", "burnShares(address,uint256)", "uint256"),
        ("03a5affd", "updateTotalPooledQRL(uint256)", ""),
        ("05fbf448", "lockShares(address,uint256)", ""),
        ("76467da0", "unlockShares(address,uint256)", ""),
        ("9bbb02da", "lockedSharesOf(address)", "uint256"),
        ("e1b1b7d6", "immatureSharesOf(address)", "uint256"),
        ("352b900b", "matureAtBlockOf(address)", "uint256"),
        ("2c354997", "setMinStakeBlocks(uint256)", ""),
        ("c569fb36", "setDepositPool(address)", ""),
        ("8456cb59", "pause()", ""),
        ("3f4ba83a", "unpause()", ""),
        ("f2fde38b", "transferOwnership(address)", ""),
        ("715018a6", "renounceOwnership()", ""),
    ),
    "validator_manager": (
        ("e6f8afe1", "VALIDATOR_STAKE()", "uint256"),
        ("8da5cb5b", "owner()", "address"),
        ("2a343709", "depositPool()", "address"),
        ("35aa2e44", "validators(uint256)", "bytes,uint8,uint256,uint256"),
        ("2ea8979a", "pubkeyToIndex(bytes32)", "uint256"),
        ("c81b356b", "totalValidators()", "uint256"),
        ("2340e8d3", "activeValidatorCount()", "uint256"),
        ("c1f42c6e", "pendingValidatorCount()", "uint256"),
        ("602a9eee", "registerValidator(bytes)", "uint256"),
        ("4ebae617", "activateValidator(uint256)", ""),
        ("14b4a9f0", "requestValidatorExit(uint256)", ""),
        ("ff8b456a", "markValidatorExited(uint256)", ""),
        ("8dcf08fb", "markValidatorSlashed(uint256)", ""),
        ("f449319a", "batchActivateValidators(uint256[])", ""),
        ("b5d89627", "getValidator(uint256)", "bytes,uint8,uint256,uint256"),
        ("9ac50cd8", "getValidatorIdByPubkey(bytes)", "uint256"),
        ("8dd1d328", "getValidatorStatus(bytes)", "uint8"),
        ("c59d4847", "getStats()", "uint256,uint256,uint256,uint256"),
        ("10af63fc", "getValidatorsByStatus(uint8)", "uint256[]"),
        ("c569fb36", "setDepositPool(address)", ""),
        ("f2fde38b", "transferOwnership(address)", ""),
    ),
}

#: (contract key, topic 0 hex, canonical signature) of the events the contract exporter counts (the
#: declarations with `indexed` are in exporter/views.py; the test checks both lists agree).
EVENT_TOPICS: tuple[tuple[str, str, str], ...] = (
    ("deposit_pool", "73a19dd210f1a7f902193214c0ee91dd35ee5b4d920cba8d519eca65a7b488ca",
     "Deposited(address,uint256,uint256)"),
    ("deposit_pool", "38e3d972947cfef94205163d483d6287ef27eb312e20cb8e0b13a49989db232e",
     "WithdrawalRequested(address,uint256,uint256,uint256)"),
    ("deposit_pool", "2d43eb174787155132b52ddb6b346e2dca99302eac3df4466dbeff953d3c84d1",
     "WithdrawalClaimed(address,uint256,uint256)"),
    ("deposit_pool", "609802616efe88a6b73a266ced98c5dfd07c25e64549e620527605107ea30e81",
     "WithdrawalCancelled(address,uint256,uint256)"),
    ("deposit_pool", "3016d6f902380510ca4e54761973b3f3c41b759fa3597f31194c53ca434c20ec",
     "RewardsSynced(uint256,uint256,uint256)"),
    ("deposit_pool", "16020e9e3579ff8d3db5ee9afbf379228a6dab315c8eb376a846e80c54514c1b",
     "SlashingDetected(uint256,uint256,uint256)"),
    ("deposit_pool", "6442a32a2699a9bbb5a0c67779293613f0d464dd5c68e14fd0443eb55257e8c8",
     "ValidatorFunded(uint256,bytes,uint256)"),
    ("deposit_pool", "a34d9660ad256abe6e9eb56cff61177d6bbb720fe92a8d0f400abe948de2d1d3",
     "ValidatorExitRecorded(uint256,uint256)"),
    ("deposit_pool", "0cf9471ac6b6f026ce05ece153d1c009a2ff33def9ed5e358dbbdef7e35f5912",
     "WithdrawalReserveFunded(uint256)"),
    ("deposit_pool", "025cac5e0066394938d85d3d73114eefd543e6c3e8e712a621cce89b8a1a9125",
     "WithdrawalReserveReleased(uint256,uint256)"),
    ("deposit_pool", "62e78cea01bee320cd4e420270b5ea74000d11b0c9f74754ebdbfc544b05a258",
     "Paused(address)"),
    ("deposit_pool", "5db9ee0a495bf2e6ff9c91a7834c1ba4fdd244a5e8aa4e537bd38aeae4b073aa",
     "Unpaused(address)"),
    ("deposit_pool", "23d6711a1d031134a36921253c75aa59e967d38e369ac625992824315e204f20",
     "EmergencyWithdrawal(address,uint256)"),
    ("validator_manager", "30dce8fde1a577d548477e19610f50f4a05ec72dfef357d0bd0799384470cc03",
     "ValidatorRegistered(uint256,bytes,uint8)"),
    ("validator_manager", "306f1a635effaa1bdfbd384cb60dbe340eb553e296b231a6fab0e3f469889332",
     "ValidatorActivated(uint256,uint256)"),
    ("validator_manager", "18e15cea98767d850b17933eb56c7f10756b6f3829168d64df869fb5123766a6",
     "ValidatorExitRequested(uint256,uint256)"),
    ("validator_manager", "a03a0e9962a5ae9a6e485dcf822e22ffda3006a763b642f43d99b30ca93c3b9e",
     "ValidatorExited(uint256,uint256)"),
    ("validator_manager", "a02a6867a836eacf96a3e61592877fcb86f2c21d1098409fe654e9a7236fde10",
     "ValidatorSlashed(uint256,uint256)"),
)


def selectors(contract: str) -> dict[bytes, tuple[str, tuple[str, ...]]]:
    """Selector -> (signature, output types) for one contract key (deposit_pool, stqrl, validator_manager)."""
    return {bytes.fromhex(sel): (sig, tuple(filter(None, out.split(","))))
            for sel, sig, out in FUNCTIONS[contract]}
