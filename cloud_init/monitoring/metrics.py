"""Metric names the project knows: the source of truth for the rule and dashboard cross-checks."""

from __future__ import annotations

EXECUTION_METRICS = frozenset({"chain_head_block", "chain_head_header", "chain_head_finalized", "chain_head_safe",
                               "p2p_peers", "txpool_pending", "txpool_queued"})
BEACON_METRICS = frozenset({"beacon_head_slot", "beacon_clock_time_slot", "beacon_finalized_epoch",
                            "beacon_current_justified_epoch", "p2p_peer_count", "connected_libp2p_peers"})
VALIDATOR_METRICS = frozenset({"validator_statuses", "validator_balance", "validator_last_attested_slot",
                               "validator_successful_attestations", "validator_failed_attestations",
                               "validator_successful_proposals", "validator_failed_proposals",
                               "grpc_client_msg_received_total"})
#: Written by the key hosts' textfile collector (the validator lock and the backup timer).
TEXTFILE_METRICS = frozenset({"quantapool_validator_locked", "quantapool_slashing_protection_backup_timestamp_seconds"})
NODE_METRICS = frozenset({"node_timex_sync_status", "node_timex_offset_seconds", "node_filesystem_avail_bytes",
                          "node_filesystem_size_bytes", "node_filesystem_readonly", "node_memory_MemAvailable_bytes",
                          "node_memory_MemTotal_bytes", "node_vmstat_oom_kill", "node_cpu_seconds_total",
                          "node_load1", "node_network_receive_bytes_total", "node_network_transmit_bytes_total",
                          "node_textfile_scrape_error"})
SELF_METRICS = frozenset({"up", "alertmanager_notifications_failed_total", "alertmanager_notifications_total",
                          "prometheus_rule_evaluation_failures_total", "ALERTS"})


def known_metrics() -> frozenset[str]:
    """Every metric name a rule or dashboard may use: the metric catalogue's usable entries."""
    from cloud_init.metrics_catalogue import usable_metrics  # monitoring/metrics_catalogue.yml

    return usable_metrics()
