"""The host's own SSH host key in first-boot user-data: the one secret user-data may carry (DESIGN.md §5).

Why: every SSH connection (pulumi-command's bootstrap steps and `qpool`) must check a host key known before
first contact. The program generates each host's ED25519 host key (pulumi-tls), cloud-init installs it with
`ssh_keys` before sshd first answers, and the same public key is handed to pulumi-command as the
connection's expected `host_key` and exported (`hostKeys`) for `qpool` to pin. Nothing is read over an
unverified channel. Whoever can read a server's user-data (root on the host, the Hetzner project) can control
that server anyway; the metadata service is closed to non-root processes by the host firewall
(cloud_init/nftables.py: output chain).

`ssh_keys` given: cloud-init deletes the image's keys (`ssh_deletekeys`) and generates no other type, so the
pinned key is the only host key on disk, matching sshd's `HostKey`/`HostKeyAlgorithms ssh-ed25519`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: cloud-config keys (cloud-init cc_ssh: `<type>_private`, `<type>_public`).
PRIVATE_FIELD = "ed25519_private"
PUBLIC_FIELD = "ed25519_public"
#: Hetzner's metadata service (user-data included); the host firewall lets only root reach it.
METADATA_IPV4 = "169.254.169.254"
#: Where cloud-init writes the public half (cc_ssh CONFIG_KEY_TO_FILE); sshd serves exactly this key.
PUBLIC_KEY_PATH = "/etc/ssh/ssh_host_ed25519_key.pub"

_PEM_HEADER = "-----BEGIN OPENSSH PRIVATE KEY-----"
_PEM_FOOTER = "-----END OPENSSH PRIVATE KEY-----"
#: Base64 characters of an unencrypted OpenSSH ED25519 private key (empty comment: 312) plus room for a
#: 30-byte comment; wrapped at 64 characters (Go's PEM encoder, the narrowest common width: most lines,
#: so most YAML indentation). tests/hostfiles/test_host_keys.py checks real keys never render longer.
_PLACEHOLDER_BODY_CHARS = 352


@dataclass(frozen=True)
class HostKey:
    """One host's SSH host key pair, OpenSSH encodings. `repr` never shows the private half."""

    private_openssh: str = field(repr=False)
    public_openssh: str

    def public_line(self) -> str:
        """`<type> <base64>`: the public key without comment or newline (known_hosts, pulumi-command)."""
        return " ".join(self.public_openssh.split()[:2])


def _placeholder() -> HostKey:
    body = "A" * _PLACEHOLDER_BODY_CHARS
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    private = "\n".join([_PEM_HEADER, *lines, _PEM_FOOTER]) + "\n"
    # the length of a real ed25519 public key (51 wire bytes: 68 base64 characters); the comment is dropped
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + "/" * 43 + "\n"
    return HostKey(private, public)


#: Sizes user-data before the real key exists (components/stack.py preflight); no private half exists.
PLACEHOLDER_HOST_KEY = _placeholder()


def cloud_config(host_key: HostKey | None) -> dict[str, object]:
    """The cloud-config entries that install `host_key` as the host's only SSH host key ({} without one)."""
    if host_key is None:
        return {}
    return {
        "ssh_keys": {PRIVATE_FIELD: host_key.private_openssh, PUBLIC_FIELD: host_key.public_line()},
        # remove any key baked into the image, so only the pinned key can ever be presented
        "ssh_deletekeys": True,
    }


def redacted(doc: dict, mark: str) -> dict:
    """A copy of a cloud-config mapping with the private host key replaced by `mark` (for review output)."""
    keys = doc.get("ssh_keys")
    if not isinstance(keys, dict):
        return doc
    return {**doc, "ssh_keys": {k: (mark if k.endswith("_private") else v) for k, v in keys.items()}}
