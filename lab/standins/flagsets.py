"""Accepted long-option names per client, with their kinds.

The names come from the project's one copy of the clients' flag lists (cloud_init/client_flags.py, checked
against shared/reference/client-flags.md); build.py packs that module into each stand-in executable.

The stand-ins must reject exactly what the real clients reject, so a systemd unit that uses a misspelt or
invented flag fails in the lab as it would in production. Each set maps a name to its kind: ``bool``
(bare switch) or ``value`` (takes an argument).
"""

from __future__ import annotations

try:  # inside a built stand-in executable (build.py packs the module next to this one)
    from . import client_flags as _names  # type: ignore[attr-defined]
except ImportError:  # in the repository
    from cloud_init import client_flags as _names  # type: ignore[no-redef]

_GZOND_BOOLS = """
usb mainnet betanet testnet dev exitwhensynced iterative nostorage incompletes nocode snapshot lightkdf
txpool.nolocals cache.noprefetch cache.preimages allow-insecure-unlock vmdebug nocompaction ipcdisable
http graphql ws nodiscover discovery.v4 discovery.v5 metrics metrics.expensive metrics.influxdb
metrics.influxdbv2 log.json log.debug log.rotate log.compress pprof
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

_BEACON_BOOLS = "disable-grpc-gateway enable-debug-rpc-endpoints subscribe-all-subnets historical-slasher-node"

_VALIDATOR_BOOLS = """
disable-account-metrics rpc disable-rewards-penalties-logging skip-mnemonic-25th-word-check
show-deposit-data show-private-keys list-validator-indices exit-all force-exit skip-deposit-confirmation
enable-builder
"""


def _kinds(names: frozenset[str], bools: str) -> dict[str, str]:
    bool_set = set(bools.split())
    return {name: ("bool" if name in bool_set else "value") for name in sorted(names)}


def gzond_flags() -> dict[str, str]:
    """Flags of go-zond v0.2.2."""
    return _kinds(_names.ACCEPTED["gzond"], _GZOND_BOOLS)


def gqrl_flags() -> dict[str, str]:
    """Flags of go-qrl v0.3.0: gzond's minus the dropped ones, with three renames (none of them a switch)."""
    return _kinds(_names.ACCEPTED["gqrl"], _GZOND_BOOLS)


def beacon_flags() -> dict[str, str]:
    """Flags of qrysm beacon-chain (shared + feature + beacon-only)."""
    return _kinds(_names.ACCEPTED["beacon-chain"], _QRYSM_SHARED_BOOLS + _BEACON_BOOLS)


def validator_flags() -> dict[str, str]:
    """Flags of qrysm validator, top-level and subcommand flags together (as the reference lists them)."""
    return _kinds(_names.ACCEPTED["validator"], _QRYSM_SHARED_BOOLS + _VALIDATOR_BOOLS)


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
