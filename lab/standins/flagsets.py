"""Accepted long-option names per client, copied from /work/shared/reference/client-flags.md.

The stand-ins must reject exactly what the real clients reject, so a systemd unit that uses a misspelt or
invented flag fails in the lab as it would in production. Each set maps a name to its kind: ``bool``
(bare switch) or ``value`` (takes an argument).
"""

from __future__ import annotations

_GZOND = """
datadir remotedb db.engine datadir.ancient datadir.minfreedisk keystore usb pcscdpath networkid
mainnet betanet testnet dev dev.period dev.gaslimit identity docroot exitwhensynced iterative
nostorage incompletes nocode start limit snapshot lightkdf zond.requiredblocks bloomfilter.size
syncmode gcmode state.scheme history.state history.transactions txpool.locals txpool.nolocals
txpool.journal txpool.rejournal txpool.pricelimit txpool.pricebump txpool.accountslots
txpool.globalslots txpool.accountqueue txpool.globalqueue txpool.lifetime cache cache.database
cache.trie cache.gc cache.snapshot cache.noprefetch cache.preimages cache.blocklogs fdlimit
miner.gaslimit miner.gasprice miner.extradata miner.recommit miner.pending.feeRecipient unlock
password signer allow-insecure-unlock vmdebug rpc.gascap rpc.zvmtimeout rpc.txfeecap authrpc.addr
authrpc.port authrpc.vhosts authrpc.jwtsecret zondstats nocompaction synctarget ipcdisable ipcpath
http http.addr http.port http.corsdomain http.vhosts http.api http.rpcprefix graphql
graphql.corsdomain graphql.vhosts ws ws.addr ws.port ws.api ws.origins ws.rpcprefix exec preload
rpc.batch-request-limit rpc.batch-response-max-size maxpeers maxpendpeers port bootnodes nodekey
nodekeyhex nat nodiscover discovery.v4 discovery.v5 netrestrict discovery.dns discovery.port jspath
header gpo.blocks gpo.percentile gpo.maxprice gpo.ignoreprice metrics metrics.expensive
metrics.addr metrics.port metrics.influxdb metrics.influxdb.endpoint metrics.influxdb.database
metrics.influxdb.username metrics.influxdb.password metrics.influxdb.tags metrics.influxdbv2
metrics.influxdb.token metrics.influxdb.bucket metrics.influxdb.organization verbosity log.vmodule
vmodule log.json log.format log.file log.backtrace log.debug log.rotate log.maxsize log.maxbackups
log.maxage log.compress pprof pprof.port pprof.addr pprof.memprofilerate pprof.blockprofilerate
pprof.cpuprofile trace
"""

_GZOND_BOOLS = """
usb mainnet betanet testnet dev exitwhensynced iterative nostorage incompletes nocode snapshot lightkdf
txpool.nolocals cache.noprefetch cache.preimages allow-insecure-unlock vmdebug nocompaction ipcdisable
http graphql ws nodiscover discovery.v4 discovery.v5 metrics metrics.expensive metrics.influxdb
metrics.influxdbv2 log.json log.debug log.rotate log.compress pprof
"""

_GQRL_DROPPED = {"usb", "pcscdpath", "docroot", "unlock", "allow-insecure-unlock"}
_GQRL_RENAMED = {
    "zond.requiredblocks": "qrl.requiredblocks",
    "rpc.zvmtimeout": "rpc.qrvmtimeout",
    "zondstats": "qrlstats",
}

_QRYSM_SHARED = """
minimal-config e2e-config rpc-max-page-size verbosity datadir enable-db-backup-webhook
db-backup-output-dir enable-tracing tracing-process-name tracing-endpoint trace-sample-fraction
monitoring-host disable-monitoring no-discovery peer bootstrap-node relay-node p2p-udp-port
p2p-tcp-port p2p-local-ip p2p-host-ip p2p-host-dns p2p-priv-key p2p-static-id p2p-metadata
p2p-max-peers p2p-allowlist p2p-denylist force-clear-db clear-db log-format max-goroutines log-file
enable-upnp config-file chain-config-file grpc-max-msg-size accept-terms-of-use monitor-indices
restore-source-file restore-target-dir api-timeout output-file
mainnet dev enable-experimental-state interop-write-ssz-state-transitions
disable-grpc-connection-logging disable-reorg-late-blocks disable-peer-scorer
aggregate-first-interval aggregate-second-interval aggregate-third-interval
dynamic-key-reload-debounce-interval disable-broadcast-slashings attest-timely slasher
enable-slashing-protection-history-pruning enable-doppelganger disable-staking-contract-check
enable-historical-state-representation startup-optimistic enable-full-ssz-data-logging
save-full-execution-payloads enable-beacon-rest-api enable-verbose-sig-verification
disable-optional-engine-methods prepare-all-payloads enable-eip-4881 disable-resource-manager
disable-registration-cache disable-aggregate-parallel
"""

