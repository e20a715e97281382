"""Each host's SSH identity, known before the host exists (issue 13: trust on first contact).

The program generates the host key (pulumi-tls, ED25519; the private half a secret output), hands it to
cloud-init in user-data (cloud_init/host_keys.py) and uses the public half as pulumi-command's expected
`host_key` on every bootstrap step and as the `hostKeys` stack output `qpool` pins. Replacing a server keeps
its key (same resource), so a rebuilt host on the same name is still verified; rotating a host key means
replacing this resource AND the server (user-data is in `ignore_changes`).
"""

from __future__ import annotations

import pulumi
import pulumi_tls as tls

from cloud_init.host_keys import HostKey


def host_ssh_key(name: str, parent: pulumi.Resource) -> tls.PrivateKey:
    """`<host>-ssh-host-key`: the host's ED25519 host key, private encodings secret."""
    return tls.PrivateKey(f"{name}-ssh-host-key", algorithm="ED25519",
                          opts=pulumi.ResourceOptions(parent=parent,
                                                      additional_secret_outputs=["privateKeyOpenssh",
                                                                                 "privateKeyPem"]))


def host_key_of(key: tls.PrivateKey) -> pulumi.Output[HostKey]:
    """Both halves as a `HostKey`, for rendering user-data (the Output stays secret)."""
    return pulumi.Output.secret(pulumi.Output.all(key.private_key_openssh, key.public_key_openssh).apply(
        lambda v: HostKey(private_openssh=v[0], public_openssh=v[1])))


def public_line(key: tls.PrivateKey) -> pulumi.Output[str]:
    """`ssh-ed25519 <base64>`: what pulumi-command's `host_key` and known_hosts expect."""
    return key.public_key_openssh.apply(lambda k: " ".join(k.split()[:2]))
