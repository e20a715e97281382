"""Is a host unreachable, or did one SSH call fail? Several probes that agree, before anything is decided.

Why: "unreachable" chooses the fenced path, and the fenced path powers the host off and idles the pair for
the epoch gate. One failed SSH call (exit 255) is not enough evidence for that: a 5 s connect timeout on a
busy network, or a wrong deploy key, would power off a healthy signer. So a failed call is followed by more
probes over a short window; the host counts as unreachable only if every probe failed. Each probe tells the
TCP connect to the SSH port apart from the SSH handshake, so the report says which of the two failed.

Errors that are not "unreachable" are never turned into it: an authentication failure (wrong key, key not
authorised) and a host-key mismatch raise at once (:class:`qpool.remote.AuthFailure`,
:class:`qpool.remote.HostKeyMismatch`) and stop the operation, whatever the other probes say.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qpool.inventory import HostRecord

if TYPE_CHECKING:
    from qpool.context import Context
    from qpool.remote import Unreachable

#: Probes in all (the failed call that triggered the check counts as the first one).
PROBES = 3
#: Seconds between probes: the window is (PROBES - 1) * PROBE_INTERVAL plus the probes' own timeouts.
PROBE_INTERVAL = 3.0
#: Timeout of the TCP connect to the SSH port (the SSH handshake keeps the Ssh object's ConnectTimeout).
TCP_TIMEOUT = 3.0
SSH_PORT = 22

#: ssh(1)'s words for "the server said no to our key": an error to fix, never "unreachable".
_AUTH_WORDS = ("Permission denied", "Too many authentication failures", "Authentication failed",
               "no mutual signature algorithm", "Load key", "invalid format")
_HOSTKEY_WORDS = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed",
                  "No matching host key type found", "no matching host key type found")
#: ssh(1)'s words for a TCP-level failure (nothing listened, or nothing answered at all).
_TCP_WORDS = ("Connection timed out", "Connection refused", "No route to host", "Network is unreachable",
              "Could not resolve hostname", "Operation timed out")


def classify_ssh_failure(stderr: str) -> str:
    """Why an `ssh` exited 255: "hostkey", "auth", "tcp" (connect failed) or "handshake" (anything else).

    Host key first: ssh prints the host-key warning before it would ever try a key.
    """
    if any(word in stderr for word in _HOSTKEY_WORDS):
        return "hostkey"
    if any(word in stderr for word in _AUTH_WORDS):
        return "auth"
    if any(word in stderr for word in _TCP_WORDS) and "banner exchange" not in stderr:
        return "tcp"
    return "handshake"


def status_or_unreachable(ctx: Context, host: HostRecord) -> dict[str, Any]:
    """`qp-validator-ctl status` on `host`; if it fails as unreachable, probe again before believing it."""
    from qpool.remote import Unreachable

    try:
        return ctx.ssh.status(host)
    except Unreachable as exc:
        return settle(ctx, host, exc)


def settle(ctx: Context, host: HostRecord, first: Unreachable) -> dict[str, Any]:
    """After one failed call: the host's status if any further probe gets one; if every probe failed, raise
    Unreachable naming each probe's outcome. AuthFailure / HostKeyMismatch from a probe propagate (the
    operation stops)."""
    from qpool.remote import Unreachable

    outcomes = [f"ssh: {_short(first)}"]
    for _ in range(PROBES - 1):
        ctx.sleep(PROBE_INTERVAL)
        tcp_error = ctx.ssh.tcp_probe(host, SSH_PORT, TCP_TIMEOUT)
        if tcp_error is not None:
            outcomes.append(f"tcp {SSH_PORT}: {tcp_error}")
            continue
        try:
            return ctx.ssh.status(host)
        except Unreachable as exc:
            outcomes.append(f"tcp {SSH_PORT}: connected; ssh handshake: {_short(exc)}")
    window = (PROBES - 1) * PROBE_INTERVAL
    raise Unreachable(f"{host.name} ({host.address}): unreachable in all {PROBES} probes over {window:.0f}s+ "
                      f"({' | '.join(outcomes)})")


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text.split("): ", 1)[-1][:160]