_QRYSM_SHARED_BOOLS = """
minimal-config e2e-config enable-db-backup-webhook enable-tracing disable-monitoring no-discovery
force-clear-db clear-db enable-upnp accept-terms-of-use
mainnet dev enable-experimental-state interop-write-ssz-state-transitions
disable-grpc-connection-logging disable-reorg-late-blocks disable-peer-scorer
disable-broadcast-slashings attest-timely slasher enable-slashing-protection-history-pruning
enable-doppelganger disable-staking-contract-check enable-historical-state-representation
startup-optimistic enable-full-ssz-data-logging save-full-execution-payloads enable-beacon-rest-api
enable-verbose-sig-verification disable-optional-engine-methods prepare-all-payloads enable-eip-4881
disable-resource-manager disable-registration-cache disable-aggregate-parallel
"""

_BEACON = """
http-mev-relay max-builder-consecutive-missed-slots max-builder-epoch-missed-slots
local-block-value-boost execution-endpoint execution-headers jwt-secret deposit-contract rpc-host
rpc-port monitoring-port tls-cert tls-key http-modules disable-grpc-gateway grpc-gateway-host
grpc-gateway-port grpc-gateway-corsdomain min-sync-peers contract-deployment-block gc-percent
slots-per-archive-point block-batch-limit block-batch-limit-burst-factor enable-debug-rpc-endpoints
subscribe-all-subnets historical-slasher-node chain-id network-id engine-endpoint-timeout-seconds
eth1-header-req-limit weak-subjectivity-checkpoint minimum-peers-per-subnet suggested-fee-recipient
slasher-datadir checkpoint-state checkpoint-block checkpoint-sync-url genesis-state
genesis-beacon-api-url
"""

_BEACON_BOOLS = "disable-grpc-gateway enable-debug-rpc-endpoints subscribe-all-subnets historical-slasher-node"

_VALIDATOR = """
disable-account-metrics beacon-rpc-provider beacon-rpc-gateway-provider beacon-rest-api-provider
tls-cert rpc rpc-host rpc-port slasher-rpc-provider slasher-tls-cert
disable-rewards-penalties-logging graffiti grpc-retries grpc-retry-delay grpc-headers
grpc-gateway-host grpc-gateway-port grpc-gateway-corsdomain monitoring-port wallet-dir
account-password-file wallet-password-file mnemonic-25th-word-file skip-mnemonic-25th-word-check
import-private-key-file mnemonic-file mnemonic-language show-deposit-data show-private-keys
list-validator-indices num-accounts delete-public-keys backup-public-keys public-keys exit-all
force-exit exit-json-output-dir backup-password-file backup-dir slashing-protection-json-file
keys-dir remote-signer-crt-path remote-signer-key-path remote-signer-ca-crt-path
validators-external-signer-url validators-external-signer-public-keys keymanager-kind
skip-deposit-confirmation slashing-protection-export-dir graffiti-file proposer-settings-file
proposer-settings-url suggested-fee-recipient enable-builder suggested-gas-limit
"""

_VALIDATOR_BOOLS = """
disable-account-metrics rpc disable-rewards-penalties-logging skip-mnemonic-25th-word-check
show-deposit-data show-private-keys list-validator-indices exit-all force-exit skip-deposit-confirmation
enable-builder
"""


def _kinds(names: str, bools: str) -> dict[str, str]:
    bool_set = set(bools.split())
    return {name: ("bool" if name in bool_set else "value") for name in names.split()}


def gzond_flags() -> dict[str, str]:
    """Flags of go-zond v0.2.2."""
    return _kinds(_GZOND, _GZOND_BOOLS)


def gqrl_flags() -> dict[str, str]:
    """Flags of go-qrl v0.3.0: gzond's minus the dropped ones, with three renames."""
    out: dict[str, str] = {}
    for name, kind in gzond_flags().items():
        if name in _GQRL_DROPPED:
            continue
        out[_GQRL_RENAMED.get(name, name)] = kind
    return out


def beacon_flags() -> dict[str, str]:
    """Flags of qrysm beacon-chain (shared + feature + beacon-only)."""
    return _kinds(_QRYSM_SHARED + _BEACON, _QRYSM_SHARED_BOOLS + _BEACON_BOOLS)


def validator_flags() -> dict[str, str]:
    """Flags of qrysm validator, top-level and subcommand flags together (as the reference lists them)."""
    return _kinds(_QRYSM_SHARED + _VALIDATOR, _QRYSM_SHARED_BOOLS + _VALIDATOR_BOOLS)


def flags_for(client: str) -> dict[str, str]:
    """Flag table of one client name (``gzond``, ``gqrl``, ``beacon-chain``, ``validator``)."""
    table = {
        "gzond": gzond_flags,
        "gqrl": gqrl_flags,
        "beacon-chain": beacon_flags,
        "validator": validator_flags,
    }
    if client not in table:
        raise ValueError(f"unknown client {client!r}: expected one of {', '.join(sorted(table))}")
    return table[client]()
