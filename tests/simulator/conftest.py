"""Fixtures for the simulator's own tests: a fake clock and in-process ASGI clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette

from genqueue.simulator import SimConfig, Simulator, create_app

# 2025-10-20T06:57:18.154804Z, the docs' example creation time.
START = 1760943438.154804
AUTH = {"Authorization": "Bearer test-key"}


class FakeClock:
    """A settable clock standing in for ``time.time``."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class SimClient:
    """An in-process simulator with an httpx client bound to it."""

    app: Starlette
    http: httpx.AsyncClient
    clock: FakeClock

    @property
    def sim(self) -> Simulator:
        sim: Simulator = self.app.state.sim
        return sim


MakeClient = Callable[..., SimClient]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at the docs' example time."""
    return FakeClock()


@pytest.fixture
async def make_client(clock: FakeClock) -> AsyncIterator[MakeClient]:
    """Factory: ``make_client(**SimConfig fields)`` -> a fresh app sharing the test's clock."""
    clients: list[httpx.AsyncClient] = []

    def make(**overrides: object) -> SimClient:
        app = create_app(SimConfig(**overrides), clock=clock)  # type: ignore[arg-type]
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sim", headers=AUTH
        )
        clients.append(http)
        return SimClient(app, http, clock)

    yield make
    for http in clients:
        await http.aclose()
