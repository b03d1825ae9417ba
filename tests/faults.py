"""An httpx transport that injects upstream faults in front of the in-process simulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

Rule = Callable[[httpx.Request], httpx.Response | None]


class FaultTransport(httpx.AsyncBaseTransport):
    """Answers with ``rule(request)`` when it returns a response; otherwise forwards."""

    def __init__(self, app: Any, rule: Rule) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.rule = rule
        self.seen: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        injected = self.rule(request)
        if injected is not None:
            return injected
        return await self.inner.handle_async_request(request)


def error(status: int, message: str = "injected", headers: dict[str, str] | None = None) -> Any:
    return httpx.Response(
        status, json={"error": {"message": message, "type": "injected"}}, headers=headers
    )


def is_create(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path == "/v2/videos"


def is_retrieve(request: httpx.Request) -> bool:
    return request.method == "GET" and request.url.path.startswith("/v2/videos/")


class RouterTransport(httpx.AsyncBaseTransport):
    """Routes by host: each host to its own transport (the simulator, a webhook receiver).

    By the ``Host`` header: the outbound guard sends webhooks to the checked IP address and
    keeps the name in ``Host``.
    """

    def __init__(self, routes: dict[str, httpx.AsyncBaseTransport]) -> None:
        self.routes = routes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = httpx.URL(f"http://{request.headers.get('host', request.url.netloc.decode())}")
        return await self.routes[host.host].handle_async_request(request)


class FirstAnswers:
    """A rule: the first matching requests get ``answers`` in order, later ones go through
    (``calls`` counts every matching request)."""

    def __init__(self, match: Callable[[httpx.Request], bool], *answers: httpx.Response) -> None:
        self.match = match
        self.answers = answers
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response | None:
        if not self.match(request):
            return None
        self.calls += 1
        return self.answers[self.calls - 1] if self.calls <= len(self.answers) else None
