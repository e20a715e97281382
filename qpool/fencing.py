"""Fencing: make certain, through the Hetzner API, that an unreachable validator host is powered off.

Why: when the primary cannot be reached, the backup may sign only once the primary provably
cannot. "Provably" means the API reported ``status == "off"`` after a hard power-off: an ACPI
shutdown is only a request a hung OS may ignore, and an action's ``success`` alone says the
command ran, not that the machine is off. Until ``off`` is observed this module never reports
success and never writes the fenced labels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import hcloud
from hcloud.servers import Server

from qpool.errors import QpoolError
from qpool.hetzner import HetznerError, ServerInfo, call_with_retry, set_labels

log = logging.getLogger("qpool.fencing")

FENCED_LABEL = "qpool-fenced"
FENCED_AT_LABEL = "qpool-fenced-at"
STATUS_OFF = "off"

T = TypeVar("T")


class FenceError(QpoolError):
    """Fencing failed or could not be verified: the backup must NOT start signing."""


@dataclass(frozen=True)
class FenceResult:
    """A verified fence. ``polls`` counts action and server status reads made while waiting."""

    server_id: int
    name: str
    fenced_at: float
    already_off: bool
    polls: int


def is_fenced(server: ServerInfo) -> bool:
    """True only if the server carries the fenced label AND is off right now.

    The label alone is history: a server powered on again after its fence is not fenced.
    """
    return server.labels.get(FENCED_LABEL) == "true" and server.status == STATUS_OFF


def verify_off(client: hcloud.Client, server_id: int, *, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Ask the API once whether the server is off.

    Raises :class:`FenceError` when the API cannot answer: "unknown" must not be confused with
    "not off" by a caller that only branches on the boolean.
    """
    try:
        server = call_with_retry(
            lambda: client.servers.get_by_id(server_id),
            what=f"reading status of server {server_id}",
            sleep=sleep,
        )
    except HetznerError as exc:
        raise FenceError(f"cannot verify that server {server_id} is off: {exc}") from exc
    return server.status == STATUS_OFF


