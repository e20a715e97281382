"""Fixtures: a fake Hetzner API on 127.0.0.1, a real hcloud client for it, and injectable time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from lab.fake_hcloud import FakeHetzner
from qpool.hetzner import make_client

TOKEN = "test-token-7f3a9c"
STACK_LABELS = {"app": "quantapool", "env": "testnet", "pair": "p1"}


@dataclass
class FakeTime:
    """A monotonic clock that only moves when code under test sleeps: no real waiting."""

    now: float = 1000.0
    wall: float = 1_790_000_000.25
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def wall_clock(self) -> float:
        return self.wall + (self.now - 1000.0)


@pytest.fixture
def fake() -> Iterator[FakeHetzner]:
    server = FakeHetzner(TOKEN, worker_grace=2.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(fake: FakeHetzner, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HCLOUD_FENCING_TOKEN", raising=False)
    monkeypatch.delenv("QPOOL_HCLOUD_ENDPOINT", raising=False)
    return make_client(TOKEN, fake.endpoint, timeout=(2.0, 5.0))


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def primary(fake: FakeHetzner) -> int:
    return fake.add_server(
        "qp-testnet-p1-primary", {**STACK_LABELS, "role": "primary"}, "203.0.113.10", "10.10.0.2"
    )


@pytest.fixture
def fenced_labels(fake: FakeHetzner) -> Callable[[int], dict[str, str]]:
    """The qpool-fenced* labels the fake holds for a server (empty if never fenced)."""

    def read(server_id: int) -> dict[str, str]:
        return {k: v for k, v in fake.server_labels(server_id).items() if k.startswith("qpool-fenced")}

    return read


@pytest.fixture
def token() -> str:
    return TOKEN
