"""One comparison run: a fresh simulator, the system under test as real processes, the
workload's arrivals, a sample of CPU / Redis memory / in-flight every second, an optional
SIGKILL-and-restart of every worker process at a fixed point, then the ground truth.

Systems: ``genqueue`` (``genqueue worker`` processes), ``naive_arq`` and ``seed_loop``
(``bench.baselines``). Each uses the same number of worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio

from bench.baselines import (
    ARQ_DEFAULT_TIMEOUT_S,
    SEED_SLEEP_S,
    read_created,
    read_results,
)
from bench.measure import Seen, summarize
from bench.procs import Child, python_child, start_genqueue_workers, stop_all
from bench.workload import API_KEY, WARM_GENERATIONS, Workload, start_simulator
from genqueue.producer import AsyncClient, RequestView, Settings
from genqueue.producer.record import with_id
from genqueue.worker.config import WorkerConfig

SAMPLE_EVERY_S = 1.0
#: genqueue's default task timeout (wall s): arq re-runs a SIGKILLed task 10 s after it.
GENQUEUE_TASK_TIMEOUT_S = 30.0


@dataclass
class RunSpec:
    system: str  # genqueue | naive_arq | seed_loop
    label: str
    workload: Workload
    workers: int = 2
    #: genqueue: extra GENQUEUE_* variables for this run (over the harness defaults).
    env: dict[str, str] = field(default_factory=dict)
    #: naive arq: max_jobs per worker (0 = arq's default, 10).
    max_jobs: int = 0
    #: seed loop: sleeps (seconds before the time scale) given to videos in turn.
    sleeps: tuple[float, ...] = (SEED_SLEEP_S,)
    #: Simulated seconds after the first arrival at which every worker process is SIGKILLed
    #: and started again (None: no restart).
    restart_at_s: float | None = None
    #: genqueue: completions of the model already in its learned history (see
    #: ``Genqueue.warmup``), as in a deployment that has been running; 0 = a cold start.
    warmup: int = 0
    repeat: int = 0

    @property
    def key(self) -> str:
        w = self.workload
        return f"{self.label}|sigma={w.sigma:g}|n={w.videos}|repeat={self.repeat}"


class Bench:
    """What every run shares: a private Redis, a log folder, harness-level env overrides."""

    def __init__(self, redis_url: str, log_dir: Path, env: dict[str, str] | None = None):
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.n = 0

    def next_name(self, label: str) -> str:
        self.n += 1
        safe = "".join(c if c.isalnum() else "-" for c in label).strip("-")
        return f"r{self.n:02d}-{safe}"


# --- systems --------------------------------------------------------------------------------


class System:
    """The system under test (abstract)."""

    def __init__(self, bench: Bench, spec: RunSpec, run: str, sim_url: str) -> None:
        self.bench, self.spec, self.run, self.sim_url = bench, spec, run, sim_url
        self.w = spec.workload
        self.workers: list[Child] = []  # every incarnation, killed ones included (their CPU)
        self.incarnation = 0

    def live(self) -> list[Child]:
        return [c for c in self.workers if c.alive]

    async def start(self) -> None:
        raise NotImplementedError

    async def warmup(self) -> None:
        return None

    async def begin(self, t0: float) -> None:
        return None

    async def submit(self, i: int) -> None:
        return None

    async def inflight(self, submitted: int) -> int:
        raise NotImplementedError

    async def finished(self) -> int:
        raise NotImplementedError

    async def restart(self) -> None:
        for c in self.live():
            c.kill()
        self.incarnation += 1
        await self.spawn()

    async def spawn(self) -> None:
        raise NotImplementedError

    async def seen(self) -> tuple[dict[int, Seen], dict[int, list[str]]]:
        raise NotImplementedError

    async def close(self) -> None:
        stop_all(self.live())


def genqueue_env(bench: Bench, spec: RunSpec, prefix: str, sim_url: str) -> dict[str, str]:
    """Worker environment: the harness's defaults, unless the caller's environment or the
    run's ``env`` sets them (arbitrary GENQUEUE_* variables pass through)."""
    w = spec.workload
    defaults = {
        # Workers look for due timers this often: the worker's default on the time scale
        # (rule 14), so a check is as late in simulated seconds as it would be unscaled.
        "GENQUEUE_POLL_DELAY_S": f"{max(0.005, WorkerConfig().poll_delay_s * w.time_scale):g}",
        "GENQUEUE_LOG_FORMAT": "json",
        "GENQUEUE_LOG_LEVEL": "WARNING",
    }
    env = {**defaults, **os.environ}
    env.update(
        GENQUEUE_REDIS_URL=bench.redis_url,
        GENQUEUE_KEY_PREFIX=prefix,
        GENQUEUE_UPSTREAM_URL=sim_url,
        TOGETHER_API_KEY=API_KEY,
        GENQUEUE_TIME_SCALE=repr(w.time_scale),
        PYTHONUNBUFFERED="1",
    )
    env.update(bench.env)
    env.update(spec.env)
    return env