class _Fence:
    """One fencing run: the injected time functions and the poll count travel together."""

    def __init__(
        self,
        client: hcloud.Client,
        server_id: int,
        *,
        poll_interval: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.client = client
        self.server_id = server_id
        self.label = f"server {server_id}"
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep
        self.polls = 0

    def call(self, fn: Callable[[], T], what: str, deadline: float | None = None) -> T:
        try:
            return call_with_retry(
                fn, what=f"{what} of {self.label}", sleep=self.sleep,
                clock=self.clock if deadline is not None else None, deadline=deadline,
            )
        except HetznerError as exc:
            raise FenceError(f"fencing failed: {exc}; the backup must not start") from exc

    def read_server(self, deadline: float | None = None) -> ServerInfo:
        server = self.call(lambda: self.client.servers.get_by_id(self.server_id), "reading status", deadline)
        info = ServerInfo.from_server(server)
        self.label = f"server {info.name} ({self.server_id})"
        return info

    def wait_before_next_poll(self, deadline: float) -> None:
        self.sleep(max(0.0, min(self.poll_interval, deadline - self.clock())))

    def power_off(self, timeout: float) -> None:
        """Hard power-off, then poll the action until it reports success."""
        deadline = self.clock() + timeout
        log.info("%s: hard power-off requested", self.label)
        action = self.call(
            lambda: self.client.servers.power_off(Server(id=self.server_id)), "power-off", deadline
        )
        action_id = action.id
        log.info("%s: power-off action %s is %s", self.label, action_id, action.status)
        status = action.status
        while True:
            if status == "success":
                log.info("%s: power-off action %s succeeded", self.label, action_id)
                return
            if status == "error":
                error = action.error or {}
                raise FenceError(
                    f"fencing {self.label} failed: power-off action {action_id} ended in error "
                    f"{error.get('code', '?')}: {error.get('message', 'no message')}; "
                    "the backup must not start — check the server in the Hetzner console"
                )
            if self.clock() >= deadline:
                raise FenceError(
                    f"fencing {self.label} failed: power-off action {action_id} still {status} "
                    f"after {timeout:g}s; the backup must not start — check the Hetzner console"
                )
            self.wait_before_next_poll(deadline)
            action = self.call(
                lambda: self.client.servers.actions.get_by_id(action_id),
                f"polling power-off action {action_id}", deadline,
            )
            self.polls += 1
            status = action.status
            log.debug("%s: power-off action %s is %s", self.label, action_id, status)

    def wait_off(self, timeout: float) -> ServerInfo:
        """Poll the server until the API reports ``off``; anything else after ``timeout`` fails."""
        deadline = self.clock() + timeout
        while True:
            info = self.read_server(deadline)
            self.polls += 1
            if info.status == STATUS_OFF:
                log.info("%s: status is off (verified)", self.label)
                return info
            if self.clock() >= deadline:
                raise FenceError(
                    f"fencing {self.label} failed: status still {info.status!r}, not 'off', after "
                    f"{timeout:g}s; the backup must not start — check the Hetzner console"
                )
            log.debug("%s: status %s, waiting for off", self.label, info.status)
            self.wait_before_next_poll(deadline)


def fence_server(
    client: hcloud.Client,
    server_id: int,
    *,
    reason: str,
    action_timeout: float = 120,
    off_timeout: float = 180,
    poll_interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall_clock: Callable[[], float] = time.time,
) -> FenceResult:
    """Hard power-off ``server_id``, verify ``status == "off"``, then label it fenced.

    Idempotent: the hard power-off is sent every time, also to a server the API already reports off
    (a wrong "off" must not save a running source from its fence), then ``off`` is polled for and
    the label written, so a resumed failover simply runs this again. Raises :class:`FenceError` on anything short of a
    verified ``off``, naming the server and the API error code; no label is written then.
    """
    if poll_interval <= 0 or action_timeout <= 0 or off_timeout <= 0:
        raise ValueError("poll_interval, action_timeout and off_timeout must be positive")
    fence = _Fence(client, server_id, poll_interval=poll_interval, clock=clock, sleep=sleep)
    log.info("fencing server %d: %s", server_id, reason)

    initial = fence.read_server(clock() + action_timeout)
    already_off = initial.status == STATUS_OFF
    log.info("%s: status %s%s", fence.label, initial.status, " (sending the power-off anyway)" if already_off else "")
    # Always sent, also when the API already says "off": that reading may be wrong (a stale or mistaken
    # status), and a hard power-off of a server that really is off changes nothing.
    try:
        fence.power_off(action_timeout)
    except FenceError as exc:
        if not already_off:
            raise
        # The API may refuse powering off what it believes is off; the poll below still has to see "off".
        log.warning("%s: power-off of an already-off server not confirmed (%s); verifying its status", fence.label,
                    exc)

    verified = fence.wait_off(off_timeout)
    fenced_at = wall_clock()
    labels = {FENCED_LABEL: "true", FENCED_AT_LABEL: str(int(fenced_at))}
    try:
        labelled = set_labels(client, server_id, labels, sleep=sleep)
    except HetznerError as exc:
        raise FenceError(
            f"{fence.label} is off but could not be labelled fenced: {exc}; re-run the fence"
        ) from exc
    if labelled.status != STATUS_OFF:
        raise FenceError(
            f"{fence.label} reported {labelled.status!r} right after it was seen off: someone "
            "powered it on again; the backup must not start — find out who and re-run the fence"
        )
    log.info("%s: fenced at %d (reason: %s)", fence.label, int(fenced_at), reason)
    return FenceResult(
        server_id=server_id,
        name=verified.name,
        fenced_at=fenced_at,
        already_off=already_off,
        polls=fence.polls,
    )
