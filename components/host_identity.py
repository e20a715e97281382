"""Each host's SSH identity, known before the host exists (issue 13: trust on first contact).

The program generates the host key (pulumi-tls, ED25519; the private half a secret output), hands it to
cloud-init in user-data (cloud_init/host_keys.py) and uses the public half as pulumi-command's expected
`host_key` on every bootstrap step and as the `hostKeys` stack output `qpool` pins. Replacing a server keeps
its key (same resource), so a rebuilt host on the same name is still verified; rotating a host key means
replacing this resource AND the server (user-data is in `ignore_changes`). The same keys are pinned by the
key hosts for their slashing-protection backup shipping (`ship_known_hosts`), so no SSH connection inside
the stack trusts on first use either.
"""

from __future__ import annotations

import pulumi
import pulumi_tls as tls

from cloud_init.host_keys import HostKey
from core.config import HostSpec, StackConfig


def host_ssh_key(name: str) -> tls.PrivateKey:
    """`<host>-ssh-host-key`: the host's ED25519 host key, private encodings secret."""
    return tls.PrivateKey(f"{name}-ssh-host-key", algorithm="ED25519",
                          opts=pulumi.ResourceOptions(additional_secret_outputs=["privateKeyOpenssh",
                                                                                 "privateKeyPem"]))


def host_ssh_keys(cfg: StackConfig) -> dict[str, tls.PrivateKey]:
    """Every host's key, created before any host: a key host needs its backup targets' keys (its peer's and
    the monitoring server's) to pin them, so no host can own only its own key."""
    return {host.name: host_ssh_key(host.name) for host in cfg.hosts()}


def ship_known_hosts(cfg: StackConfig, host: HostSpec, keys: dict[str, tls.PrivateKey]) -> pulumi.Output[str]:
    """known_hosts for a key host's backup shipping: each target's private address and pinned key.

    The targets are the pair's other key host and the monitoring server (cloud_init/host_tools.py
    `backup_targets`): qp-validator-ctl ships with StrictHostKeyChecking=yes against exactly these lines."""
    targets = [h for h in cfg.key_hosts(host.pair) if h.name != host.name] + [cfg.monitoring_host()]
    lines = [public_line(keys[t.name]).apply(lambda key, ip=t.private_ip: f"{ip} {key}\n") for t in targets]
    return pulumi.Output.all(*lines).apply(lambda v: "".join(v))


def ship_key(host_name: str) -> tls.PrivateKey:
    """`qp-backup-ship-key-<host>`: the key `host` ships its slashing-protection backups with (ED25519, private
    encodings secret). One per key host, so a receiver knows the sender from the key that authenticated."""
    return tls.PrivateKey(f"qp-backup-ship-key-{host_name}", algorithm="ED25519",
                          opts=pulumi.ResourceOptions(additional_secret_outputs=["privateKeyOpenssh",
                                                                                 "privateKeyPem"]))


def ship_senders(senders: list[HostSpec],
                 public_keys: dict[str, pulumi.Input[str]]) -> pulumi.Output[dict[str, dict[str, str]]]:
    """A receiver's sender map for its host tools: sender host name -> its private address and the public half
    of its shipping key (`ssh-ed25519 <base64>`). qp-validator-ctl writes one authorized_keys line per entry."""
    names = [h.name for h in senders]
    keys = [pulumi.Output.from_input(public_keys[name]) for name in names]
    return pulumi.Output.all(*keys).apply(lambda vals: {
        h.name: {"address": h.private_ip, "public_key": " ".join(str(k).split()[:2])}
        for h, k in zip(senders, vals, strict=True)})


def host_key_of(key: tls.PrivateKey) -> pulumi.Output[HostKey]:
    """Both halves as a `HostKey`, for rendering user-data (the Output stays secret)."""
    return pulumi.Output.secret(pulumi.Output.all(key.private_key_openssh, key.public_key_openssh).apply(
        lambda v: HostKey(private_openssh=v[0], public_openssh=v[1])))


def public_line(key: tls.PrivateKey) -> pulumi.Output[str]:
    """`ssh-ed25519 <base64>`: what pulumi-command's `host_key` and known_hosts expect."""
    return key.public_key_openssh.apply(lambda k: " ".join(k.split()[:2]))
