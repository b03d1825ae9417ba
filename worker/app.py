"""arq glue: the worker's functions, settings and a supervisor that survives Redis restarts.

With ``worker/claim.py`` (arq's worker, made to claim in one script per look), the only worker
module that imports arq (timers are armed by ``genqueue.producer.timers``).
A worker process runs two arq workers: the main one (``submit``/``poll`` timers and the
reconciler) and a side one (downloads and webhooks, on their own queue): a slow receiver or
download never delays a status check, and its longer timeout never lengthens the main
queue's crash recovery (arq re-runs a killed job after the *largest* timeout + 10 s).
Both wait between looks instead of polling (``worker/wakeup.py``); the reconciler is
periodic work of the main worker's loop and the outbox dispatcher runs when the outbox has a
due entry (neither is an arq cron any more: a cron job costs a dozen commands per tick).
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
from arq.worker import Function, Worker, func
from prometheus_client import start_http_server

from genqueue.producer.keys import (
    ADMIT_TASK,
    DISPATCH_TASK,
    POLL_TASK,
    RECONCILE_TASK,
    SCHEMA_VERSION,
    SIDE_TASK,
    SUBMIT_TASK,
)
from genqueue.producer.timers import dumps, loads
from genqueue.worker.admission import announce_cap, run_admit, safety_net
from genqueue.worker.arq_redis import arq_pool
from genqueue.worker.claim import Slack, TimerWorker
from genqueue.worker.config import WorkerConfig
from genqueue.worker.metrics import WorkerMetrics
from genqueue.worker.outbound.resolver import Resolver
from genqueue.worker.reconciler import reconcile_once
from genqueue.worker.runtime import CTX_KEY, Runtime, UnsafeRedis
from genqueue.worker.shutdown import stop_bound_s
from genqueue.worker.side_effects import dispatch_outbox, run_side
from genqueue.worker.signing import warn_unsigned_webhooks
from genqueue.worker.tasks import run_poll, run_submit
from genqueue.worker.wakeup import Periodic

log = structlog.get_logger(__name__)

#: arq counts a SIGKILLed run as a try; the record makes re-runs harmless, so allow many.
MAX_TRIES = 1000
#: How often a worker refreshes its health key (arq's ``health_check_interval``; the key
#: lives a second longer, so a dead worker leaves the cluster's "alive" count this late).
#: arq's 10 s was a fifth of an idle worker's Redis commands.
HEALTH_INTERVAL_S = 60


def _runtime(ctx: dict[str, Any]) -> Runtime:
    rt: Runtime = ctx[CTX_KEY]
    return rt


def _version_ok(v: int) -> bool:
    if v > SCHEMA_VERSION:
        log.error("timer_from_newer_version", version=v, supported=SCHEMA_VERSION)
        return False
    return True


async def submit(ctx: dict[str, Any], request_id: str, seq: int, v: int = 1) -> None:
    """arq task: create the upstream job (see ``genqueue.worker.tasks.run_submit``)."""
    if _version_ok(v):
        await run_submit(_runtime(ctx), request_id, seq)


async def poll(ctx: dict[str, Any], request_id: str, seq: int, v: int = 1) -> None:
    """arq task: check the upstream job once (see ``genqueue.worker.tasks.run_poll``)."""
    if _version_ok(v):
        await run_poll(_runtime(ctx), request_id, seq)


async def admit(ctx: dict[str, Any], what: str, at_ms: int, v: int = 1) -> None:
    """arq task: a deployment-wide admission timer (a pause's end, the earliest waiting
    deadline; see ``genqueue.worker.admission.run_admit``)."""
    if _version_ok(v):
        await run_admit(_runtime(ctx), what)


async def side(ctx: dict[str, Any], request_id: str, seq: int, v: int = 1) -> None:
    """arq task: one owed side effect (see ``genqueue.worker.side_effects.run_side``)."""
    if _version_ok(v):
        await run_side(_runtime(ctx), request_id, seq)


async def reconcile(ctx: dict[str, Any]) -> int:
    """Re-arm lost timers, then admission's safety net (waiting requests have no timer to
    lose: what could be lost for them is an admission or the expiry timer). Periodic work of
    the main worker; also an arq function, so a cron job the previous version enqueued still
    runs."""
    rt = _runtime(ctx)
    rearmed = await reconcile_once(rt)
    await safety_net(rt)
    return rearmed


def _dispatcher(config: WorkerConfig, lease_s: float) -> Any:
    async def dispatch(ctx: dict[str, Any]) -> int:
        """Arm due side effects (run by the side worker when the outbox has a due entry; also
        an arq function, so a cron job the previous version enqueued still runs)."""
        return await dispatch_outbox(_runtime(ctx), lease_ms=round(lease_s * 1000))

    return dispatch


def functions(config: WorkerConfig) -> list[Function]:
    timeout = config.task_timeout_s
    return [
        func(submit, name=SUBMIT_TASK, timeout=timeout, max_tries=MAX_TRIES, keep_result=0),
        func(poll, name=POLL_TASK, timeout=timeout, max_tries=MAX_TRIES, keep_result=0),
        func(admit, name=ADMIT_TASK, timeout=timeout, max_tries=MAX_TRIES, keep_result=0),
    ]


def _worker(
    config: WorkerConfig,
    *,
    queue: str,
    functions: list[Function],
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None,
    side_transport: httpx.AsyncBaseTransport | None,
    metrics: WorkerMetrics | None,
    handle_signals: bool,
    burst: bool,
    health_suffix: str,
    resolver: Resolver | None = None,
    announce: bool = False,
    **waiting: Any,
) -> Worker:
    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx[CTX_KEY] = rt = await Runtime.start(
            config,
            transport=transport,
            side_transport=side_transport,
            metrics=metrics,
            resolver=resolver,
        )
        if announce:
            await announce_cap(rt)
            # Here, not before the loop: the tenants' own secrets are in Redis.
            await warn_unsigned_webhooks(rt.redis, rt.keys, config.webhooks.secret)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        rt = ctx.pop(CTX_KEY, None)
        if rt is not None:
            await rt.close()

    prefix = config.settings.keys.prefix
    return TimerWorker(
        functions=functions,
        queue_name=queue,
        # Our own pool, not arq's create_pool: TLS to the sentinels too (worker/arq_redis.py).
        redis_pool=arq_pool(
            config.settings.redis_url,
            queue_name=queue,
            job_serializer=dumps,
            job_deserializer=loads,
        ),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        handle_signals=handle_signals,
        job_completion_wait=round(config.job_completion_wait_s),
        max_jobs=config.max_jobs,
        job_timeout=timeout_s,
        keep_result=0,
        poll_delay=config.poll_delay_s,
        queue_read_limit=config.queue_read_limit,
        max_tries=MAX_TRIES,
        burst=burst,
        job_serializer=dumps,
        job_deserializer=loads,
        health_check_interval=HEALTH_INTERVAL_S,
        health_check_key=f"{prefix}:health{health_suffix}:{config.worker_name}",
        log_results=False,
        max_wait_s=config.idle_wait_max_s,
        **waiting,
    )


def build_worker(
    config: WorkerConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    side_transport: httpx.AsyncBaseTransport | None = None,
    metrics: WorkerMetrics | None = None,
    handle_signals: bool = True,
    burst: bool = False,
    resolver: Resolver | None = None,
) -> Worker:
    """The main arq ``Worker``: status timers and the reconciler."""
    return _worker(
        config,
        queue=config.settings.keys.queue,
        functions=[
            *functions(config),
            func(reconcile, name=RECONCILE_TASK, timeout=config.task_timeout_s, keep_result=0),
        ],
        timeout_s=config.task_timeout_s,
        transport=transport,
        side_transport=side_transport,
        metrics=metrics,
        handle_signals=handle_signals,
        burst=burst,
        health_suffix="",
        resolver=resolver,
        announce=True,
        wake=config.settings.keys.queue_wake,
        slack=Slack(
            ms=round(config.scaled(config.schedule.slack_s) * 1000),
            id_prefix=f"{POLL_TASK}:",
            record_prefix=config.settings.keys.record(""),
        ),
        periodic=[
            Periodic(
                RECONCILE_TASK,
                interval_s=config.reconcile_interval_s,
                lock_key=config.settings.keys.reconcile_lock,
                run=reconcile,
            )
        ],
    )


def build_side_worker(
    config: WorkerConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    side_transport: httpx.AsyncBaseTransport | None = None,
    metrics: WorkerMetrics | None = None,
    handle_signals: bool = True,
    resolver: Resolver | None = None,
) -> Worker:
    """The side arq ``Worker``: downloads and webhooks, and the outbox dispatcher.

    ``resolver``: how webhook and download hosts are looked up (default: the system's).
    """
    timeout = max(config.webhooks.timeout_s, config.downloads.timeout_s) + 10
    # An armed side effect is dispatched again if its job has not recorded a result by then:
    # longer than arq's own re-run of a killed job (timeout + 10 s).
    dispatch = _dispatcher(config, lease_s=timeout + 20)
    keys = config.settings.keys
    return _worker(
        config,
        queue=keys.side_queue,
        functions=[
            func(side, name=SIDE_TASK, timeout=timeout, max_tries=MAX_TRIES, keep_result=0),
            func(dispatch, name=DISPATCH_TASK, timeout=30, keep_result=0),
        ],
        timeout_s=timeout,
        transport=transport,
        side_transport=side_transport,
        metrics=metrics,
        handle_signals=handle_signals,
        burst=False,
        health_suffix="-side",
        resolver=resolver,
        wake=keys.side_wake,
        watched=keys.outbox,
        on_watched_due=dispatch,
        watched_spacing_s=config.outbox_interval_s,
    )


async def stop_worker(worker: Worker, grace_s: float = 0.0) -> None:
    """Stop an arq worker started with ``async_run``: stop taking jobs, give running ones
    ``grace_s`` to finish, cancel the rest (arq re-runs them), then close its connections."""
    worker.allow_pick_jobs = False
    # Ending main() through arq's own burst exit avoids cancelling it mid-command, which
    # leaves pooled connections half-used (redis-py then warns about unclosed sessions).
    worker.burst = True
    worker.max_burst_jobs = 0
    if isinstance(worker, TimerWorker):
        worker.wake()  # it may be waiting for a due time or a wake token
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
    if isinstance(worker, TimerWorker):
        # Jobs cancelled above are released here, so any worker runs them again at once
        # (else their in-progress keys hold them until they expire).
        with contextlib.suppress(Exception):
            await worker.flush_retired()
    worker._pool = None
    with contextlib.suppress(Exception):
        await pool.delete(worker.health_check_key)
    try:
        if worker.on_shutdown is not None:
            await worker.on_shutdown(worker.ctx)
    finally:
        # Our pool's aclose also closes its sentinels (producer/connections.py).
        await pool.aclose(close_connection_pool=True)


async def run_worker(
    config: WorkerConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    side_transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Run a worker process until SIGTERM/SIGINT.

    SIGTERM: both arq workers stop taking jobs and let running ones finish for
    ``job_completion_wait_s``. A lost Redis ends arq's loop (a bare arq worker would die
    with it): the supervisor logs one line and starts over with backoff.
    """
    logging.getLogger("arq").setLevel(logging.WARNING)
    metrics = WorkerMetrics()
    if config.metrics_port:
        start_http_server(config.metrics_port, registry=metrics.registry)
        log.info("metrics_serving", port=config.metrics_port)
    stopping = asyncio.Event()
    current: list[Worker] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stopping.is_set():
            log.info(
                "worker_stopping",
                signal=sig.name,
                grace_s=config.job_completion_wait_s,
                at_most_s=stop_bound_s(config),  # creates in flight included, Redis down too
            )
        stopping.set()
        for w in current:
            w.handle_sig_wait_for_completion(sig)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    kw: dict[str, Any] = {
        "transport": transport,
        "side_transport": side_transport,
        "metrics": metrics,
        "handle_signals": False,
    }
    backoff_s = 0.5
    while not stopping.is_set():
        current[:] = [build_worker(config, **kw), build_side_worker(config, **kw)]
        tasks = [asyncio.create_task(w.async_run()) for w in current]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        failure = next(
            (t.exception() for t in done if not t.cancelled() and t.exception() is not None),
            None,
        )
        if stopping.is_set():
            # Each worker is finishing its running jobs (bounded by job_completion_wait).
            await asyncio.gather(*tasks, return_exceptions=True)
        for w in current:
            await stop_worker(w)
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(failure, UnsafeRedis):
            log.error(
                "redis_refused", reason=str(failure), redis=config.settings.redis_url_redacted
            )
            raise failure
        if stopping.is_set():
            break
        if failure is not None and not isinstance(failure, redis.RedisError | OSError):
            raise failure
        log.warning(
            "redis_unavailable",
            error=type(failure).__name__ if failure else "worker_ended",
            detail=str(failure)[:200] if failure else "",
            retry_in_s=backoff_s,
            redis=config.settings.redis_url_redacted,
        )
        with contextlib.suppress(TimeoutError):  # not wait_for: see producer/waiters.py
            async with asyncio.timeout(backoff_s):
                await stopping.wait()
        backoff_s = min(backoff_s * 2, 10.0)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    log.info("worker_stopped")
