"""The floor of one poll, measured in the same invocation as everything else (item 5).

* ``arq no-op``: an arq worker set up as genqueue's (JSON serializer, ``keep_result=0``,
  ``WorkerConfig``'s ``max_jobs`` and ``poll_delay``) runs no-op jobs that fall due at a
  steady rate; its process CPU (idle loop included, as genqueue's is) per job.
* ``GET``: one process issuing ``GET /v2/videos/{id}`` against the same simulator at the same
  steady rate, per client: bare aiohttp (the cheapest), httpx with the ``httpx-aiohttp``
  transport, httpx's default transport, and genqueue's own ``UpstreamClient.retrieve`` (parsing
  included) over each transport; plus the same clients in back-to-back bursts at concurrency 1,
  10 and 50 (the "HTTP client cost" table in RESULTS.md).
* ``arq job + aiohttp GET``: the ideal poll, one job doing one GET, as a check on the sum.

The floor is ``arq no-op + aiohttp GET`` per call. Workers: ``python -m bench.floor worker``;
clients: ``python -m bench.floor client``; each prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.limiter import limiter_cost
from bench.procs import _die_with_parent, cpu_seconds, python_child, stop_all
from bench.workload import API_KEY, MODEL, Workload, start_simulator
from genqueue.worker.config import WorkerConfig

CLIENTS = ("aiohttp", "httpx-aiohttp", "httpx", "genqueue-aiohttp", "genqueue-httpx")
FLOOR_QUEUE = "bench-floor:queue"


# --- the arq worker under test --------------------------------------------------------------


async def noop(ctx: dict[str, Any], i: int) -> None:
    return None


async def get_once(ctx: dict[str, Any], i: int) -> None:
    async with ctx["session"].get(ctx["url"], headers=ctx["headers"]) as r:
        await r.read()


def run_worker(a: argparse.Namespace) -> None:
    import aiohttp
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    from genqueue.producer.timers import dumps, loads

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["session"] = aiohttp.ClientSession()
        ctx["url"] = a.url
        ctx["headers"] = {"Authorization": f"Bearer {API_KEY}"}

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["session"].close()

    fn = noop if a.mode == "noop" else get_once
    cfg = WorkerConfig()  # the engine set up as genqueue's own workers are
    worker = Worker(
        functions=[func(fn, name="job", timeout=30, max_tries=1000, keep_result=0)],
        queue_name=a.queue,
        redis_settings=RedisSettings.from_dsn(a.redis),
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=cfg.max_jobs,
        keep_result=0,
        poll_delay=cfg.poll_delay_s,
        queue_read_limit=2000,
        job_serializer=dumps,
        job_deserializer=loads,
        log_results=False,
        health_check_key=f"{a.queue}:health:{os.getpid()}",
    )
    import logging

    logging.getLogger("arq").setLevel(logging.WARNING)
    worker.run()


# --- the HTTP clients under test ------------------------------------------------------------


async def _client_calls(lib: str, url: str, job_id: str) -> tuple[Any, Any]:
    """(call, close) for one client library; ``call()`` does one GET of the job."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if lib == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession()

        async def call() -> None:
            async with session.get(f"{url}/v2/videos/{job_id}", headers=headers) as r:
                await r.read()

        return call, session.close
    if lib in ("httpx", "httpx-aiohttp"):
        from genqueue.worker.upstream.transport import make_transport

        kind = "aiohttp" if lib == "httpx-aiohttp" else "httpx"
        client = httpx.AsyncClient(transport=make_transport(kind), headers=headers)

        async def call() -> None:
            (await client.get(f"{url}/v2/videos/{job_id}")).read()

        return call, client.aclose
    if lib.startswith("genqueue-"):
        from genqueue.worker.upstream import UpstreamClient
        from genqueue.worker.upstream.transport import make_transport

        up = UpstreamClient(
            base_url=url, api_key=API_KEY, transport=make_transport(lib.split("-", 1)[1])
        )

        async def call() -> None:
            await up.retrieve(job_id)

        return call, up.aclose
    raise ValueError(lib)


