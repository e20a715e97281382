"""The accepted long-option names of each client CLI, vendored from shared/reference/client-flags.md.

Why vendored: the rendered units are checked against these sets in every test run, including clones where
the shared reference is absent; a test compares this copy with the reference whenever it is present, so
the two cannot drift silently. An unknown flag makes the real clients exit ("flag provided but not
defined"), so a unit using a name outside these sets would crash-loop in production.
"""

from __future__ import annotations

import re

#: gzond v0.2.2 (go-zond cmd/utils/flags.go + internal/debug/flags.go)
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

#: gqrl v0.3.0 differs from gzond only by these (client-flags.md, "Execution client").
GQRL_DROPPED = frozenset({"usb", "pcscdpath", "docroot", "unlock", "allow-insecure-unlock"})
GQRL_RENAMED = {"zond.requiredblocks": "qrl.requiredblocks", "rpc.zvmtimeout": "rpc.qrvmtimeout",
                "zondstats": "qrlstats"}

_QRYSM_SHARED = """
minimal-config e2e-config rpc-max-page-size verbosity datadir enable-db-backup-webhook
db-backup-output-dir enable-tracing tracing-process-name tracing-endpoint trace-sample-fraction
monitoring-host disable-monitoring no-discovery peer bootstrap-node relay-node p2p-udp-port
p2p-tcp-port p2p-local-ip p2p-host-ip p2p-host-dns p2p-priv-key p2p-static-id p2p-metadata
p2p-max-peers p2p-allowlist p2p-denylist force-clear-db clear-db log-format max-goroutines log-file
enable-upnp config-file chain-config-file grpc-max-msg-size accept-terms-of-use monitor-indices
restore-source-file restore-target-dir api-timeout output-file
"""

_QRYSM_FEATURES = """
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

#: Never in a unit or script: these delete the slashing-protection history.
FORBIDDEN_FLAGS = frozenset({"clear-db", "force-clear-db"})


def _words(block: str) -> frozenset[str]:
    return frozenset(block.split())


def _gqrl(gzond: frozenset[str]) -> frozenset[str]:
    return frozenset(GQRL_RENAMED.get(n, n) for n in gzond - GQRL_DROPPED)


def _build(gzond: str, shared: str, features: str, beacon: str, validator: str) -> dict[str, frozenset[str]]:
    gz = _words(gzond)
    common = _words(shared) | _words(features)
    return {"gzond": gz, "gqrl": _gqrl(gz), "beacon-chain": common | _words(beacon),
            "validator": common | _words(validator)}


#: binary name -> accepted long-option names (without the leading `--`)
ACCEPTED: dict[str, frozenset[str]] = _build(_GZOND, _QRYSM_SHARED, _QRYSM_FEATURES, _BEACON, _VALIDATOR)

_SECTIONS = {
    "execution": re.compile(r"^## Execution client"),
    "shared": re.compile(r"^## Shared by qrysm"),
    "features": re.compile(r"^## Feature flags"),
    "beacon": re.compile(r"^## beacon-chain"),
    "validator": re.compile(r"^## validator"),
}


def parse_reference(text: str) -> dict[str, frozenset[str]]:
    """Parse client-flags.md into ACCEPTED's shape (the word lists under each `## ` heading).

    Lines of the execution section that are prose (they contain backticks or sentence punctuation) are
    skipped: the name list is the block of lines made only of option-name characters.
    """
    blocks: dict[str, list[str]] = {k: [] for k in _SECTIONS}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = next((k for k, rx in _SECTIONS.items() if rx.match(line)), None)
            continue
        if current and line.strip() and re.fullmatch(r"[A-Za-z0-9._\- ]+", line.strip()):
            blocks[current].append(line)
    return _build(*("\n".join(blocks[k]) for k in ("execution", "shared", "features", "beacon", "validator")))
