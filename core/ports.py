"""Every port the topology uses, in one table.

The Hetzner firewall, the hosts' nftables rules, the systemd units' flags, the Prometheus scrape config and
the lab's exposure tests all read these numbers, so a port cannot be opened in one place and forgotten in
another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Proto = Literal["tcp", "udp"]

SSH = 22
GRAFANA = 3000

# Execution client
EXECUTION_P2P = 30303  # tcp + udp (discovery)
EXECUTION_RPC = 8545  # localhost + monitoring (contract exporter) only
EXECUTION_AUTH_RPC = 8551  # engine API, localhost only
EXECUTION_METRICS = 6060

# Beacon node
BEACON_P2P_TCP = 13000
BEACON_P2P_UDP = 12000
BEACON_GRPC = 4000  # localhost only (validator client)
BEACON_REST = 3500  # localhost only
BEACON_METRICS = 8080

# Validator client
VALIDATOR_METRICS = 8081  # validator on 127.0.0.1 (it also serves /db/backup there); the private address is
#                            qp-validator-metrics-relay (GET /metrics only), for the monitoring host only

NODE_EXPORTER = 9100
CONTRACT_EXPORTER = 9101
PROMETHEUS = 9090
ALERTMANAGER = 9093


@dataclass(frozen=True)
class PublicPort:
    port: int
    protocol: Proto
    description: str


#: Open to the whole internet on key hosts: the clients' peer-to-peer ports.
P2P_PORTS: tuple[PublicPort, ...] = (
    PublicPort(EXECUTION_P2P, "tcp", "execution client P2P"),
    PublicPort(EXECUTION_P2P, "udp", "execution client discovery"),
    PublicPort(BEACON_P2P_TCP, "tcp", "beacon node P2P (libp2p)"),
    PublicPort(BEACON_P2P_UDP, "udp", "beacon node discovery (discv5)"),
)

#: Reachable from the monitoring server's private IP only (host firewall).
KEY_HOST_METRICS_PORTS: tuple[int, ...] = (EXECUTION_METRICS, BEACON_METRICS, VALIDATOR_METRICS, NODE_EXPORTER)

#: Never reachable from another host.
LOCAL_ONLY_PORTS: tuple[int, ...] = (EXECUTION_AUTH_RPC, BEACON_GRPC, BEACON_REST)