async def _client_main(a: argparse.Namespace) -> dict[str, Any]:
    call, close = await _client_calls(a.lib, a.url, a.job)
    out: dict[str, Any] = {"lib": a.lib}
    try:
        for _ in range(50):  # connections, caches, first-call imports
            await call()
        # Steady rate, as polls arrive in production.
        interval = 1.0 / a.rate
        c0, t0 = time.process_time(), time.monotonic()
        tasks = []
        for k in range(a.count):
            delay = t0 + k * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(call()))
        await asyncio.gather(*tasks)
        out["rate_ms_per_call"] = (time.process_time() - c0) / a.count * 1000
        out["rate_achieved"] = a.count / (time.monotonic() - t0)
        # Bursts at fixed concurrency (the HTTP client cost table).
        for conc in (1, 10, 50):
            sem = asyncio.Semaphore(conc)

            async def one() -> None:
                async with sem:  # noqa: B023
                    await call()

            n = a.burst
            c0 = time.process_time()
            await asyncio.gather(*(one() for _ in range(n)))
            out[f"burst{conc}_ms_per_call"] = (time.process_time() - c0) / n * 1000
    finally:
        await close()
    return out


def run_client(a: argparse.Namespace) -> None:
    print(json.dumps(asyncio.run(_client_main(a))), flush=True)


# --- orchestration (harness side) -----------------------------------------------------------


