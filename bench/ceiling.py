"""The ceiling of one Redis (item 2 of issue 22): what a poll, a create and a finished video
cost Redis, measured at a steady load, and what one Redis core carries, projected from them.

Redis' cost is read from Redis itself: ``INFO cpu`` (``used_cpu_sys`` + ``used_cpu_user``:
the server's CPU, its own threads) and ``INFO commandstats`` (every command, those a script
runs inside it too, as Redis counts them), before and after each phase:

* **poll**: ``active`` requests checked at a steady ``rate`` (fixed schedule, jobs that never
  finish) by real worker processes; per upstream GET in a window;
* **create**: ``videos`` submits through the producer client with no worker running;
* **finished video**: then workers take those videos from submit to end against a simulator
  whose videos finish in seconds; Redis' cost in that phase, less its GETs at the poll's cost,
  per video (its submit step, its end, the events and counts of both; idle looks included).

The projection divides one core (1 CPU-second per second) by those costs: polls/s, creates/s,
and in-flight videos at the default schedule for a 3-minute median (checks per video computed
by ``bench.frontier.genqueue_schedule``; in flight = videos/s x mean time to finish). It is a
projection, not a measured saturation: on the 2-core bench machine the worker processes
saturate the cores long before Redis does.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio

from bench.frontier import genqueue_schedule
from bench.idle import calls_delta, command_calls, redis_cpu_s
from bench.measure import requests_by_endpoint
from bench.procs import Child, start_genqueue_workers, stop_all
from bench.workload import API_KEY, QUEUE_MEDIAN_S, QUEUE_SIGMA, Workload, start_simulator
from genqueue.producer import AsyncClient, Settings

POLL_PREFIX = "bench-ceiling-poll"
VIDEO_PREFIX = "bench-ceiling-video"
#: The median the in-flight projection is stated for (issue 22).
PROJECTION_MEDIAN_S = 180.0


class RedisMeter:
    """Redis CPU seconds and commands between ``start`` and ``stop`` (the meter's own INFO
    calls taken out)."""

    def __init__(self, r: redis.asyncio.Redis) -> None:
        self.r = r
        self._cpu0 = 0.0
        self._calls0: dict[str, int] = {}

    async def start(self) -> None:
        self._calls0 = command_calls(await self.r.info("commandstats"))
        self._cpu0 = await redis_cpu_s(self.r)

    async def stop(self) -> tuple[float, dict[str, int]]:
        cpu = await redis_cpu_s(self.r) - self._cpu0
        delta = calls_delta(self._calls0, command_calls(await self.r.info("commandstats")))
        delta["info"] = delta.get("info", 0) - 2  # the meter's: cpu at start, both at stop
        return cpu, {k: v for k, v in delta.items() if v > 0}


def _env(redis_url: str, sim_url: str, prefix: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        "GENQUEUE_LOG_FORMAT": "json",
        "GENQUEUE_LOG_LEVEL": "WARNING",
        **os.environ,
        "GENQUEUE_REDIS_URL": redis_url,
        "GENQUEUE_KEY_PREFIX": prefix,
        "GENQUEUE_UPSTREAM_URL": sim_url,
        "TOGETHER_API_KEY": API_KEY,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


async def _gets(sim_url: str) -> int:
    async with httpx.AsyncClient(timeout=30) as h:
        stats = (await h.get(f"{sim_url}/_sim/stats")).json()
    return requests_by_endpoint(stats, "GET /v2/videos/{id}")


def _per(cpu_s: float, calls: dict[str, int], n: int) -> dict[str, Any]:
    return {
        "n": n,
        "redis_cpu_us": round(cpu_s / n * 1e6, 2) if n else None,
        "commands": round(sum(calls.values()) / n, 2) if n else None,
        "commands_by_name": {k: round(v / n, 2) for k, v in calls.items()} if n else {},
    }


async def _poll_phase(
    r: redis.asyncio.Redis,
    log_dir: Path,
    *,
    active: int,
    rate: float,
    window_s: float,
    workers: int,
) -> dict[str, Any]:
    interval_s = active / rate
    sim, sim_url = start_simulator(
        Workload(median_s=1e6, time_scale=1.0), log_dir, "ceiling-poll-sim"
    )
    children: list[Child] = []
    client = AsyncClient(Settings(redis_url=_url(r), key_prefix=POLL_PREFIX))
    try:
        env = _env(
            _url(r),
            sim_url,
            POLL_PREFIX,
            {
                "GENQUEUE_POLL_SCHEDULE": "fixed",
                "GENQUEUE_FIRST_POLL_S": f"{interval_s:g}",
                "GENQUEUE_POLL_FLOOR_S": f"{interval_s:g}",
                "GENQUEUE_POLL_CAP_S": f"{interval_s:g}",
            },
        )
        names = [f"ceiling-p{i}" for i in range(workers)]
        children = await start_genqueue_workers(names, env, log_dir, r, POLL_PREFIX)
        t0 = time.monotonic()
        for i in range(active):  # at the poll rate, so checks are spread evenly
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await client.submit(Workload().request(i))
        await asyncio.sleep(interval_s + 2)
        meter = RedisMeter(r)
        g0, w0 = await _gets(sim_url), time.monotonic()
        await meter.start()
        await asyncio.sleep(window_s)
        cpu, calls = await meter.stop()
        polls = await _gets(sim_url) - g0
        wall = time.monotonic() - w0
    finally:
        stop_all(children)
        stop_all([sim])
        await client.aclose()
    return {**_per(cpu, calls, polls), "polls_per_s": round(polls / wall, 1)}


async def _video_phases(
    r: redis.asyncio.Redis,
    log_dir: Path,
    *,
    videos: int,
    workers: int,
    poll_cpu_us: float | None,
    poll_commands: float | None,
    timeout_s: float,
    time_scale: float = 1.0,
) -> dict[str, Any]:
    # Videos that end within seconds (queue wait 5 s median, generation 10 s median).
    w = Workload(videos=videos, median_s=10.0, time_scale=time_scale)
    sim, sim_url = start_simulator(w, log_dir, "ceiling-video-sim")
    settings = Settings(redis_url=_url(r), key_prefix=VIDEO_PREFIX)
    client = AsyncClient(settings)
    children: list[Child] = []
    try:
        meter = RedisMeter(r)
        await meter.start()
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with sem:
                await client.submit(w.request(i))

        await asyncio.gather(*(one(i) for i in range(videos)))
        cpu_c, calls_c = await meter.stop()
        g0 = await _gets(sim_url)
        await meter.start()
        env = _env(_url(r), sim_url, VIDEO_PREFIX, {"GENQUEUE_TIME_SCALE": str(time_scale)})
        names = [f"ceiling-v{i}" for i in range(workers)]
        children = await start_genqueue_workers(names, env, log_dir, r, VIDEO_PREFIX)
        deadline = time.monotonic() + timeout_s
        inflight, looks = settings.keys.inflight, 0
        # One ZCARD a second (taken out below): the client's stats would cost more than
        # the videos.
        while await r.zcard(inflight) and time.monotonic() < deadline:
            looks += 1
            await asyncio.sleep(1.0)
        cpu_f, calls_f = await meter.stop()
        calls_f["zcard"] = calls_f.get("zcard", 0) - looks - 1
        finished = sum((await client.stats()).finished.values())
        gets = await _gets(sim_url) - g0
    finally:
        stop_all(children)
        stop_all([sim])
        await client.aclose()
    rest_cpu = cpu_f - gets * (poll_cpu_us or 0) / 1e6
    per_f = _per(max(0.0, rest_cpu), calls_f, finished)
    if finished and poll_commands is not None:
        per_f["commands"] = round((sum(calls_f.values()) - gets * poll_commands) / finished, 2)
    per_f["polls_per_video"] = round(gets / finished, 2) if finished else None
    return {"create": _per(cpu_c, calls_c, videos), "finished_video": per_f}


def _url(r: redis.asyncio.Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def project(
    poll: dict[str, Any], create: dict[str, Any], finished: dict[str, Any]
) -> dict[str, Any]:
    """What one Redis core carries at the measured per-operation costs (a projection)."""
    sched = genqueue_schedule(
        history=10_000, histories=2, videos=2000, median_s=PROJECTION_MEDIAN_S
    )
    p_us, c_us, f_us = poll["redis_cpu_us"], create["redis_cpu_us"], finished["redis_cpu_us"]
    if not p_us or not c_us or f_us is None:
        return {}
    video_us = c_us + f_us + sched.polls_per_video * p_us
    videos_per_s = 1e6 / video_us
    # Mean time a video is in flight: upstream queue wait + generation (lognormal means).
    mean_s = QUEUE_MEDIAN_S * math.exp(QUEUE_SIGMA**2 / 2) + PROJECTION_MEDIAN_S * math.exp(
        0.2**2 / 2
    )
    return {
        "polls_per_s": round(1e6 / p_us),
        "creates_per_s": round(1e6 / c_us),
        "median_s": PROJECTION_MEDIAN_S,
        "polls_per_video": round(sched.polls_per_video, 2),
        "redis_cpu_us_per_video": round(video_us, 1),
        "videos_per_s": round(videos_per_s, 1),
        "mean_in_flight_s": round(mean_s, 1),
        "in_flight_videos": round(videos_per_s * mean_s, -2),
    }


async def measure_ceiling(
    redis_url: str,
    log_dir: Path,
    *,
    active: int = 1000,
    rate: float = 200.0,
    window_s: float = 15.0,
    videos: int = 1000,
    workers: int = 2,
    video_time_scale: float = 1.0,
    progress: Any = print,
) -> dict[str, Any]:
    """``video_time_scale`` below 1 only to make the videos phase short (the smoke run)."""
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        poll = await _poll_phase(
            r, log_dir, active=active, rate=rate, window_s=window_s, workers=workers
        )
        progress(
            f"  ceiling: per poll {poll['redis_cpu_us']} us Redis CPU, {poll['commands']} "
            f"commands (at {poll['polls_per_s']} polls/s)"
        )
        vids = await _video_phases(
            r,
            log_dir,
            videos=videos,
            workers=workers,
            poll_cpu_us=poll["redis_cpu_us"],
            poll_commands=poll["commands"],
            timeout_s=max(120.0, videos / 5),
            time_scale=video_time_scale,
        )
    finally:
        await r.aclose()
    out = {"poll": poll, **vids}
    out["projection_one_core"] = project(poll, vids["create"], vids["finished_video"])
    progress(
        f"  ceiling: per create {vids['create']['redis_cpu_us']} us, per finished video "
        f"{vids['finished_video']['redis_cpu_us']} us; one core: {out['projection_one_core']}"
    )
    return out


def run_ceiling(redis_url: str, log_dir: Path, progress: Any = print, **kw: Any) -> Any:
    return asyncio.run(measure_ceiling(redis_url, log_dir, progress=progress, **kw))
