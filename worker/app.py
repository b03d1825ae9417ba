"""arq glue: the worker's functions, settings and a supervisor that survives Redis restarts.

This is the only worker module that imports arq (timers are armed by ``producer.timers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import httpx
import redis
import structlog
from arq import cron
from arq.connections import RedisSettings
from arq.worker import Function, Worker, func
from prometheus_client import start_http_server

from producer.keys import POLL_TASK, RECONCILE_TASK, SCHEMA_VERSION, SUBMIT_TASK
from producer.timers import dumps, loads
from worker.config import WorkerConfig
from worker.metrics import WorkerMetrics
from worker.reconciler import reconcile_once
from worker.runtime import CTX_KEY, Runtime, UnsafeRedis
from worker.tasks import run_poll, run_submit

log = structlog.get_logger(__name__)

#: arq counts a SIGKILLed run as a try; the record makes re-runs harmless, so allow many.
MAX_TRIES = 1000


def _runtime(ctx: dict[str, Any]) -> Runtime:
    rt: Runtime = ctx[CTX_KEY]
    return rt


def _version_ok(v: int) -> bool:
    if v > SCHEMA_VERSION:
        log.error("timer_from_newer_version", version=v, supported=SCHEMA_VERSION)
        return False
    return True


async def submit(ctx: dict[str, Any], request_id: str, seq: int, v: int = 1) -> None:
    """arq task: create the upstream job (see ``worker.tasks.run_submit``)."""
    if _version_ok(v):
        await run_submit(_runtime(ctx), request_id, seq)


async def poll(ctx: dict[str, Any], request_id: str, seq: int, v: int = 1) -> None:
    """arq task: check the upstream job once (see ``worker.tasks.run_poll``)."""
    if _version_ok(v):
        await run_poll(_runtime(ctx), request_id, seq)


async def reconcile(ctx: dict[str, Any]) -> int:
    """arq cron: re-arm lost timers."""
    return await reconcile_once(_runtime(ctx))


def _cron_seconds(interval_s: int) -> dict[str, Any]:
    if interval_s < 60:
        return {"second": set(range(0, 60, interval_s))}
    minutes = max(1, interval_s // 60)
    return {"minute": set(range(0, 60, minutes)), "second": 0}


def functions(config: WorkerConfig) -> list[Function]:
    timeout = config.task_timeout_s
    return [
        func(submit, name=SUBMIT_TASK, timeout=timeout, max_tries=MAX_TRIES, keep_result=0),
        func(poll, name=POLL_TASK, timeout=timeout, max_tries=MAX_TRIES, keep_result=0),
    ]


def build_worker(
    config: WorkerConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: WorkerMetrics | None = None,
    handle_signals: bool = True,
    burst: bool = False,
) -> Worker:
    """An arq ``Worker`` for genqueue's tasks (``transport`` overrides the upstream's)."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx[CTX_KEY] = await Runtime.start(config, transport=transport, metrics=metrics)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        rt = ctx.pop(CTX_KEY, None)
        if rt is not None:
            await rt.close()

    return Worker(
        functions=functions(config),
        cron_jobs=[
            cron(
                reconcile,
                name=RECONCILE_TASK,
                run_at_startup=False,
                timeout=config.task_timeout_s,
                keep_result=0,
                **_cron_seconds(config.reconcile_interval_s),
            )
        ],
        queue_name=config.settings.keys.queue,
        redis_settings=RedisSettings.from_dsn(config.settings.redis_url),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        handle_signals=handle_signals,
        job_completion_wait=round(config.job_completion_wait_s),
        max_jobs=config.max_jobs,
        job_timeout=config.task_timeout_s,
        keep_result=0,
        poll_delay=config.poll_delay_s,
        queue_read_limit=config.queue_read_limit,
        max_tries=MAX_TRIES,
        burst=burst,
        job_serializer=dumps,
        job_deserializer=loads,
        health_check_interval=10,
        health_check_key=f"{config.settings.keys.prefix}:health:{config.worker_name}",
        log_results=False,
    )


async def stop_worker(worker: Worker, grace_s: float = 0.0) -> None:
    """Stop an arq worker started with ``async_run``: stop taking jobs, give running ones
    ``grace_s`` to finish, cancel the rest (arq re-runs them), then close its connections."""
    worker.allow_pick_jobs = False
    # Ending main() through arq's own burst exit avoids cancelling it mid-command, which
    # leaves pooled connections half-used (redis-py then warns about unclosed sessions).
    worker.burst = True
    worker.max_burst_jobs = 0
    main = worker.main_task
    if main is not None and not main.done():
        await asyncio.wait([main], timeout=grace_s + 10 * worker.poll_delay_s + 0.5)
    for t in worker.tasks.values():
        if not t.done():
            t.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    if main is not None and not main.done():
        main.cancel()
    if main is not None:
        await asyncio.gather(main, return_exceptions=True)
    # Not ``worker.close()``: it calls redis-py's deprecated ``close()`` and gives up half-way
    # on any error, leaking the pool's connections.
    pool = worker._pool
    if pool is None:
        return
    worker._pool = None
    with contextlib.suppress(Exception):
        await pool.delete(worker.health_check_key)
    try:
        if worker.on_shutdown is not None:
            await worker.on_shutdown(worker.ctx)
    finally:
        await pool.aclose(close_connection_pool=True)


async def run_worker(
    config: WorkerConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> None:
    """Run a worker until SIGTERM/SIGINT; a lost Redis restarts it (with backoff) instead of
    killing the process, since a bare arq worker dies with its connection."""
    logging.getLogger("arq").setLevel(logging.WARNING)
    metrics = WorkerMetrics()
    if config.metrics_port:
        start_http_server(config.metrics_port, registry=metrics.registry)
        log.info("metrics_serving", port=config.metrics_port)
    stopping = asyncio.Event()
    backoff_s = 0.5
    while not stopping.is_set():
        worker = build_worker(config, transport=transport, metrics=metrics)
        worker.on_stop = lambda _sig: stopping.set()
        try:
            await worker.async_run()
            backoff_s = 0.5
        except asyncio.CancelledError:
            if stopping.is_set():
                break
            raise
        except UnsafeRedis as exc:
            log.error("redis_refused", reason=str(exc), redis=config.settings.redis_url_redacted)
            raise
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "redis_unavailable",
                error=type(exc).__name__,
                detail=str(exc)[:200],
                retry_in_s=backoff_s,
                redis=config.settings.redis_url_redacted,
            )
        finally:
            await stop_worker(worker)
        if stopping.is_set():
            break
        # Signals during the backoff must still stop us (arq's handlers left with its worker).
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff_s)
        backoff_s = min(backoff_s * 2, 10.0)
    log.info("worker_stopped")
