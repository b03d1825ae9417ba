"""Finished videos uploaded to S3-compatible storage: a real moto server process on 127.0.0.1,
reached through boto3 (not patched)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import httpx
import pytest
import redis.asyncio

from genqueue.local_redis import free_port
from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field
from genqueue.producer.settings import Settings
from genqueue.worker.config import WorkerConfig
from genqueue.worker.outbound.resolver import StaticResolver
from tests.conftest import StartWorker
from tests.faults import RouterTransport
from tests.test_side_effects import REQ, SECRET, Receiver, rec, until_webhook

BUCKET = "videos"
VIDEO = bytes(range(256)) * (11 * 4096 + 7)  # ~11 MiB: three parts of 5 MiB


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """A moto S3 server subprocess on a free port of 127.0.0.1."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


class BigVideo(httpx.AsyncBaseTransport):
    """The simulator, except that its video files are ~11 MiB."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/_sim/files/"):
            return httpx.Response(200, content=VIDEO)
        return await self.inner.handle_async_request(request)


async def test_completed_video_is_uploaded_to_s3_with_its_checksum(
    client: AsyncClient,
    start_worker: StartWorker,
    sim_app: Any,
    aredis: redis.asyncio.Redis,
    settings: Settings,
    s3: Any,
    s3_url: str,
) -> None:
    """A completed video is streamed to the S3-compatible server as a multipart upload; its
    object key and SHA-256 are on the record and in the webhook, and the object carries the
    checksum as a tag."""
    hook = Receiver()
    routes = {"sim": BigVideo(httpx.ASGITransport(app=sim_app)), "hooks.test": hook.transport}
    await start_worker(
        side_transport=RouterTransport(routes),
        with_side=True,
        resolver=StaticResolver({"hooks.test": ["127.0.0.1"]}),
        settings=replace(settings, outbound_allow_nets="127.0.0.0/8"),
        webhook_secret=SECRET,
        download_s3_url=f"s3://{BUCKET}/generated",
        download_s3_endpoint_url=s3_url,
        download_s3_part_bytes=5 << 20,
    )
    rid = await client.submit(REQ, webhook_url="http://hooks.test/h")
    await until_webhook(aredis, settings, rid, "done", 30)
    r = await rec(aredis, settings, rid)
    key = f"generated/{rid}.mp4"
    digest = hashlib.sha256(VIDEO).hexdigest()
    assert r[Field.DOWNLOAD_STATE] == "done", r.get(Field.DOWNLOAD_ERROR)
    assert r[Field.DOWNLOAD_PATH] == f"s3://{BUCKET}/{key}"
    assert r[Field.DOWNLOAD_SHA256] == digest and r[Field.DOWNLOAD_BYTES] == str(len(VIDEO))
    sent = hook.verified[0]["data"]["download"]
    assert sent == {"state": "done", "path": f"s3://{BUCKET}/{key}", "sha256": digest,
                    "bytes": len(VIDEO)}  # fmt: skip
    body = await asyncio.to_thread(lambda: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert hashlib.sha256(body).hexdigest() == digest
    tags = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
    assert tags == [{"Key": "sha256", "Value": digest}]
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # three parts: it was streamed, not one PUT
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


async def test_failed_upload_leaves_no_parts(
    client: AsyncClient,
    start_worker: StartWorker,
    sim_app: Any,
    aredis: redis.asyncio.Redis,
    settings: Settings,
    s3: Any,
    s3_url: str,
) -> None:
    """A download that fails after parts were uploaded aborts the multipart upload (no
    orphan parts) and is retried, then given up."""

    class Truncated(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.startswith("/_sim/files/"):

                async def body() -> Any:
                    yield VIDEO[: 6 << 20]
                    raise httpx.ReadError("connection lost")

                return httpx.Response(200, content=body())
            return await httpx.ASGITransport(app=sim_app).handle_async_request(request)

    await start_worker(
        side_transport=Truncated(),
        with_side=True,
        download_s3_url=f"s3://{BUCKET}/generated",
        download_s3_endpoint_url=s3_url,
        download_s3_part_bytes=5 << 20,
        download_retries=1,
    )
    rid = await client.submit(REQ)
    await client.wait(rid, 20)

    async def given_up() -> bool:
        state = await aredis.hget(settings.keys.record(rid), Field.DOWNLOAD_STATE)  # type: ignore[misc]
        return bool(state == "dead")

    for _ in range(1000):
        if await given_up():
            break
        await asyncio.sleep(0.02)
    assert await given_up()
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    assert not s3.list_objects_v2(Bucket=BUCKET).get("Contents")


def test_s3_settings_are_checked() -> None:
    """A part size under S3's 5 MiB minimum, or a target that is not s3://, stops start-up
    (the variables keep their names inside the ``downloads`` group)."""
    with pytest.raises(ValueError, match="5 MiB"):
        WorkerConfig.from_env({"GENQUEUE_DOWNLOAD_S3_PART_BYTES": str(1 << 20)})
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        WorkerConfig.from_env({"GENQUEUE_DOWNLOAD_S3_URL": "https://bucket.example/videos"})
    cfg = WorkerConfig.from_env({"GENQUEUE_DOWNLOAD_S3_URL": "s3://videos"})
    assert cfg.downloads.s3_url == "s3://videos"
    assert cfg.downloads_on
