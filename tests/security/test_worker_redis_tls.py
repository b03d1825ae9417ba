"""Every connection a worker opens honours ``rediss+sentinel://`` (TLS to the sentinels and to
the data nodes, arq's pool included), and a worker that cannot reach its primary at start
leaves no connection to the sentinels open."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.sentinel
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.sentinel import SentinelManagedSSLConnection

from genqueue.local_redis import _die_with_parent, free_port
from genqueue.producer import AsyncClient, Settings
from genqueue.worker.app import build_side_worker, build_worker, stop_worker
from tests.conftest import worker_config
from tests.security.conftest import REQ
from tests.security.tls_sentinel import TlsSentinel

TLS_URL = "rediss+sentinel://s1.example:26379,s2.example:26380/svc/3"


@pytest.fixture(scope="module")
def tls_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSentinel]:
    """A primary and a sentinel that speak TLS only, with their test CA."""
    deployment = TlsSentinel(tmp_path_factory.mktemp("tls-sentinel"))
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.close()


@pytest.fixture
def plain_sentinel(tmp_path: Path) -> Iterator[int]:
    """A sentinel watching no primary at all (every lookup: master not found); its port."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\n")
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [binary, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    try:
        for _ in range(100):
            try:
                with redis.Redis(port=port, socket_timeout=0.5) as probe:
                    probe.ping()
                break
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _pools_of(settings: Settings) -> list[Any]:
    # Called from async tests: arq's Worker takes the running loop (else it makes one).
    cfg = worker_config(settings)
    return [build_worker(cfg).pool, build_side_worker(cfg).pool]


async def test_every_arq_pool_of_a_worker_uses_tls_to_sentinels_and_data_nodes() -> None:
    """For a ``rediss+sentinel://`` URL both arq pools of a worker reach the sentinels and the
    primary over TLS, with the URL's database and credentials."""
    settings = Settings(redis_url=TLS_URL.replace("://", "://u:pw@", 1))
    for pool in _pools_of(settings):
        manager = pool.connection_pool.sentinel_manager
        assert len(manager.sentinels) == 2
        for sentinel in manager.sentinels:
            assert issubclass(sentinel.connection_pool.connection_class, SSLConnection)
        assert issubclass(pool.connection_pool.connection_class, SentinelManagedSSLConnection)
        kwargs = pool.connection_pool.connection_kwargs
        assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "u", "pw")


async def test_a_worker_completes_a_request_through_a_tls_only_sentinel(
    tls_sentinel: TlsSentinel, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker (both arq workers and its runtime) and a producer given only a
    ``rediss+sentinel://`` URL, against a sentinel and a primary that accept TLS alone,
    complete a request."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_sentinel.ca))  # the test CA, as an operator would
    # One primary, no replica to acknowledge a WAIT: durable creates off.
    settings = Settings(
        redis_url=tls_sentinel.url,
        key_prefix=f"gqt-{uuid.uuid4().hex[:8]}",
        durable_creates="off",
    )
    await start_worker(settings=settings, with_side=True)
    async with AsyncClient(settings) as client:
        rid = await client.submit(REQ)
        record = await client.wait(rid, timeout_s=60)
    assert record.status == "completed"


def _connected_to(port: int) -> list[AbstractConnection]:
    gc.collect()
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, AbstractConnection) and obj.is_connected and obj.port == port
    ]


async def test_a_worker_without_a_primary_leaves_no_sentinel_connection_open(
    plain_sentinel: int, settings: Settings
) -> None:
    """A worker whose sentinels know no primary fails its start (the supervisor retries it)
    and, once stopped, holds no connection to the sentinels."""
    url = f"redis+sentinel://127.0.0.1:{plain_sentinel}/nosuchservice/0"
    worker = build_worker(worker_config(Settings(redis_url=url, key_prefix=settings.key_prefix)))
    worker.handle_signals = False
    with pytest.raises(redis.asyncio.sentinel.MasterNotFoundError):
        await worker.async_run()
    await stop_worker(worker)
    leftover = _connected_to(plain_sentinel)
    for conn in leftover:
        await conn.disconnect()
    assert leftover == []
