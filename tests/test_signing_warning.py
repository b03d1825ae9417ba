"""The worker's start-up warning about webhooks that no secret could sign."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import httpx
import redis
from structlog.testing import capture_logs

from genqueue.producer import Settings
from genqueue.producer.tenants import new_webhook_secret, set_tenant
from genqueue.worker.app import run_worker
from tests.conftest import worker_config


async def _warnings(settings: Settings, sim_app: Any, **overrides: Any) -> list[Any]:
    """The tenants named by each ``webhook_secret_missing`` that ``run_worker`` logs until its
    main worker has started (then SIGTERM stops it)."""
    cfg = worker_config(settings, **overrides)
    with capture_logs() as logs:
        task = asyncio.create_task(run_worker(cfg, transport=httpx.ASGITransport(app=sim_app)))
        try:
            async with asyncio.timeout(30):
                while not any(e["event"] == "inflight_cap_announced" for e in logs):
                    assert not task.done(), task
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)  # what on_startup logs after the announcement
        finally:
            if not task.done():
                os.kill(os.getpid(), signal.SIGTERM)  # run_worker's own handler: a clean stop
            await asyncio.wait_for(task, timeout=60)
    return [e.get("tenants") for e in logs if e["event"] == "webhook_secret_missing"]


async def test_no_warning_when_every_tenant_has_its_own_secret(
    settings: Settings, conn: redis.Redis, sim_app: Any
) -> None:
    """Without GENQUEUE_WEBHOOK_SECRET, no ``webhook_secret_missing`` when every tenant
    (``default`` included) signs with its own secret."""
    for name in ("default", "acme"):
        set_tenant(conn, settings.keys, name, webhook_secret=new_webhook_secret())
    assert await _warnings(settings, sim_app, webhook_secret="") == []


async def test_warning_names_the_tenants_without_a_secret(
    settings: Settings, conn: redis.Redis, sim_app: Any
) -> None:
    """Without GENQUEUE_WEBHOOK_SECRET, ``webhook_secret_missing`` names each tenant with no
    secret of its own (``default`` even when not configured), not those with one."""
    set_tenant(conn, settings.keys, "acme", webhook_secret=new_webhook_secret())
    set_tenant(conn, settings.keys, "globex")
    assert await _warnings(settings, sim_app, webhook_secret="") == [["default", "globex"]]


async def test_no_warning_with_the_deployment_secret(
    settings: Settings, conn: redis.Redis, sim_app: Any
) -> None:
    """With GENQUEUE_WEBHOOK_SECRET set, tenants without their own secret use it: no warning."""
    set_tenant(conn, settings.keys, "globex")
    assert await _warnings(settings, sim_app, webhook_secret=new_webhook_secret()) == []