def _create_job(url: str) -> str:
    r = httpx.post(
        f"{url}/v2/videos",
        json={"model": MODEL, "prompt": "floor"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    r.raise_for_status()
    return str(r.json()["id"])


async def _arq_job_cost(
    redis_url: str, mode: str, url: str, rate: float, count: int, log_dir: Path
) -> dict[str, float]:
    """CPU per arq job (no-op or one aiohttp GET) when jobs fall due at ``rate`` per second."""
    from arq import create_pool
    from arq.connections import RedisSettings

    from genqueue.producer.timers import dumps, loads

    pool = await create_pool(
        RedisSettings.from_dsn(redis_url),
        default_queue_name=FLOOR_QUEUE,
        job_serializer=dumps,
        job_deserializer=loads,
    )
    await pool.flushall()
    child = python_child(
        f"floor-arq-{mode}",
        [
            *("bench.floor", "worker", "--mode", mode, "--redis", redis_url),
            *("--queue", FLOOR_QUEUE, "--url", url),
        ],
        dict(os.environ),
        log_dir,
    )
    try:
        deadline = time.monotonic() + 60
        while not await pool.exists(f"{FLOOR_QUEUE}:health:{child.pid}"):
            if not child.alive or time.monotonic() > deadline:
                raise RuntimeError(f"floor worker did not start:\n{child.tail()}")
            await asyncio.sleep(0.05)
        start_ms = int(time.time() * 1000) + 3000
        step_ms = 1000.0 / rate
        async with pool.pipeline(transaction=False) as pipe:
            for k in range(count):
                # The same storage format the timers use: a job key and a queue entry.
                from arq.jobs import serialize_job

                at = start_ms + round(k * step_ms)
                job_id = f"floor:{k}"
                payload = serialize_job("job", (k,), {}, None, at, serializer=dumps)
                pipe.psetex(f"arq:job:{job_id}", at - int(time.time() * 1000) + 86_400_000, payload)
                pipe.zadd(FLOOR_QUEUE, {job_id: at})
            await pipe.execute()
        wait_s = start_ms / 1000 - time.time()
        await asyncio.sleep(max(0.0, wait_s - 0.2))
        c0, t0 = cpu_seconds(child.pid) or 0.0, time.monotonic()
        await _drained(pool)
        cpu = (cpu_seconds(child.pid) or 0.0) - c0
        wall = time.monotonic() - t0
        return {"ms_per_job": cpu / count * 1000, "jobs_per_s": count / wall}
    finally:
        stop_all([child])
        await pool.aclose()


async def _drained(pool: Any) -> None:
    """Until the queue is empty and no job is running."""
    busy = True
    while busy:
        await asyncio.sleep(0.05)
        busy = bool(await pool.zcard(FLOOR_QUEUE) or await pool.keys("arq:in-progress:floor:*"))


def _client_cost(lib: str, url: str, job: str, rate: float, count: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "bench.floor", "client", "--lib", lib, "--url", url),
            *("--job", job, "--rate", str(rate), "--count", str(count)),
            *("--burst", str(min(count, 1000))),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        preexec_fn=_die_with_parent,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _med(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def measure_floor(
    redis_url: str,
    log_dir: Path,
    *,
    rate: float = 200.0,
    count: int = 1500,
    repeats: int = 3,
    clients: tuple[str, ...] = CLIENTS,
    progress: Any = print,
) -> dict[str, Any]:
    """Every floor figure in ms of CPU per call: the floor's parts (arq no-op, aiohttp GET,
    and the combined job) ``repeats`` times (median/min/max); the other clients once."""
    sim, url = start_simulator(Workload(median_s=1e6, time_scale=1.0), log_dir, "floor-sim")
    try:
        job = _create_job(url)
        noop_ms, get_job_ms = [], []
        limiter: dict[str, list[float]] = {"limits_ms": [], "gcra_ms": []}
        rows: dict[str, list[dict[str, Any]]] = {lib: [] for lib in clients}
        for rep in range(repeats):
            noop_ms.append(
                asyncio.run(_arq_job_cost(redis_url, "noop", url, rate, count, log_dir))[
                    "ms_per_job"
                ]
            )
            get_job_ms.append(
                asyncio.run(_arq_job_cost(redis_url, "get", url, rate, count, log_dir))[
                    "ms_per_job"
                ]
            )
            for lib in clients if rep == 0 else ("aiohttp",):
                rows[lib].append(_client_cost(lib, url, job, rate, count))
            for key, value in limiter_cost(redis_url, count * 2).items():
                limiter[key].append(value)
            progress(
                f"  floor {rep + 1}/{repeats}: arq no-op {noop_ms[-1]:.3f} ms, "
                f"aiohttp GET {rows['aiohttp'][-1]['rate_ms_per_call']:.3f} ms, "
                f"arq job + aiohttp GET {get_job_ms[-1]:.3f} ms"
            )
    finally:
        stop_all([sim])
    table = {
        lib: {
            key: _med([r[key] for r in lib_rows])
            for key in (
                "rate_ms_per_call",
                "burst1_ms_per_call",
                "burst10_ms_per_call",
                "burst50_ms_per_call",
            )
        }
        for lib, lib_rows in rows.items()
    }
    floor = [n + g["rate_ms_per_call"] for n, g in zip(noop_ms, rows["aiohttp"], strict=True)]
    return {
        "rate_per_s": rate,
        "jobs_per_repeat": count,
        "repeats": repeats,
        "arq_noop_ms": _med(noop_ms),
        "arq_job_with_aiohttp_get_ms": _med(get_job_ms),
        "clients_ms": table,
        "floor_ms": _med(floor),
        "rate_limit_ms_per_call": {key: _med(values) for key, values in limiter.items()},
        "poll_delay_s": WorkerConfig().poll_delay_s,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor")
    sub = p.add_subparsers(dest="kind", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--mode", choices=("noop", "get"), required=True)
    w.add_argument("--redis", required=True)
    w.add_argument("--queue", required=True)
    w.add_argument("--url", required=True)
    c = sub.add_parser("client")
    c.add_argument("--lib", choices=CLIENTS, required=True)
    c.add_argument("--url", required=True)
    c.add_argument("--job", required=True)
    c.add_argument("--rate", type=float, default=200.0)
    c.add_argument("--count", type=int, default=3000)
    c.add_argument("--burst", type=int, default=2000)
    a = p.parse_args(argv)
    if a.kind == "worker":
        if a.mode == "get":
            a.url = f"{a.url}/v2/videos/{_create_job(a.url)}"
        run_worker(a)
    else:
        run_client(a)


if __name__ == "__main__":
    main()