class Genqueue(System):
    def __init__(self, bench: Bench, spec: RunSpec, run: str, sim_url: str) -> None:
        super().__init__(bench, spec, run, sim_url)
        self.prefix = f"bench-{run}"
        self.env = genqueue_env(bench, spec, self.prefix, sim_url)
        self.settings = Settings.from_env({**self.env, "GENQUEUE_WAIT_RECHECK_S": "60"})
        self.client = AsyncClient(self.settings)
        self.ids: dict[int, str] = {}

    async def spawn(self) -> None:
        names = [f"{self.run}-w{k}-{self.incarnation}" for k in range(self.spec.workers)]
        self.workers += await start_genqueue_workers(
            names, self.env, self.bench.log_dir, self.client.redis, self.prefix
        )

    async def start(self) -> None:
        await self.spawn()

    async def warmup(self) -> None:
        """Warm history: ``spec.warmup`` completions of the model, drawn from the workload's
        own distribution, recorded through genqueue's ``DurationModel.record`` (what a
        deployment that has run this model before holds in Redis)."""
        from genqueue.worker.durations import DurationModel

        n = self.spec.warmup
        if not n:
            return
        w = self.w
        rng = random.Random(f"warm:{w.seed}:{w.sigma}")
        model = DurationModel(self.client.redis, self.settings.keys)
        created = time.time() - 3600
        for lo in range(0, n, 200):
            batch = []
            for _ in range(min(200, n - lo)):
                queue = rng.lognormvariate(math.log(w.queue_median_s), w.queue_sigma) * w.time_scale
                gen = rng.lognormvariate(math.log(w.median_s), w.sigma) * w.time_scale
                # Only what the upstream reports, and where it reports ``queued`` the start
                # of the first few as the bootstrap probes bracket it (bench/workload.py).
                bracketed = w.report_queued and lo + len(batch) < WARM_GENERATIONS
                batch.append(
                    model.record(
                        w.model,
                        created,
                        created + queue + gen,
                        generation_s=gen if bracketed else None,
                    )
                )
            await asyncio.gather(*batch)

    async def submit(self, i: int) -> None:
        self.ids[i] = await self.client.submit(self.w.request(i))

    async def inflight(self, submitted: int) -> int:
        return int(await self.client.redis.zcard(self.settings.keys.inflight))

    async def finished(self) -> int:
        st = await self.client.stats()
        if st.tracking:
            return 0
        return len(self.ids) - sum(st.requests_by_status.values())

    async def seen(self) -> tuple[dict[int, Seen], dict[int, list[str]]]:
        keys = self.settings.keys
        items = list(self.ids.items())
        async with self.client.redis.pipeline(transaction=False) as pipe:
            for _, rid in items:
                pipe.hgetall(keys.record(rid))
            replies = await pipe.execute()
        seen: dict[int, Seen] = {}
        created: dict[int, list[str]] = {}
        for (i, rid), raw in zip(items, replies, strict=True):
            if not raw:
                continue
            v = RequestView.from_hash(with_id(rid, raw))
            created[i] = list(v.upstream_ids) or ([v.upstream_id] if v.upstream_id else [])
            if v.is_terminal and v.finished_at is not None:
                ids = [v.upstream_id] if v.upstream_id else []
                seen[i] = Seen(i, ids, v.status, v.finished_at)
        return seen, created

    async def close(self) -> None:
        await super().close()
        await self.client.aclose()


