"""Host firewall rulesets (nftables), the filter that also covers the private network.

Why a host firewall at all: Hetzner's cloud firewall does not filter the private network, so metrics, RPC
and SSH on private addresses would be open to every server in the network without these rules.

`ruleset()` builds the skeleton every role shares (policy drop, conntrack, loopback, ICMP essentials, DHCP
replies, reverse-path filter, SSH) and takes the role's own accept rules; `host_ruleset()` is a host's full
ruleset (key host or monitoring). It travels in the host's `firewall` bundle (`firewall_bundle()`), which
the host validates with `nft -c -f`, loads atomically (the file starts with `flush ruleset`) and reverts by
itself unless the later `<host>-firewall-confirm` step connects (cloud_init/bundles.py).

User-data carries only `first_boot_ruleset()`: the skeleton without role rules (SSH from the trusted CIDRs
and the private subnet, everything else dropped), so a fresh server is closed until its bundle arrives.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cloud_init import HostFile, HostRenderInputs
from cloud_init.bundles import Bundle, Check
from cloud_init.host_keys import METADATA_IPV4
from cloud_init.render import render
from core import ports


def _set_elements(values: Sequence[str]) -> str:
    return ", ".join(str(ipaddress.ip_network(v, strict=True)) for v in values)


def ruleset(inputs: HostRenderInputs, role_rules: Sequence[str]) -> str:
    """The complete /etc/nftables.conf: shared skeleton plus `role_rules` (nft statements of the input chain).

    SSH is accepted from `network.ssh_allowed_cidrs` (IPv4 and IPv6 sets; no rule when empty) and from the
    private subnet. Why the subnet: in production qpool and the bootstrap connect over the public address,
    but the lab reaches hosts only over the private bridge, and the pair's peer key host copies
    slashing-protection backups over SSH on the private network.
    """
    cfg = inputs.config
    v4 = [c for c in cfg.network.ssh_allowed_cidrs if ipaddress.ip_network(c).version == 4]
    v6 = [c for c in cfg.network.ssh_allowed_cidrs if ipaddress.ip_network(c).version == 6]
    return render(
        "nftables.conf.j2",
        host=inputs.host,
        ssh_port=ports.SSH,
        ssh_v4=_set_elements(v4),
        ssh_v6=_set_elements(v6),
        private_subnet=str(ipaddress.IPv4Network(cfg.network.subnet)),
        role_rules=list(role_rules),
        metadata_ip=METADATA_IPV4,
    )


def _ports(values: Sequence[int]) -> str:
    return ", ".join(str(p) for p in sorted(set(values)))


def key_host_rules(inputs: HostRenderInputs) -> list[str]:
    """Validator hosts: P2P from anywhere; metrics and execution RPC from the monitoring server only."""
    mon = inputs.config.monitoring.private_ip
    tcp_p2p = [p.port for p in ports.P2P_PORTS if p.protocol == "tcp"]
    udp_p2p = [p.port for p in ports.P2P_PORTS if p.protocol == "udp"]
    return [
        "# engine API, beacon gRPC and REST: loopback only (explicit, so a broader accept added later",
        "# cannot expose them; the clients also bind them to 127.0.0.1)",
        f"tcp dport {{ {_ports(ports.LOCAL_ONLY_PORTS)} }} counter drop",
        "# clients' peer-to-peer ports: the whole internet",
        f"tcp dport {{ {_ports(tcp_p2p)} }} accept",
        f"udp dport {{ {_ports(udp_p2p)} }} accept",
        "# metrics (execution, beacon, validator incl. /db/backup, node exporter) and execution JSON-RPC:",
        "# the monitoring server's private address only",
        f"ip saddr {mon} tcp dport {{ {_ports([*ports.KEY_HOST_METRICS_PORTS, ports.EXECUTION_RPC])} }} accept",
    ]


def key_host_ruleset(inputs: HostRenderInputs) -> str:
    return ruleset(inputs, key_host_rules(inputs))


def monitoring_rules(inputs: HostRenderInputs) -> list[str]:
    """Monitoring server: Grafana (HTTPS) from the trusted Grafana CIDRs only.

    Prometheus and Alertmanager listen on loopback, the contract exporter and node exporter are scraped
    from this host itself (loopback traffic is accepted by the shared skeleton), so nothing else is open.
    """
    cidrs = inputs.config.network.grafana_allowed_cidrs
    v4 = ", ".join(c for c in cidrs if ipaddress.ip_network(c).version == 4)
    v6 = ", ".join(c for c in cidrs if ipaddress.ip_network(c).version == 6)
    rules = ["# Grafana (HTTPS): trusted operator addresses only"]
    if v4:
        rules.append(f"ip saddr {{ {v4} }} tcp dport {ports.GRAFANA} accept")
    if v6:
        rules.append(f"ip6 saddr {{ {v6} }} tcp dport {ports.GRAFANA} accept")
    return rules


def host_ruleset(inputs: HostRenderInputs) -> str:
    """The host's complete ruleset for its role (what the firewall bundle installs)."""
    if inputs.host.is_key_host:
        return key_host_ruleset(inputs)
    return ruleset(inputs, monitoring_rules(inputs))


def first_boot_ruleset(inputs: HostRenderInputs) -> str:
    """User-data's ruleset: the shared skeleton only (SSH from trusted CIDRs + private subnet; drop the rest)."""
    return ruleset(inputs, ["# first boot: role rules arrive with the firewall bundle"])


NFTABLES_CONF = "/etc/nftables.conf"


def firewall_bundle(inputs: HostRenderInputs) -> Bundle:
    """`firewall`: the full ruleset, checked with `nft -c` on the host, applied with auto-revert."""
    return Bundle(
        "firewall",
        (HostFile(NFTABLES_CONF, host_ruleset(inputs), "0755"),),
        checks=(Check("nft -c", f'nft -c -f "$STAGED{NFTABLES_CONF}"'),),
        firewall=NFTABLES_CONF,
    )
