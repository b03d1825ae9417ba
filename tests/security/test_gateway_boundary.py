"""Who gets through the gateway: the same answers whether it is served at the root, mounted
inside another app (whose lifespan never runs the gateway's), or behind a proxy under
``uvicorn --root-path`` (a real uvicorn process). Every route not explicitly public is
covered, read from the app itself, so a new route is checked without editing this file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from genqueue.gateway import create_app
from genqueue.gateway.auth import PUBLIC_PATHS
from genqueue.local_redis import free_port
from genqueue.producer import AsyncClient, Settings
from tests.processes import stop_process, wait_until
from tests.security.conftest import KEY, OTHER_KEY, REQ, WRONG_KEY, RedisUser

ROOT_PATH = "/genqueue"
#: A body for each operation that takes one (a new operation with a body must add its own).
BODIES: dict[tuple[str, str], Any] = {("POST", "/v1/generations"): REQ}
V1_OPERATIONS = {
    ("POST", "/v1/generations"),
    ("GET", "/v1/generations/{request_id}"),
    ("DELETE", "/v1/generations/{request_id}"),
    ("GET", "/v1/stats"),
}


def protected_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every operation of ``app`` that is not explicitly public: those of
    its OpenAPI document and the plain routes FastAPI adds outside it (the docs pages)."""
    ops = {
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    }
    for route in app.routes:
        path = getattr(route, "path", None)
        methods: set[str] = getattr(route, "methods", None) or set()
        ops |= {(m, path) for m in methods - {"HEAD"} if path is not None}
    return sorted((m, p) for m, p in ops if p not in PUBLIC_PATHS)


@dataclass
class Served:
    """A way the gateway is served: an HTTP client and the prefix its paths are under."""

    http: httpx.AsyncClient
    prefix: str
    app: FastAPI


async def _call(
    served: Served, method: str, path: str, key: str | None, request_id: str
) -> httpx.Response:
    url = served.prefix + path.replace("{request_id}", request_id)
    assert "{" not in url, f"add an example for the path parameters of {path}"
    body = BODIES.get((method, path))
    assert body is not None or method not in ("POST", "PUT", "PATCH"), f"add a body for {path}"
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return await served.http.request(method, url, headers=headers, json=body)


async def _check_every_route(served: Served, client: AsyncClient) -> None:
    ops = protected_operations(served.app)
    assert set(ops) >= V1_OPERATIONS, "the route list is read from the app"
    for method, path in ops:
        request_id = await client.submit(REQ)
        missing = await _call(served, method, path, None, request_id)
        assert missing.status_code == 401, (method, path, missing.text)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await _call(served, method, path, WRONG_KEY, request_id)
        assert wrong.status_code == 403, (method, path, wrong.text)
        for key in (KEY, OTHER_KEY):
            right = await _call(served, method, path, key, request_id)
            assert 200 <= right.status_code < 300, (method, path, right.text)
    for path in sorted(PUBLIC_PATHS):
        assert (await served.http.get(served.prefix + path)).status_code == 200, path
    # Fail closed: a path no route knows needs a key too (no probing without one).
    for path in ("/v2/generations", "/V1/stats", "/v1//stats", "/"):
        assert (await served.http.get(served.prefix + path)).status_code == 401, path


@asynccontextmanager
async def bare(settings: Settings) -> AsyncIterator[Served]:
    app = create_app(settings, api_keys=[KEY, OTHER_KEY])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield Served(http, "", app)


@asynccontextmanager
async def mounted(settings: Settings) -> AsyncIterator[Served]:
    """Mounted under /genqueue in a host app; the host's lifespan runs, the gateway's does not."""
    gateway = create_app(settings, api_keys=[KEY, OTHER_KEY])

    @asynccontextmanager
    async def host_lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield

    host = Starlette(routes=[Mount(ROOT_PATH, app=gateway)], lifespan=host_lifespan)
    try:
        async with LifespanManager(host) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
                yield Served(http, ROOT_PATH, gateway)
    finally:
        await gateway.state.resources.aclose()


