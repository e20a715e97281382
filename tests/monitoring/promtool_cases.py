"""`promtool test rules` cases for every alert: at least one firing and one non-firing case each.

Why generated from a table: expected alerts must carry the exact annotations Prometheus renders, and those
embed the runbook URL from stack config. The cases list input series and the expected label sets; the
annotations are expanded here from the rendered rule text (only `{{ $labels.x }}` and `{{ $value }}` are
used in the rules, and a missing label fails the expansion), so the annotation templates are tested too.

Topology: the testnet stack (pair p1: primary 10.42.1.11, backup 10.42.1.12; monitoring 10.42.1.20).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PAIR = "p1"
P = "qp-testnet-p1-primary"
B = "qp-testnet-p1-backup"
M = "qp-testnet-monitoring"
_HOSTS = {P: ("10.42.1.11", "primary", PAIR), B: ("10.42.1.12", "backup", PAIR), M: ("10.42.1.20", "monitoring",
                                                                                      "none")}
_PORTS = {"node": 9100, "execution": 6060, "beacon": 8080, "validator": 8081, "contract_exporter": 9101}
_LOCAL = {"prometheus": 9090, "alertmanager": 9093}


def labels(job: str, host: str, **extra: str) -> dict[str, str]:
    """The labels a target of `job` on `host` carries in the rendered scrape config."""
    ip, role, pair = _HOSTS[host]
    instance = f"127.0.0.1:{_LOCAL[job]}" if job in _LOCAL else f"{ip}:{_PORTS[job]}"
    return {"job": job, "instance": instance, "host": host, "role": role, "pair": pair, **extra}


def series(metric: str, job: str, host: str, **extra: str) -> str:
    lbl = labels(job, host, **extra)
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in lbl.items()) + "}"


@dataclass
class Expect:
    """One expected alert: its labels (without alertname; severity is added) and $value for the annotations."""

    labels: dict[str, str]
    value: float = 0.0


@dataclass
class Case:
    name: str
    alert: str
    inputs: dict[str, str]
    eval_time: str
    expect: list[Expect] = field(default_factory=list)
    interval: str = "15s"


def _format_value(value: float) -> str:
    """Go's %v for float64 (what `{{ $value }}` prints)."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def expand(template: str, lbl: dict[str, str], value: float) -> str:
    def sub(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        if expr == "$value":
            return _format_value(value)
        if expr.startswith("$labels."):
            return lbl[expr.removeprefix("$labels.")]  # KeyError = the template uses a label the alert lacks
        raise ValueError(f"unsupported template expression {expr!r}")

    return re.sub(r"\{\{(.*?)\}\}", sub, template)


def promtool_test_doc(rule_files: list[str], cases: list[Case], rules: dict[str, dict[str, Any]],
                      evaluation_interval: str = "15s") -> dict[str, Any]:
    """A promtool unit-test file: one test group per case.

    Every rule `for` is a multiple of the cases' sample intervals, so evaluating at the sample interval gives
    the same answer as at the production 15 s, and multi-hour cases run in a fraction of the time.
    """
    tests = []
    for case in cases:
        rule = rules[case.alert]
        exp = []
        for e in case.expect:
            lbl = {**e.labels, **rule.get("labels", {})}
            exp.append({"exp_labels": lbl, "exp_annotations": {
                k: expand(v, lbl, e.value) for k, v in rule["annotations"].items()}})
        tests.append({
            "name": case.name,
            "interval": case.interval,
            "input_series": [{"series": s, "values": v} for s, v in case.inputs.items()],
            "alert_rule_test": [{"eval_time": case.eval_time, "alertname": case.alert, "exp_alerts": exp}],
        })
    return {"rule_files": rule_files, "evaluation_interval": evaluation_interval, "tests": tests}


def _lk(host: str, v: str) -> tuple[str, str]:
    return series("quantapool_validator_locked", "node", host), v


def _up(job: str, host: str, v: str) -> tuple[str, str]:
    return series("up", job, host), v


def _no_name(job: str, host: str, **extra: str) -> dict[str, str]:
    return labels(job, host, **extra)


KEY = {"pubkey": "0xaa"}
#: go-grpc-prometheus labels of qrysm's block stream from the beacon node (validator/client/validator.go)
GRPC = {"grpc_method": "StreamBlocksAltair", "grpc_service": "theqrl.zond.v1alpha1.BeaconNodeValidator",
        "grpc_type": "server_stream"}
#: alerting.expectedActiveKeys the promtool cases render with (tests/monitoring/test_rules_promtool.py)
EXPECTED_KEYS = {PAIR: 2}
FS = {"device": "/dev/sdb", "fstype": "ext4", "mountpoint": "/var/lib/prometheus"}

CASES: list[Case] = [
    # -- two signers ------------------------------------------------------------------------------------
    Case("second validator starts", "ValidatorRunningOnTwoHosts",
         dict([_up("validator", P, "1x10"), _up("validator", B, "0 0 0 0 1x6")]), "2m",
         [Expect({"pair": PAIR}, 2)]),
    Case("before the second validator starts", "ValidatorRunningOnTwoHosts",
         dict([_up("validator", P, "1x10"), _up("validator", B, "0 0 0 0 1x6")]), "45s"),
    Case("failover: old host's last sample overlaps the new host's first for one evaluation",
         "ValidatorRunningOnTwoHosts",
         dict([_up("validator", P, "1x4 0x6"), _up("validator", B, "0 0 0 0 1x6")]), "1m"),
    Case("one validator of two", "ValidatorRunningOnTwoHosts",
         dict([_up("validator", P, "1x10"), _up("validator", B, "0x10")]), "2m"),
    Case("lock off on both hosts", "ValidatorUnlockedOnTwoHosts",
         dict([_lk(P, "0x10"), _lk(B, "1 1 1 1 0x6")]), "2m", [Expect({"pair": PAIR}, 2)]),
    Case("failover: lock samples overlap for one evaluation", "ValidatorUnlockedOnTwoHosts",
         dict([_lk(P, "0x4 1x6"), _lk(B, "1 1 1 1 0x6")]), "1m"),
    Case("lock off on one host", "ValidatorUnlockedOnTwoHosts",
         dict([_lk(P, "0x10"), _lk(B, "1x10")]), "2m"),
    # -- active host down -------------------------------------------------------------------------------
    Case("active validator stops", "ValidatorDownOnActiveHost",
         dict([_lk(P, "0x20"), _lk(B, "1x20"), _up("validator", P, "1x4 0x16"), _up("validator", B, "0x20")]),
         "2m", [Expect(labels("validator", P))]),
    Case("active validator down for less than 30s", "ValidatorDownOnActiveHost",
         dict([_lk(P, "0x20"), _lk(B, "1x20"), _up("validator", P, "1x4 0x16"), _up("validator", B, "0x20")]),
         "75s"),
    Case("active host vanishes (lock series goes stale)", "ValidatorDownOnActiveHost",
         dict([_lk(P, "0x4 stale"), _lk(B, "1x20"), _up("validator", P, "1x4 0x16"),
               _up("validator", B, "0x20")]), "2m", [Expect(labels("validator", P))]),
    Case("lock off but validator not scraped at all", "ValidatorDownOnActiveHost",
         dict([_lk(P, "0x20"), _lk(B, "1x20"), _up("validator", B, "0x20")]), "2m",
         [Expect(labels("node", P))]),
    Case("standby validator down (locked)", "ValidatorDownOnActiveHost",
         dict([_lk(P, "0x20"), _lk(B, "1x20"), _up("validator", P, "1x20"), _up("validator", B, "0x20")]), "2m"),
    Case("planned failover: primary stopped and locked, backup unlocked and started", "ValidatorDownOnActiveHost",
         dict([_lk(P, "0x4 1x16"), _up("validator", P, "1x4 0x16"), _lk(B, "1x8 0x12"),
               _up("validator", B, "0x8 1x12")]), "4m"),
    Case("both validators stopped", "NoValidatorRunningInPair",
         dict([_up("validator", P, "0x40"), _up("validator", B, "0x40")]), "6m", [Expect({"pair": PAIR})]),
    Case("both stopped for less than 5m", "NoValidatorRunningInPair",
         dict([_up("validator", P, "0x40"), _up("validator", B, "0x40")]), "4m"),
    Case("one validator running", "NoValidatorRunningInPair",
         dict([_up("validator", P, "1x40"), _up("validator", B, "0x40")]), "6m"),
    # -- slashing protection ----------------------------------------------------------------------------
    # qrysm creates a per-key failed_* series at its first increment (CounterVec child): it appears at 1.
    Case("attestation refused: failed_attestations appears at 1", "SlashingProtectionRejected",
         {series("validator_failed_attestations", "validator", P, **KEY): "_x10 1x30"}, "3m",
         [Expect(labels("validator", P, **KEY))]),
    Case("second refusal on an existing series", "SlashingProtectionRejected",
         {series("validator_failed_attestations", "validator", P, **KEY): "1x80 2x20"}, "21m",
         [Expect(labels("validator", P, **KEY))]),
    Case("proposal refused (propose_protect.go and propose.go each count it)", "SlashingProtectionRejected",
         {series("validator_failed_proposals", "validator", P, **KEY): "_x20 2x20"}, "5m30s",
         [Expect(labels("validator", P, **KEY))]),
    Case("no failure: qrysm exports no failed_* series at all", "SlashingProtectionRejected",
         {series("validator_successful_attestations", "validator", P, **KEY): "1+1x40"}, "5m"),
    Case("old failures, none recent", "SlashingProtectionRejected",
         {series("validator_failed_attestations", "validator", P, **KEY): "3x120"}, "25m"),
    # -- per-key coverage (expected: 2 keys in p1, rendered from alerting.expectedActiveKeys) ------------
    Case("signing host runs with one of two keys active", "ValidatorKeysNotActive",
         dict([_lk(P, "0x60"), _up("validator", P, "1x60"),
               (series("validator_statuses", "validator", P, pubkey="0xaa"), "3x60"),
               (series("validator_statuses", "validator", P, pubkey="0xbb"), "2x60")]), "10m",
         [Expect({"host": P, "pair": PAIR}, 1)]),
    Case("signing host runs without keys (no validator_statuses at all)", "ValidatorKeysNotActive",
         dict([_lk(P, "0x60"), _up("validator", P, "1x60")]), "10m", [Expect({"host": P, "pair": PAIR}, 2)]),
    Case("both keys active or exiting", "ValidatorKeysNotActive",
         dict([_lk(P, "0x60"), _up("validator", P, "1x60"),
               (series("validator_statuses", "validator", P, pubkey="0xaa"), "3x60"),
               (series("validator_statuses", "validator", P, pubkey="0xbb"), "4x60")]), "10m"),
    Case("keys not yet reported in the first minutes after a start", "ValidatorKeysNotActive",
         dict([_lk(P, "0x60"), _up("validator", P, "0x20 1x40")]), "7m"),
    Case("locked standby without keys", "ValidatorKeysNotActive",
         dict([_lk(P, "0x60"), _up("validator", P, "1x60"), _lk(B, "1x60"), _up("validator", B, "1x60"),
               (series("validator_statuses", "validator", P, pubkey="0xaa"), "3x60"),
               (series("validator_statuses", "validator", P, pubkey="0xbb"), "3x60")]), "10m"),
    # -- beacon connection: blocks streamed to the validator (StreamBlocksAltair) -------------------------
    Case("block stream stops", "ValidatorBeaconDisconnected",
         dict([_lk(P, "0x30"), _up("validator", P, "1x30"), (series("validator_statuses", "validator", P, **KEY),
                                                              "3x30"),
               (series("grpc_client_msg_received_total", "validator", P, **GRPC), "100+1x10 110x20")]), "20m",
         [Expect(labels("validator", P, **GRPC))], interval="1m"),
    Case("keys loaded but no block ever received", "ValidatorBeaconDisconnected",
         dict([_lk(P, "0x30"), _up("validator", P, "1x30"),
               (series("validator_statuses", "validator", P, **KEY), "3x30")]), "10m",
         [Expect(labels("validator", P))], interval="1m"),
    Case("a block every slot", "ValidatorBeaconDisconnected",
         dict([_lk(P, "0x30"), _up("validator", P, "1x30"), (series("validator_statuses", "validator", P, **KEY),
                                                              "3x30"),
               (series("grpc_client_msg_received_total", "validator", P, **GRPC), "100+1x30")]), "20m",
         interval="1m"),
    Case("stream stopped on the locked standby", "ValidatorBeaconDisconnected",
         dict([_lk(B, "1x30"), _up("validator", B, "1x30"), (series("validator_statuses", "validator", B, **KEY),
                                                              "3x30"),
               (series("grpc_client_msg_received_total", "validator", B, **GRPC), "100x30")]), "20m",
         interval="1m"),
    Case("key slashed", "ValidatorSlashing",
         {series("validator_statuses", "validator", P, **KEY): "3x4 5x6"}, "2m",
         [Expect(labels("validator", P, **KEY))]),
    Case("key active", "ValidatorSlashing",
         {series("validator_statuses", "validator", P, **KEY): "3x10"}, "2m"),
    # -- duties -----------------------------------------------------------------------------------------
    Case("no attestation for 175 slots", "NotAttesting",
         dict([(series("beacon_clock_time_slot", "beacon", P), "1000+1x300"),
               (series("validator_last_attested_slot", "validator", P, **KEY), "1000x300"),
               _up("validator", P, "1x300"), _lk(P, "0x300")]), "175m",
         [Expect({"host": P, "pair": PAIR, **KEY}, 175)], interval="1m"),
    Case("attesting every slot", "NotAttesting",
         dict([(series("beacon_clock_time_slot", "beacon", P), "1000+1x300"),
               (series("validator_last_attested_slot", "validator", P, **KEY), "1000+1x300"),
               _up("validator", P, "1x300"), _lk(P, "0x300")]), "175m", interval="1m"),
    Case("old last-attested slot on the locked standby", "NotAttesting",
         dict([(series("beacon_clock_time_slot", "beacon", B), "1000+1x300"),
               (series("validator_last_attested_slot", "validator", B, **KEY), "1000x300"),
               _up("validator", B, "1x300"), _lk(B, "1x300")]), "175m", interval="1m"),
    Case("validator restarted within the last 160 slots", "NotAttesting",
         dict([(series("beacon_clock_time_slot", "beacon", P), "1000+1x300"),
               (series("validator_last_attested_slot", "validator", P, **KEY), "1000x300"),
               _up("validator", P, "1x100 0 1x199"), _lk(P, "0x300")]), "175m", interval="1m"),
    Case("balance dropped over the last epoch", "BalanceDecreasing",
         {series("validator_balance", "validator", P, **KEY): "40000x100 39999x100"}, "150m",
         [Expect(labels("validator", P, **KEY))], interval="1m"),
    Case("balance growing", "BalanceDecreasing",
         {series("validator_balance", "validator", P, **KEY): "40000+0.01x200"}, "150m", interval="1m"),
    Case("backup stopped 22 minutes ago", "SlashingProtectionBackupTooOld",
         dict([(series("quantapool_slashing_protection_backup_timestamp_seconds", "node", P), "0+60x5 300x25"),
               _lk(P, "0x30")]), "27m", [Expect(labels("node", P))], interval="1m"),
    Case("no backup metric on the signing host", "SlashingProtectionBackupTooOld",
         dict([_lk(P, "0x30")]), "6m", [Expect(labels("node", P))], interval="1m"),
    Case("fresh backups", "SlashingProtectionBackupTooOld",
         dict([(series("quantapool_slashing_protection_backup_timestamp_seconds", "node", P), "0+60x30"),
               _lk(P, "0x30")]), "27m", interval="1m"),
    Case("old backup on the locked standby", "SlashingProtectionBackupTooOld",
         dict([(series("quantapool_slashing_protection_backup_timestamp_seconds", "node", B), "300x30"),
               _lk(B, "1x30")]), "27m", interval="1m"),
    Case("key host without lock metric", "ValidatorLockStateUnknown",
         dict([_up("node", P, "1x20"), _up("node", M, "1x20")]), "12m", [Expect(labels("node", P))],
         interval="1m"),
    Case("lock metric exported", "ValidatorLockStateUnknown",
         dict([_up("node", P, "1x20"), _lk(P, "1x20"), _up("node", M, "1x20")]), "12m", interval="1m"),
    # -- clients ----------------------------------------------------------------------------------------
    Case("beacon head stuck", "BeaconHeadNotAdvancing",
         {series("beacon_head_slot", "beacon", P): "100x30"}, "20m", [Expect(labels("beacon", P))], interval="1m"),
    Case("beacon head moving", "BeaconHeadNotAdvancing",
         {series("beacon_head_slot", "beacon", P): "100+1x30"}, "20m", interval="1m"),
    Case("execution head stuck", "ExecutionHeadNotAdvancing",
         {series("chain_head_block", "execution", P): "100x30"}, "20m", [Expect(labels("execution", P))],
         interval="1m"),
    Case("execution head moving", "ExecutionHeadNotAdvancing",
         {series("chain_head_block", "execution", P): "100+1x30"}, "20m", interval="1m"),
    Case("beacon 100 slots behind", "BeaconNotSynced",
         {series("beacon_clock_time_slot", "beacon", P): "1000+1x30",
          series("beacon_head_slot", "beacon", P): "900+1x30"}, "20m", [Expect(labels("beacon", P), 100)],
         interval="1m"),
    Case("beacon 2 slots behind", "BeaconNotSynced",
         {series("beacon_clock_time_slot", "beacon", P): "1000+1x30",
          series("beacon_head_slot", "beacon", P): "998+1x30"}, "20m", interval="1m"),
    Case("execution headers ahead of blocks", "ExecutionNotSynced",
         {series("chain_head_header", "execution", P): "1000+1x30",
          series("chain_head_block", "execution", P): "900+1x30"}, "20m", [Expect(labels("execution", P), 100)],
         interval="1m"),
    Case("execution behind the other host", "ExecutionNotSynced",
         {series("chain_head_header", "execution", P): "900+1x30", series("chain_head_block", "execution", P):
          "900+1x30", series("chain_head_header", "execution", B): "1000+1x30",
          series("chain_head_block", "execution", B): "1000+1x30"}, "20m", [Expect(labels("execution", P), 100)],
         interval="1m"),
    Case("execution clients in step", "ExecutionNotSynced",
         {series("chain_head_header", "execution", P): "1000+1x30", series("chain_head_block", "execution", P):
          "1000+1x30", series("chain_head_header", "execution", B): "1001+1x30",
          series("chain_head_block", "execution", B): "1001+1x30"}, "20m", interval="1m"),
    Case("few peers on both clients", "LowPeers",
         {series("p2p_peer_count", "beacon", P, state="Connected"): "2x30",
          series("p2p_peer_count", "beacon", P, state="Disconnected"): "0x30",
          series("p2p_peers", "execution", B): "1x30"}, "20m",
         [Expect(labels("beacon", P, state="Connected"), 2), Expect(labels("execution", B), 1)], interval="1m"),
    Case("enough peers", "LowPeers",
         {series("p2p_peer_count", "beacon", P, state="Connected"): "50x30",
          series("p2p_peer_count", "beacon", P, state="Disconnected"): "0x30",
          series("p2p_peers", "execution", B): "20x30"}, "20m", interval="1m"),
    # -- hosts ------------------------------------------------------------------------------------------
    Case("clock unsynchronised", "ClockNotSynchronised",
         {series("node_timex_sync_status", "node", M): "0x20", series("node_timex_offset_seconds", "node", M):
          "0x20"}, "3m", [Expect(labels("node", M))]),
    Case("clock 500 ms off", "ClockNotSynchronised",
         {series("node_timex_sync_status", "node", P): "1x20", series("node_timex_offset_seconds", "node", P):
          "-0.5x20"}, "3m", [Expect(labels("node", P))]),
    Case("clock fine", "ClockNotSynchronised",
         {series("node_timex_sync_status", "node", P): "1x20", series("node_timex_offset_seconds", "node", P):
          "0.001x20"}, "3m"),
    Case("volume filling at 1.2 GB/h", "DiskWillFillIn24h",
         {series("node_filesystem_avail_bytes", "node", M, **FS): "30000000000-100000000x100",
          series("node_filesystem_size_bytes", "node", M, **FS): "100000000000x100",
          series("node_filesystem_readonly", "node", M, **FS): "0x100"}, "8h",
         [Expect(labels("node", M, **FS))], interval="5m"),
    Case("volume usage flat", "DiskWillFillIn24h",
         {series("node_filesystem_avail_bytes", "node", M, **FS): "30000000000x100",
          series("node_filesystem_size_bytes", "node", M, **FS): "100000000000x100",
          series("node_filesystem_readonly", "node", M, **FS): "0x100"}, "8h", interval="5m"),
    Case("5% free", "DiskNearlyFull",
         {series("node_filesystem_avail_bytes", "node", P, **FS): "5000000000x20",
          series("node_filesystem_size_bytes", "node", P, **FS): "100000000000x20",
          series("node_filesystem_readonly", "node", P, **FS): "0x20"}, "10m", [Expect(labels("node", P, **FS))],
         interval="1m"),
    Case("5% free but read-only", "DiskNearlyFull",
         {series("node_filesystem_avail_bytes", "node", P, **FS): "5000000000x20",
          series("node_filesystem_size_bytes", "node", P, **FS): "100000000000x20",
          series("node_filesystem_readonly", "node", P, **FS): "1x20"}, "10m", interval="1m"),
    Case("50% free", "DiskNearlyFull",
         {series("node_filesystem_avail_bytes", "node", P, **FS): "50000000000x20",
          series("node_filesystem_size_bytes", "node", P, **FS): "100000000000x20",
          series("node_filesystem_readonly", "node", P, **FS): "0x20"}, "10m", interval="1m"),
    Case("6% memory available", "MemoryPressure",
         {series("node_memory_MemAvailable_bytes", "node", P): "1000000000x20",
          series("node_memory_MemTotal_bytes", "node", P): "16000000000x20",
          series("node_vmstat_oom_kill", "node", P): "0x20"}, "10m", [Expect(labels("node", P))], interval="1m"),
    Case("OOM kill", "MemoryPressure",
         {series("node_memory_MemAvailable_bytes", "node", P): "8000000000x20",
          series("node_memory_MemTotal_bytes", "node", P): "16000000000x20",
          series("node_vmstat_oom_kill", "node", P): "0x5 1x15"}, "12m", [Expect(labels("node", P))],
         interval="1m"),
    Case("memory fine", "MemoryPressure",
         {series("node_memory_MemAvailable_bytes", "node", P): "8000000000x20",
          series("node_memory_MemTotal_bytes", "node", P): "16000000000x20",
          series("node_vmstat_oom_kill", "node", P): "2x20"}, "12m", interval="1m"),
    Case("beacon target down", "TargetDown",
         dict([_up("beacon", P, "0x20"), _up("validator", B, "0x20")]), "4m", [Expect(labels("beacon", P))]),
    Case("only the standby validator down", "TargetDown",
         dict([_up("beacon", P, "1x20"), _up("validator", B, "0x20")]), "4m"),
    # -- pool -------------------------------------------------------------------------------------------
    Case("exporter never succeeded", "ContractExporterStale",
         {series("quantapool_exporter_last_success_timestamp_seconds", "contract_exporter", M): "0x30"}, "22m",
         [Expect(labels("contract_exporter", M))], interval="1m"),
    Case("exporter succeeding every minute", "ContractExporterStale",
         {series("quantapool_exporter_last_success_timestamp_seconds", "contract_exporter", M): "0+60x30"},
         "22m", interval="1m"),
    Case("exporter failing", "ContractExporterFailing",
         {series("quantapool_exporter_up", "contract_exporter", M): "0x30"}, "20m",
         [Expect(labels("contract_exporter", M))], interval="1m"),
    Case("exporter ok", "ContractExporterFailing",
         {series("quantapool_exporter_up", "contract_exporter", M): "1x30"}, "20m", interval="1m"),
    Case("no new head for 20 minutes", "ContractExporterHeadStale",
         {series("quantapool_chain_head_age_seconds", "contract_exporter", M): "0+60x30"}, "20m",
         [Expect(labels("contract_exporter", M), 1200)], interval="1m"),
    Case("head advancing every minute", "ContractExporterHeadStale",
         {series("quantapool_chain_head_age_seconds", "contract_exporter", M): "0 60 0 60 0 60 0 60 0 60 0 60 0 "
          "60 0 60 0 60 0 60 0 60 0 60 0 60 0 60 0 60"}, "20m", interval="1m"),
    Case("stale for only 12 minutes", "ContractExporterHeadStale",
         {series("quantapool_chain_head_age_seconds", "contract_exporter", M): "0x7 0+60x12"}, "20m",
         interval="1m"),
    Case("head regressed", "ContractExporterHeadRegressed",
         {series("quantapool_chain_head_regressions_total", "contract_exporter", M): "0x10 1x20"}, "15m",
         [Expect(labels("contract_exporter", M))], interval="1m"),
    Case("no regression", "ContractExporterHeadRegressed",
         {series("quantapool_chain_head_regressions_total", "contract_exporter", M): "0x30"}, "15m", interval="1m"),
    Case("regression 40 minutes ago", "ContractExporterHeadRegressed",
         {series("quantapool_chain_head_regressions_total", "contract_exporter", M): "0x5 1x60"}, "50m",
         interval="1m"),
    Case("deposit pool paused", "PoolPaused",
         {series("quantapool_pool_paused", "contract_exporter", M, contract="deposit_pool"): "1x20",
          series("quantapool_pool_paused", "contract_exporter", M, contract="stqrl"): "0x20"}, "10m",
         [Expect(labels("contract_exporter", M, contract="deposit_pool"))], interval="1m"),
    Case("nothing paused", "PoolPaused",
         {series("quantapool_pool_paused", "contract_exporter", M, contract="deposit_pool"): "0x20"}, "10m",
         interval="1m"),
    # -- meta -------------------------------------------------------------------------------------------
    # DeadMansSwitch has no non-firing case by design: it must fire even when nothing else is scraped.
    Case("heartbeat without any series", "DeadMansSwitch", {}, "1m", [Expect({}, 1)]),
    Case("notification failures", "AlertmanagerNotificationsFailing",
         {series("alertmanager_notifications_failed_total", "alertmanager", M, integration="telegram"):
          "0x5 1x10"}, "8m", [Expect(labels("alertmanager", M, integration="telegram"))], interval="1m"),
    Case("notifications fine", "AlertmanagerNotificationsFailing",
         {series("alertmanager_notifications_failed_total", "alertmanager", M, integration="telegram"): "0x15"},
         "8m", interval="1m"),
    Case("rule evaluation failures", "PrometheusRuleFailures",
         {series("prometheus_rule_evaluation_failures_total", "prometheus", M, rule_group="g"): "0x5 2x10"},
         "8m", [Expect(labels("prometheus", M, rule_group="g"))], interval="1m"),
    Case("rules fine", "PrometheusRuleFailures",
         {series("prometheus_rule_evaluation_failures_total", "prometheus", M, rule_group="g"): "0x15"},
         "8m", interval="1m"),
]

#: Alerts that by design have no non-firing case.
ALWAYS_FIRING = frozenset({"DeadMansSwitch"})
