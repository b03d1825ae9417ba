"""Scale sweep for genqueue alone (item 4): N in-flight requests, N = 1k, 10k, 50k (100k with
``--sweep-sizes ...,100000``).

Set-up: real worker processes keep an *active* set of M requests polling a simulator at a
steady R polls/s (fixed schedule, check interval M/R, jobs that never finish); beside them N
*background* requests are written with the producer's ``submit`` and their timers (and next
checks) moved a day ahead, so Redis holds N in-flight requests with N timers while the workers
do the same work at every N. The active set's bytes per polling request are the slope of
``used_memory`` (without client and AOF buffers, script cache and event stream) between its
two halves; what Redis spends once (a latency histogram per command name first run) is the
intercept, reported apart (``bench/memstate.py``). At each N:

* Redis bytes per request: ``used_memory`` growth per background request added, client and
  AOF buffers and script cache left out (and a ``MEMORY USAGE`` breakdown by key kind);
* worker CPU per poll: worker-process CPU over a window / the simulator's GETs in it;
* reconciler worst case: workers stopped, every next check made overdue and every timer
  deleted (the queue and every job key), then one
  ``genqueue.worker.reconciler.reconcile_once`` pass, which re-arms all N + M: wall time per
  pass and per request.

Each should stay flat per request as N grows: a least-squares line over N is printed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio

from bench.measure import linear_fit, requests_by_endpoint
from bench.memstate import histogram_bytes, polling_memory, snapshot, state_bytes
from bench.procs import Child, start_genqueue_workers, stop_all
from bench.workload import API_KEY, Workload, start_simulator
from genqueue.producer import AsyncClient, Settings
from genqueue.producer.keys import POLL_TASK, SUBMIT_TASK, Field
from genqueue.producer.stats import oldest_due_age_ms

FAR_MS = 86_400_000
PREFIX = "bench-sweep"


def _env(redis_url: str, sim_url: str, interval_s: float, extra: dict[str, str]) -> dict[str, str]:
    env = {
        "GENQUEUE_LOG_FORMAT": "json",
        "GENQUEUE_LOG_LEVEL": "WARNING",
        **os.environ,
        "GENQUEUE_REDIS_URL": redis_url,
        "GENQUEUE_KEY_PREFIX": PREFIX,
        "GENQUEUE_UPSTREAM_URL": sim_url,
        "TOGETHER_API_KEY": API_KEY,
        "GENQUEUE_TIME_SCALE": "1",
        # A steady rate: every active request is checked once per interval.
        "GENQUEUE_POLL_SCHEDULE": "fixed",
        "GENQUEUE_FIRST_POLL_S": f"{interval_s:g}",
        "GENQUEUE_POLL_FLOOR_S": f"{interval_s:g}",
        "GENQUEUE_POLL_CAP_S": f"{interval_s:g}",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


class Sweep:
    def __init__(
        self,
        redis_url: str,
        log_dir: Path,
        *,
        active: int,
        rate: float,
        window_s: float,
        workers: int = 2,
        cpu_repeats: int = 3,
        env: dict[str, str] | None = None,
        progress: Any = print,
    ) -> None:
        self.redis_url, self.log_dir = redis_url, log_dir
        self.active_n, self.rate, self.window_s = active, rate, window_s
        self.interval_s = active / rate
        self.n_workers = workers
        self.cpu_repeats = max(1, cpu_repeats)
        self.extra_env = dict(env or {})
        self.progress = progress
        self.settings = Settings(redis_url=redis_url, key_prefix=PREFIX, wait_recheck_s=60)
        self.keys = self.settings.keys
        self.workers: list[Child] = []
        self.active: list[str] = []
        self.background: list[str] = []
        self.k = 0

    # --- processes

    async def start_workers(self, r: redis.asyncio.Redis) -> list[Child]:
        self.k += 1
        env = _env(self.redis_url, self.sim_url, self.interval_s, self.extra_env)
        names = [f"sweep-w{i}-{self.k}" for i in range(self.n_workers)]
        self.workers = await start_genqueue_workers(names, env, self.log_dir, r, PREFIX)
        return self.workers

    def stop_workers(self) -> None:
        stop_all(self.workers)
        self.workers = []

    async def _gets(self) -> int:
        async with httpx.AsyncClient(timeout=30) as h:
            stats = (await h.get(f"{self.sim_url}/_sim/stats")).json()
        return requests_by_endpoint(stats, "GET /v2/videos/{id}")

    # --- records

    async def _submit_many(self, client: AsyncClient, n: int, start: int) -> list[str]:
        sem = asyncio.Semaphore(64)
        req = Workload().request

        async def one(i: int) -> str:
            async with sem:
                return await client.submit(req(start + i))

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def _submit_active(self, client: AsyncClient, lo: int, hi: int, t0: float) -> None:
        """Active requests ``lo``..``hi``, request i submitted at ``t0 + i / rate``."""
        for i in range(lo, hi):
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.active.append(await client.submit(Workload().request(i)))

    async def _push_far(self, r: redis.asyncio.Redis, ids: list[str]) -> None:
        """Background requests: their next check and their timer a day ahead."""
        now_ms = int(time.time() * 1000)
        for lo in range(0, len(ids), 5000):
            chunk = ids[lo : lo + 5000]
            async with r.pipeline(transaction=False) as pipe:
                pipe.zadd(self.keys.inflight, {i: now_ms + FAR_MS for i in chunk}, xx=True)
                pipe.zadd(self.keys.queue, {f"{SUBMIT_TASK}:{i}:0": now_ms + FAR_MS for i in chunk})
                await pipe.execute()

    async def _breakdown(self, r: redis.asyncio.Redis, n_total: int) -> dict[str, Any]:
        """MEMORY USAGE by key kind: averages over sampled records/timers, shares of indexes."""

        async def avg(keys: list[str]) -> float | None:
            vals = [await r.memory_usage(k, samples=0) for k in keys]
            got = [v for v in vals if v]
            return round(sum(got) / len(got)) if got else None

        active_recs = [self.keys.record(i) for i in self.active[:50]]
        bg_recs = [self.keys.record(i) for i in self.background[:50]]
        out: dict[str, Any] = {
            "record_polling_state": await avg(active_recs),
            "record_pending_state": await avg(bg_recs),
            "record_encoding": await r.object("encoding", active_recs[0]) if active_recs else None,
            "spec_key": await avg([self.keys.spec(i) for i in self.active[:50]]),
            "request_body": round(
                sum([len(await self._body(r, i)) for i in self.active[:50]])
                / max(1, len(self.active[:50]))
            ),
        }
        timers = []
        for i in self.active[:50]:
            seq = await r.hget(self.keys.record(i), Field.SEQ)
            timers.append(f"arq:job:{POLL_TASK}:{i}:{seq}")
        out["timer_job_key"] = await avg(timers)
        for name, key in (
            ("inflight_zset", self.keys.inflight),
            ("queue_zset", self.keys.queue),
            ("event_stream", self.keys.events),
        ):
            total = await r.memory_usage(key, samples=0) or 0
            out[f"{name}_per_request"] = round(total / max(1, n_total))
        out["event_stream_entries"] = await r.xlen(self.keys.events)
        return out

    async def _body(self, r: redis.asyncio.Redis, request_id: str) -> str:
        """The request body as sent upstream (JSON), from the spec key."""
        spec = json.loads(await r.get(self.keys.spec(request_id)) or "{}")
        return json.dumps(spec.get(Field.REQUEST, {}), separators=(",", ":"))

    async def _respread(self, r: redis.asyncio.Redis) -> None:
        """Active timers due evenly over the next interval (a stop leaves them bunched)."""
        async with r.pipeline(transaction=False) as pipe:
            for i in self.active:
                pipe.hget(self.keys.record(i), Field.SEQ)
            seqs = await pipe.execute()
        start = int(time.time() * 1000) + 1000 + round(1000 * min(3.0, self.window_s))
        step = 1000.0 / self.rate
        scores = {
            f"{POLL_TASK}:{i}:{seq}": start + round(k * step)
            for k, (i, seq) in enumerate(zip(self.active, seqs, strict=True))
        }
        await r.zadd(self.keys.queue, scores, xx=True)

    # --- the reconciler's worst case

    async def _reconcile_worst(self, r: redis.asyncio.Redis) -> dict[str, Any]:
        from genqueue.worker.config import WorkerConfig
        from genqueue.worker.reconciler import reconcile_once
        from genqueue.worker.runtime import Runtime
        from genqueue.worker.upstream import UpstreamClient

        everyone = self.active + self.background
        for lo in range(0, len(everyone), 5000):
            chunk = everyone[lo : lo + 5000]
            await r.zadd(self.keys.inflight, dict.fromkeys(chunk, 1), xx=True)
        await r.delete(self.keys.queue)
        async for batch in _scan_batches(r, "arq:job:*"):
            await r.unlink(*batch)
        env = _env(self.redis_url, self.sim_url, self.interval_s, self.extra_env)
        cfg = dataclasses.replace(WorkerConfig.from_env(env), reconcile_grace_s=0.0)
        rt = Runtime(
            config=cfg,
            redis=r,
            upstream=UpstreamClient(base_url=self.sim_url, api_key=API_KEY),
        )
        try:
            t0 = time.perf_counter()
            rearmed = await reconcile_once(rt)
            wall = time.perf_counter() - t0
        finally:
            await rt.upstream.aclose()
            await rt.webhook_http.aclose()
            await rt.download_http.aclose()
        # Put everything back: active checks where their records say, background a day ahead.
        for lo in range(0, len(self.active), 5000):
            chunk = self.active[lo : lo + 5000]
            async with r.pipeline(transaction=False) as pipe:
                for i in chunk:
                    pipe.hget(self.keys.record(i), Field.NEXT_CHECK_AT_MS)
                nexts = await pipe.execute()
            await r.zadd(self.keys.inflight, {i: int(n) for i, n in zip(chunk, nexts, strict=True)})
        await self._push_far(r, self.background)
        n = len(everyone)
        return {
            "requests": n,
            "rearmed": rearmed,
            "pass_s": round(wall, 3),
            "us_per_request": round(wall / n * 1e6, 1),
        }

    async def _cpu_window(self, r: redis.asyncio.Redis) -> dict[str, Any]:
        """Workers started on evenly spread timers, warmed, then measured for ``window_s``."""
        await self._respread(r)
        workers = await self.start_workers(r)
        try:
            await asyncio.sleep(min(3.0, self.window_s))
            for c in workers:
                c.mark()
            g0, w0 = await self._gets(), time.monotonic()
            await asyncio.sleep(self.window_s)
            cpu = sum(c.sample() for c in workers)
            polls = await self._gets() - g0
            wall = time.monotonic() - w0
            lag = await _queue_lag_s(r, self.keys.queue)
        finally:
            self.stop_workers()
        return {
            "polls": polls,
            "wall_s": wall,
            "queue_lag_s": lag,
            "cpu_ms_per_poll": cpu / polls * 1000 if polls else None,
        }

    # --- the sweep

    async def run(self, sizes: list[int]) -> dict[str, Any]:
        r = redis.asyncio.Redis.from_url(self.redis_url, decode_responses=True)
        await r.flushall()
        histogram = await histogram_bytes(r)
        sim, self.sim_url = start_simulator(
            Workload(median_s=1e6, time_scale=1.0), self.log_dir, "sweep-sim"
        )
        client = AsyncClient(self.settings)
        steps: list[dict[str, Any]] = []
        try:
            await self.start_workers(r)
            base = await snapshot(r, self.keys.events, 0)
            # The active set, submitted at the poll rate so its checks are spread evenly, in
            # two halves: the bytes per request are the slope between them, so that what the
            # first requests set up once (latency histograms, scripts) is not divided among
            # them (bench/memstate.py).
            half_n = self.active_n // 2
            t0 = time.monotonic()
            await self._submit_active(client, 0, half_n, t0)
            await asyncio.sleep(self.interval_s + 2)
            half = await snapshot(r, self.keys.events, half_n)
            # The second half resumes whole intervals later, at the phase it would have had.
            cycles = math.ceil((time.monotonic() - t0 - half_n / self.rate) / self.interval_s)
            await self._submit_active(client, half_n, self.active_n, t0 + cycles * self.interval_s)
            await asyncio.sleep(self.interval_s + 2)
            full = await snapshot(r, self.keys.events, self.active_n)
            polling = polling_memory(base, half, full, histogram)
            used_growth = int(full.mem["used_memory"]) - int(base.mem["used_memory"])
            active_bytes = round(used_growth / self.active_n)
            # The event stream is a log capped at events_maxlen entries, not per-request state:
            # its growth is reported apart (it stops growing at the cap, whatever N is). So is
            # the Lua script cache (loaded once per deployment as scripts are first run, part
            # of used_memory): it does not grow with requests.
            events_bytes = full.events_bytes - base.events_bytes
            scripts_bytes = polling["script_cache_bytes"]
            # Without client and AOF buffers too: they move with the connections, not the
            # requests, and on a small active set their swing can exceed the records' growth.
            active_state_bytes = polling["bytes_per_request_whole_set"]
            active_body_bytes = round(
                sum([len(await self._body(r, i)) for i in self.active]) / self.active_n
            )
            self.progress(
                f"  sweep: {self.active_n} active requests polling at {self.rate:g}/s; "
                f"{polling['bytes_per_request']} Redis bytes per in-flight request (slope), "
                f"{polling['fixed_bytes']} B fixed ({len(polling['commands_first_run'])} "
                f"commands first run, {histogram} B of latency histogram each)"
            )
            self.stop_workers()
            prev_n = 0
            for n in sizes:
                add = n - len(self.background)
                prev_used = state_bytes(await r.info("memory"))
                ts = time.monotonic()
                new = await self._submit_many(client, add, self.active_n + len(self.background))
                await self._push_far(r, new)
                self.background += new
                submit_s = time.monotonic() - ts
                mem = await r.info("memory")
                used = int(mem["used_memory"])
                # Event stream included (submits add to it); client and AOF buffers and the
                # script cache not (bench/memstate.py).
                bytes_per = (state_bytes(mem) - prev_used) / max(1, n - prev_n)
                prev_n = n
                breakdown = await self._breakdown(r, n + self.active_n)
                # Worker CPU per poll at this N: the median of several windows, each with
                # freshly started workers (one window on a shared machine is one noisy draw).
                windows = [await self._cpu_window(r) for _ in range(self.cpu_repeats)]
                cpu_ms = sorted(w["cpu_ms_per_poll"] for w in windows if w["cpu_ms_per_poll"])
                polls = sum(w["polls"] for w in windows)
                wall = sum(w["wall_s"] for w in windows)
                lag = max(w["queue_lag_s"] for w in windows)
                rec = await self._reconcile_worst(r)
                step = {
                    "n": n,
                    "submit_rate_per_s": round(add / submit_s) if submit_s else None,
                    "redis_bytes_per_request": round(bytes_per),
                    "redis_used_mib": round(used / 2**20, 1),
                    "memory_breakdown_bytes": breakdown,
                    "polls": polls,
                    "polls_per_s": round(polls / wall, 1),
                    "worker_cpu_ms_per_poll": (
                        round(statistics.median(cpu_ms), 3) if cpu_ms else None
                    ),
                    "worker_cpu_ms_per_poll_windows": [round(x, 3) for x in cpu_ms],
                    "queue_lag_at_end_s": round(lag, 2),
                    "reconciler": rec,
                }
                steps.append(step)
                self.progress(
                    f"  sweep N={n:>6}: {step['redis_bytes_per_request']} B/request, "
                    f"{step['worker_cpu_ms_per_poll']} ms CPU/poll at {step['polls_per_s']}/s, "
                    f"reconciler worst case {rec['pass_s']} s/pass "
                    f"({rec['us_per_request']} us/request)"
                )
        finally:
            self.stop_workers()
            await client.aclose()
            stop_all([sim])
            await r.aclose()
        return {
            "active_requests": self.active_n,
            "poll_rate_per_s": self.rate,
            "window_s": self.window_s,
            "cpu_windows_per_n": self.cpu_repeats,
            "redis_bytes_per_inflight_polling": active_bytes,
            "redis_bytes_per_inflight_polling_without_event_stream": active_state_bytes,
            "polling_memory": polling,
            "script_cache_bytes_loaded_during_active_set": scripts_bytes,
            "event_stream_bytes_per_inflight_polling": round(events_bytes / self.active_n),
            "request_body_bytes": active_body_bytes,
            "steps": steps,
            "fits": _fits(steps),
        }


async def _queue_lag_s(r: redis.asyncio.Redis, queue: str) -> float:
    oldest = await r.zrange(queue, 0, 0, withscores=True)
    return oldest_due_age_ms(oldest, int(time.time() * 1000)) / 1000


async def _scan_batches(r: redis.asyncio.Redis, pattern: str, size: int = 5000) -> Any:
    batch: list[str] = []
    async for key in r.scan_iter(match=pattern, count=size):
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fits(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares lines over N; a flat per-request figure has a slope near 0 (its change
    from the smallest to the largest N is reported as a percentage)."""
    if len(steps) < 2:
        return {}
    ns = [float(s["n"]) for s in steps]
    series = {
        "redis_bytes_per_request": [float(s["redis_bytes_per_request"]) for s in steps],
        "worker_cpu_ms_per_poll": [float(s["worker_cpu_ms_per_poll"] or 0) for s in steps],
        "reconciler_us_per_request": [float(s["reconciler"]["us_per_request"]) for s in steps],
    }
    out: dict[str, Any] = {}
    for name, ys in series.items():
        fit = linear_fit(ns, ys)
        first = fit["intercept"] + fit["slope"] * ns[0]
        last = fit["intercept"] + fit["slope"] * ns[-1]
        out[name] = {
            "intercept": round(fit["intercept"], 4),
            "slope_per_1k_requests": round(fit["slope"] * 1000, 5),
            "r2": round(fit["r2"], 3),
            "change_over_range_pct": round((last - first) / first * 100, 1) if first else None,
        }
    total = linear_fit(ns, [float(s["reconciler"]["pass_s"]) for s in steps])
    out["reconciler_pass_s"] = {
        "intercept_s": round(total["intercept"], 4),
        "us_per_request": round(total["slope"] * 1e6, 2),
        "r2": round(total["r2"], 4),
    }
    return out


def run_sweep(
    redis_url: str,
    log_dir: Path,
    sizes: list[int],
    *,
    active: int = 2000,
    rate: float = 200.0,
    window_s: float = 15.0,
    cpu_repeats: int = 3,
    env: dict[str, str] | None = None,
    progress: Any = print,
) -> dict[str, Any]:
    sweep = Sweep(
        redis_url,
        log_dir,
        active=active,
        rate=rate,
        window_s=window_s,
        cpu_repeats=cpu_repeats,
        env=env,
        progress=progress,
    )
    return asyncio.run(sweep.run(sizes))