async def test_bare_gateway_guards_every_route(settings: Settings, client: AsyncClient) -> None:
    """At the root: no key 401, a wrong key 403, a right key 2xx on every non-public route;
    health, readiness and the OpenAPI document open; unknown paths 401."""
    async with bare(settings) as served:
        await _check_every_route(served, client)


async def test_mounted_gateway_guards_every_route_and_works_without_its_lifespan(
    settings: Settings, client: AsyncClient
) -> None:
    """Mounted under /genqueue (host lifespan only): the same answers under the prefix, and
    requests succeed although the gateway's own start-up never ran."""
    async with mounted(settings) as served:
        await _check_every_route(served, client)
        created = await served.http.post(
            f"{ROOT_PATH}/v1/generations", json=REQ, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert created.headers["location"] == f"{ROOT_PATH}/v1/generations/{created.json()['id']}"


@pytest.fixture(params=["uvicorn", "genqueue gateway"])
def uvicorn_gateway(
    request: pytest.FixtureRequest, secure_settings: Settings, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """A real uvicorn process on a free port behind a prefix-stripping proxy's root path
    (Redis password in the URL's query string), started as ``uvicorn --root-path`` or as
    ``genqueue gateway --root-path``; yields its base URL and the file its stderr goes to."""
    port = free_port()
    stderr_path = tmp_path / "gateway.stderr"
    env = {
        **os.environ,
        "GENQUEUE_REDIS_URL": secure_settings.redis_url,
        "GENQUEUE_KEY_PREFIX": secure_settings.key_prefix,
        "GENQUEUE_API_KEYS": f"{KEY},{OTHER_KEY}",
    }
    if request.param == "uvicorn":
        args = [
            sys.executable, "-m", "uvicorn", "--factory", "tests.security.gateway_factory:app",
            "--host", "127.0.0.1", "--port", str(port), "--root-path", ROOT_PATH,
            "--lifespan", "on", "--no-access-log",
        ]  # fmt: skip
    else:
        env["GENQUEUE_LOG_FORMAT"] = "json"
        args = [
            sys.executable, "-m", "genqueue", "gateway",
            "--host", "127.0.0.1", "--port", str(port), "--root-path", ROOT_PATH,
        ]  # fmt: skip
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(args, env=env, stdout=stderr, stderr=stderr)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None  # died: stop waiting, the test shows stderr

    try:
        wait_until(up, 20, "the uvicorn gateway")
        assert proc.poll() is None, stderr_path.read_text()
        yield base, stderr_path
    finally:
        stop_process(proc)


async def test_root_path_gateway_under_uvicorn_guards_every_route(
    uvicorn_gateway: tuple[str, Path], client: AsyncClient, redis_user: RedisUser
) -> None:
    """Behind a proxy that strips /genqueue (uvicorn's root path): the same answers for every
    route, Location names the public path, and neither the Redis password nor a key is on
    stderr (uvicorn's own lines included)."""
    base, stderr_path = uvicorn_gateway
    async with httpx.AsyncClient(base_url=base) as http:
        await _check_every_route(Served(http, "", create_app(api_keys=[KEY])), client)
        created = await http.post(
            "/v1/generations", json=REQ, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert created.headers["location"] == f"{ROOT_PATH}/v1/generations/{created.json()['id']}"
    logged = stderr_path.read_text()
    assert "gateway_started" in logged and "Application startup complete" in logged
    assert redis_user.password not in logged
    assert KEY not in logged and OTHER_KEY not in logged


async def test_websockets_are_refused(settings: Settings) -> None:
    """The gateway has no WebSocket route: a WebSocket is closed at once, key or not."""
    app = create_app(settings, api_keys=[KEY])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for headers in ([], [(b"authorization", f"Bearer {KEY}".encode())]):
        sent.clear()

        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "path": "/v1/stats",
            "raw_path": b"/v1/stats",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "scheme": "ws",
            "subprotocols": [],
        }
        await app(scope, receive, send)
        assert sent == [{"type": "websocket.close", "code": 1008}]
