"""Downloads through Together's short links: a redirect to a signed URL that expires."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field
from genqueue.producer.settings import Settings
from genqueue.simulator import SimConfig, create_app
from genqueue.simulator.shapes import video_bytes
from tests.conftest import FAST_SCALE, StartWorker

REQ = {"model": "minimax/video-01-director", "prompt": "a lantern on water"}


@pytest.fixture
def sim_app() -> Any:
    """The conftest simulator, with signed URLs that live 0.2 s."""
    return create_app(
        SimConfig(time_scale=FAST_SCALE, seed=7, failure_share=0.0, signed_url_ttl_s=0.2)
    )


class SlowFirstFile(httpx.AsyncBaseTransport):
    """Forwards to the simulator; the first signed-URL fetch arrives after the URL expired,
    and the first ``gone`` short-link visits answer 404 (a link past its lifetime)."""

    def __init__(self, app: Any, gone: int = 0) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.gone = gone
        self.delayed = False
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.paths.append(path)
        if path.startswith("/shrt/") and self.gone:
            self.gone -= 1
            return httpx.Response(404, json={"error": {"message": "gone"}})
        if path.startswith("/_sim/files/") and not self.delayed:
            self.delayed = True
            await asyncio.sleep(0.3)  # longer than signed_url_ttl_s: the URL has expired
        return await self.inner.handle_async_request(request)


async def _downloaded(aredis: redis.asyncio.Redis, settings: Settings, rid: str) -> dict[str, str]:
    for _ in range(400):
        raw: dict[str, str] = await aredis.hgetall(settings.keys.record(rid))  # type: ignore[misc]
        if raw.get(Field.DOWNLOAD_STATE) in ("done", "dead"):
            return raw
        await asyncio.sleep(0.05)
    raise AssertionError("download never ended")


async def test_expired_signed_url_is_fetched_again_through_the_short_link(
    client: AsyncClient,
    start_worker: StartWorker,
    sim_app: Any,
    aredis: redis.asyncio.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """A signed URL that expired before it was fetched (403) is replaced by visiting the short
    link again, and the download succeeds in the same attempt."""
    side = SlowFirstFile(sim_app)
    await start_worker(side_transport=side, with_side=True, download_dir=str(tmp_path))
    rid = await client.submit(REQ)
    raw = await _downloaded(aredis, settings, rid)
    assert raw[Field.DOWNLOAD_STATE] == "done", raw.get(Field.DOWNLOAD_ERROR)
    data = Path(raw[Field.DOWNLOAD_PATH]).read_bytes()
    assert data == video_bytes(raw[Field.UPSTREAM_ID])
    assert raw[Field.DOWNLOAD_SHA256] == hashlib.sha256(data).hexdigest()
    assert raw.get(Field.DOWNLOAD_ATTEMPTS, "0") in ("", "0", "1")
    visits = [p.split("/")[1] for p in side.paths]
    assert visits == ["shrt", "_sim", "shrt", "_sim"]
    files = sim_app.state.sim.stats()["requests"]["GET /_sim/files/{id}.mp4"]
    assert files == {"403": 1, "200": 1}


async def test_gone_short_link_rereads_the_job(
    client: AsyncClient,
    start_worker: StartWorker,
    sim_app: Any,
    aredis: redis.asyncio.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """A short link that answers 404 makes the download re-read the job for its current
    video_url, then download through it."""
    side = SlowFirstFile(sim_app, gone=1)
    side.delayed = True  # no expiry in this test
    await start_worker(side_transport=side, with_side=True, download_dir=str(tmp_path))
    rid = await client.submit(REQ)
    await client.wait(rid, 20)
    retrieves_before = sum(sim_app.state.sim.stats()["requests"]["GET /v2/videos/{id}"].values())
    raw = await _downloaded(aredis, settings, rid)
    assert raw[Field.DOWNLOAD_STATE] == "done", raw.get(Field.DOWNLOAD_ERROR)
    retrieves = sum(sim_app.state.sim.stats()["requests"]["GET /v2/videos/{id}"].values())
    assert retrieves == retrieves_before + 1
    assert [p.split("/")[1] for p in side.paths] == ["shrt", "shrt", "_sim"]