class NaiveArq(System):
    def __init__(self, bench: Bench, spec: RunSpec, run: str, sim_url: str) -> None:
        super().__init__(bench, spec, run, sim_url)
        self.queue = f"bench-{run}:queue"
        self.files: list[Path] = []
        self.pool: Any = None
        self.submitted = 0

    async def spawn(self) -> None:
        for k in range(self.spec.workers):
            name = f"{self.run}-w{k}-{self.incarnation}"
            results = self.bench.log_dir / f"{name}.jsonl"
            self.files.append(results)
            args = [
                *("bench.baselines", "arq", "--redis", self.bench.redis_url),
                *("--queue", self.queue, "--upstream", self.sim_url),
                *("--scale", repr(self.w.time_scale), "--max-jobs", str(self.spec.max_jobs)),
                *("--results", str(results)),
            ]
            self.workers.append(python_child(name, args, dict(os.environ), self.bench.log_dir))
        deadline = time.monotonic() + 60
        r = self.pool
        want = {f"{self.queue}:health:{c.pid}" for c in self.workers[-self.spec.workers :]}
        while time.monotonic() < deadline:
            if await r.exists(*want) == len(want):
                return
            for c in self.workers[-self.spec.workers :]:
                if not c.alive:
                    raise RuntimeError(f"{c.name} exited:\n{c.tail()}")
            await asyncio.sleep(0.05)
        raise TimeoutError("naive arq workers did not become ready")

    async def start(self) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self.pool = await create_pool(
            RedisSettings.from_dsn(self.bench.redis_url), default_queue_name=self.queue
        )
        await self.spawn()

    async def submit(self, i: int) -> None:
        sleep_s = SEED_SLEEP_S * self.w.time_scale
        await self.pool.enqueue_job("make_video", i, self.w.request(i)["prompt"], sleep_s)
        self.submitted += 1

    async def inflight(self, submitted: int) -> int:
        return self.submitted - len(read_results(self.files))

    async def finished(self) -> int:
        return len(read_results(self.files))

    async def seen(self) -> tuple[dict[int, Seen], dict[int, list[str]]]:
        return _seen_from_files(self.files)

    async def close(self) -> None:
        await super().close()
        if self.pool is not None:
            await self.pool.aclose()


