"""RPC endpoint fallback and head tracking: which node this cycle reads from, and is its head current.

Why a list: a fixed primary may be fenced, stopped or resyncing, and the execution client runs on both
hosts of every pair, so any of them can answer the same reads. Each cycle asks the endpoints for their
head, in the configured order, and reads everything else from the first one whose head is current:
higher than the highest head the exporter has seen, or equal to it and not older than
``head_stale_seconds``. When none is current, the one with the highest head is used (the earliest in
the list on a tie) and the cycle reports why (regressed or stale).

Head state is the exporter's own view (no block timestamps are needed): the highest head it has read,
and when it first read it. A head lower than that is a regression: reporting data read at it would put
old data out as current, so the collector skips the reads of that cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from exporter.rpc import RpcClient, RpcError


def endpoint_label(url: str) -> str:
    """The URL as a label value, without any userinfo (a URL may carry credentials)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


@dataclass
class Selection:
    """The outcome of one cycle's endpoint probe."""

    client: RpcClient | None = None
    url: str | None = None
    head: int | None = None
    regressed_from: int | None = None  # the highest head seen, when ``head`` is lower
    stale_seconds: float | None = None  # age of the head, when older than the stale bound
    errors: list[str] = field(default_factory=list)  # one line per endpoint that did not answer
    probed: dict[str, int | None] = field(default_factory=dict)  # url -> head read, None if it failed

    @property
    def current(self) -> bool:
        return self.client is not None and self.regressed_from is None and self.stale_seconds is None


class Endpoints:
    """An ordered list of RPC endpoints with per-endpoint health and the exporter's head state."""

    def __init__(self, urls: list[str], make_client: Callable[[str], RpcClient], clock: Callable[[], float],
                 stale_seconds: float) -> None:
        if not urls:
            raise ValueError("at least one RPC endpoint is needed")
        self.urls = list(urls)
        self.clients = {url: make_client(url) for url in self.urls}
        self._clock = clock
        self.stale_seconds = stale_seconds
        self.best_head: int | None = None
        self.best_since: float | None = None

    def head_age(self, now: float | None = None) -> float | None:
        """Seconds since the highest head was first read; None before any head."""
        if self.best_since is None:
            return None
        return max(0.0, (self._clock() if now is None else now) - self.best_since)

    def _is_current(self, head: int, now: float) -> bool:
        if self.best_head is None or head > self.best_head:
            return True
        return head == self.best_head and (self.head_age(now) or 0.0) <= self.stale_seconds

    def select(self) -> Selection:
        """Probe endpoints in order until one has a current head; update the head state."""
        now = self._clock()
        sel = Selection()
        answers: list[tuple[str, int]] = []
        for url in self.urls:
            try:
                head = self.clients[url].block_number()
            except RpcError as exc:
                sel.probed[url] = None
                sel.errors.append(f"{endpoint_label(url)}: {exc}")
                continue
            sel.probed[url] = head
            answers.append((url, head))
            if self._is_current(head, now):
                break
        if not answers:
            return sel
        url, head = max(answers, key=lambda answer: answer[1])  # first of the highest
        sel.client, sel.url, sel.head = self.clients[url], url, head
        if self.best_head is not None and head < self.best_head:
            sel.regressed_from = self.best_head
        elif self.best_head is None or head > self.best_head:
            self.best_head, self.best_since = head, now
        age = self.head_age(now)
        if sel.regressed_from is None and age is not None and age > self.stale_seconds:
            sel.stale_seconds = age
        return sel