class SeedLoop(System):
    def __init__(self, bench: Bench, spec: RunSpec, run: str, sim_url: str) -> None:
        super().__init__(bench, spec, run, sim_url)
        self.schedule = bench.log_dir / f"{run}-schedule.json"
        self.files: list[Path] = []

    async def spawn(self) -> None:
        new = []
        for k in range(self.spec.workers):
            name = f"{self.run}-p{k}-{self.incarnation}"
            results = self.bench.log_dir / f"{name}.jsonl"
            args = [
                *("bench.baselines", "seed", "--schedule", str(self.schedule)),
                *("--upstream", self.sim_url, "--results", str(results)),
                *("--part", str(k), "--parts", str(self.spec.workers)),
            ]
            if self.files:
                args += ["--done", *map(str, self.files)]
            new.append(results)
            self.workers.append(python_child(name, args, dict(os.environ), self.bench.log_dir))
        self.files += new
        deadline = time.monotonic() + 60
        while not all(_exists(f"{p}.ready") for p in new):
            for c in self.workers[-self.spec.workers :]:
                if not c.alive:
                    raise RuntimeError(f"{c.name} exited:\n{c.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError("seed loop processes did not become ready")
            await asyncio.sleep(0.02)

    async def start(self) -> None:
        await self.spawn()

    async def begin(self, t0: float) -> None:
        w = self.w
        sleeps = self.spec.sleeps
        videos = [
            {
                "i": i,
                "at": w.wall(at),
                "prompt": w.request(i)["prompt"],
                "sleep_s": sleeps[i % len(sleeps)] * w.time_scale,
            }
            for i, at in enumerate(w.arrivals_s())
        ]
        tmp = self.schedule.with_suffix(".tmp")
        tmp.write_text(json.dumps({"t0": t0, "videos": videos}))
        tmp.rename(self.schedule)

    async def inflight(self, submitted: int) -> int:
        return submitted - len(read_results(self.files))

    async def finished(self) -> int:
        return len(read_results(self.files))

    async def seen(self) -> tuple[dict[int, Seen], dict[int, list[str]]]:
        return _seen_from_files(self.files)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _seen_from_files(files: list[Path]) -> tuple[dict[int, Seen], dict[int, list[str]]]:
    done = read_results(files)
    created = read_created(files)
    seen = {i: Seen(i, [row["id"]], row["status"], float(row["at"])) for i, row in done.items()}
    return seen, created


SYSTEMS: dict[str, type[System]] = {
    "genqueue": Genqueue,
    "naive_arq": NaiveArq,
    "seed_loop": SeedLoop,
}


# --- the run --------------------------------------------------------------------------------


async def _redis_used(r: redis.asyncio.Redis) -> int:
    info = await r.info("memory")
    return int(info["used_memory"])


async def run_one(bench: Bench, spec: RunSpec, *, progress: Any = print) -> dict[str, Any]:
    """Run one spec end to end; returns its figures (see ``bench.measure``)."""
    w = spec.workload
    run = bench.next_name(spec.label)
    started = time.monotonic()
    r = redis.asyncio.Redis.from_url(bench.redis_url, decode_responses=True)
    await r.flushall()
    sim, sim_url = start_simulator(w, bench.log_dir, f"{run}-sim")
    system = SYSTEMS[spec.system](bench, spec, run, sim_url)
    samples: list[dict[str, Any]] = []
    restarted_at: float | None = None
    try:
        await system.start()
        await system.warmup()
        await asyncio.sleep(0.3)
        base_mem = await _redis_used(r)
        for c in system.workers:
            c.mark()
        arrivals = w.arrivals_s()
        t0 = time.time() + 0.2
        await system.begin(t0)
        cutoff = w.cutoff_s
        if spec.restart_at_s is not None:
            timeout_s = float(
                {**bench.env, **spec.env}.get("GENQUEUE_TASK_TIMEOUT_S")
                or os.environ.get("GENQUEUE_TASK_TIMEOUT_S")
                or GENQUEUE_TASK_TIMEOUT_S
            )
            # arq re-runs a SIGKILLed job after its lock expires: the largest timeout + 10 s.
            recovery_s = max(timeout_s, w.time_scale * ARQ_DEFAULT_TIMEOUT_S) + 10
            cutoff += w.tail_s + recovery_s / w.time_scale
        submitted = 0
        next_sample = t0
        while True:
            now = time.time()
            elapsed_sim = (now - t0) / w.time_scale
            while submitted < len(arrivals) and arrivals[submitted] <= elapsed_sim:
                await system.submit(submitted)
                submitted += 1
            if (
                spec.restart_at_s is not None
                and restarted_at is None
                and elapsed_sim >= spec.restart_at_s
            ):
                restarted_at = elapsed_sim
                await system.restart()
                progress(f"  {run}: SIGKILLed and restarted every worker at {elapsed_sim:.0f} s")
            if now >= next_sample:
                next_sample += SAMPLE_EVERY_S
                finished = await system.finished()
                cpu = sum(c.sample() for c in system.workers)
                rss = sum(c.peak_rss for c in system.live())
                used = await _redis_used(r)
                samples.append(
                    {
                        "t_sim": round(elapsed_sim, 1),
                        "submitted": max(submitted, 0),
                        "finished": finished,
                        "inflight": await system.inflight(submitted),
                        "cpu_s": round(cpu, 2),
                        "rss": rss,
                        "redis_delta": used - base_mem,
                    }
                )
                if submitted == len(arrivals) and finished >= len(arrivals):
                    break
                if elapsed_sim >= cutoff:
                    progress(f"  {run}: cut off at {elapsed_sim:.0f} s, {finished} finished")
                    break
            await asyncio.sleep(0.005 if submitted < len(arrivals) else 0.05)
        cpu_s = sum(c.sample() for c in system.workers)
        seen, created = await system.seen()
        async with httpx.AsyncClient(timeout=60) as h:
            jobs = (await h.get(f"{sim_url}/_sim/jobs")).json()
            sim_stats = (await h.get(f"{sim_url}/_sim/stats")).json()
            sim_load = (await h.get(f"{sim_url}/_sim/load")).json()
    finally:
        with contextlib.suppress(Exception):
            await system.close()
        stop_all([sim])
        await r.aclose()
    figures = summarize(
        videos=w.videos,
        scale=w.time_scale,
        t0=t0,
        seen=seen,
        created=created,
        jobs=jobs,
        sim_stats=sim_stats,
        sim_load=sim_load,
        cpu_s=cpu_s,
        samples=samples,
    )
    return {
        "run": run,
        "system": spec.system,
        "label": spec.label,
        "sigma": w.sigma,
        "repeat": spec.repeat,
        "workload": w.to_json(),
        "workers": spec.workers,
        "env": spec.env,
        "max_jobs": spec.max_jobs or None,
        "sleeps_s": list(spec.sleeps) if spec.system == "seed_loop" else None,
        "warmup_videos": spec.warmup,
        "restart_at_sim_s": rnd1(restarted_at),
        "wall_s": round(time.monotonic() - started, 1),
        **figures,
        "per_sleep": _per_sleep(spec, seen, jobs, w) if len(spec.sleeps) > 1 else None,
        "samples": samples,
    }


def rnd1(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _per_sleep(
    spec: RunSpec, seen: dict[int, Seen], jobs: list[dict[str, Any]], w: Workload
) -> list[dict[str, Any]]:
    """Seed-loop curve points: polls and lag per sleep value, from one mixed run."""
    from bench.measure import percentile, rnd

    by_id = {j["id"]: j for j in jobs}
    out = []
    for k, sleep in enumerate(spec.sleeps):
        lags, polls = [], []
        for s in seen.values():
            if s.index % len(spec.sleeps) != k or not s.upstream_ids:
                continue
            job = by_id.get(s.upstream_ids[-1])
            if job is None:
                continue
            lags.append(max(0.0, s.seen_at - job["done_at"]) / w.time_scale)
            polls.append(job["polls"])
        out.append(
            {
                "sleep_s": sleep,
                "videos": len(lags),
                "polls_per_video": rnd(sum(polls) / len(polls), 2) if polls else None,
                "lag_p50_s": rnd(percentile(lags, 50), 2),
                "lag_p95_s": rnd(percentile(lags, 95), 2),
            }
        )
    return out
