"""The 10k target run (``make bench-10k``): N in-flight videos at time scale 1 on 2 worker
processes, poll cap 30 s, a shared rate limit above N / cap. Closed loop: N requests are
submitted at once and every one that ends is replaced by a new one (through the producer's
``wait()``), so N stay in flight for the whole run. Reported: detection lag p50/p95 per minute
(by completion time; "keeps up" = p95 <= 31 s and not growing from the first minute with
completions to the last), worker CPU per upstream call, polls per video, Redis bytes per
in-flight request (before anything finished), peak upstream calls per second.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

from bench.measure import linear_fit, percentile, requests_by_endpoint, rnd
from bench.procs import Child, cpu_seconds, start_genqueue_workers, stop_all
from bench.runs import Bench, RunSpec, genqueue_env
from bench.workload import Workload, start_simulator
from genqueue.local_redis import free_port
from genqueue.producer import AsyncClient, RequestView, Settings
from genqueue.producer.stats import oldest_due_age_ms


async def _run(
    bench: Bench,
    *,
    inflight: int,
    minutes: float,
    rate_limit_rps: float,
    rate_limit_burst: int,
    sigma: float,
    workers: int,
    time_scale: float,
    ramp_s: float,
    progress: Any,
) -> dict[str, Any]:
    w = Workload(videos=inflight, sigma=sigma, time_scale=time_scale, arrival_window_s=0.0)
    spec = RunSpec("genqueue", "genqueue-10k", w, workers=workers)
    r = redis.asyncio.Redis.from_url(bench.redis_url, decode_responses=True)
    await r.flushall()
    sim, sim_url = start_simulator(w, bench.log_dir, "tenk-sim")
    prefix = "bench-10k"
    env = genqueue_env(bench, spec, prefix, sim_url)
    env.setdefault("GENQUEUE_POLL_CAP_S", "30")
    if rate_limit_rps > 0:
        env["GENQUEUE_RATE_LIMIT_RPS"] = f"{rate_limit_rps:g}"
        env["GENQUEUE_RATE_LIMIT_BURST"] = str(rate_limit_burst)
    settings = Settings.from_env({**env, "GENQUEUE_WAIT_RECHECK_S": "120"})
    client = AsyncClient(settings)
    procs: list[Child] = []
    samples: list[dict[str, Any]] = []
    done: list[tuple[float, RequestView]] = []
    try:
        names = [f"tenk-w{k}" for k in range(workers)]
        ports = {n: free_port() for n in names}
        procs += await start_genqueue_workers(
            names,
            env,
            bench.log_dir,
            r,
            prefix,
            env_by_name={n: {"GENQUEUE_METRICS_PORT": str(p)} for n, p in ports.items()},
        )
        await asyncio.sleep(0.5)
        base_mem = int((await r.info("memory"))["used_memory"])
        for c in procs:
            c.mark()
        # Where the machine's CPU goes: the workers share it with these three.
        sim.mark()
        redis_pid = int((await r.info("server"))["process_id"])
        redis_cpu0, harness_cpu0 = cpu_seconds(redis_pid) or 0.0, time.process_time()
        t0 = time.time()
        scale = w.time_scale
        end = t0 + minutes * 60 * scale
        stopping = asyncio.Event()
        counter = 0
        sem = asyncio.Semaphore(200)

        async def lifecycle(k: int) -> None:
            nonlocal counter
            # A ramp spreads the first submissions, so completions don't all come in waves.
            await asyncio.sleep(ramp_s * scale * k / inflight)
            while not stopping.is_set():
                counter += 1
                async with sem:
                    rid = await client.submit(w.request(counter))
                try:
                    view = await client.wait(rid, timeout_s=max(1.0, end + 600 - time.time()))
                    view = _scaled(view, scale)
                except Exception:
                    return
                done.append((time.time(), view))
                if time.time() >= end:
                    return

        tasks = [asyncio.create_task(lifecycle(k)) for k in range(inflight)]
        progress(f"  10k: {inflight} submitted with the producer; closed loop, {minutes:g} min")
        async with httpx.AsyncClient(timeout=60) as h:
            while time.time() < end:
                await asyncio.sleep(5)
                st = (await h.get(f"{sim_url}/_sim/stats")).json()
                oldest = await r.zrange(settings.keys.queue, 0, 0, withscores=True)
                now_ms = int(time.time() * 1000)
                samples.append(
                    {
                        "t_s": round((time.time() - t0) / scale, 1),
                        "inflight": int(await r.zcard(settings.keys.inflight)),
                        "finished": len(done),
                        "redis_delta": int((await r.info("memory"))["used_memory"]) - base_mem,
                        "cpu_s": round(sum(c.sample() for c in procs), 2),
                        "gets": requests_by_endpoint(st, "GET /v2/videos/{id}"),
                        "creates": requests_by_endpoint(st, "POST /v2/videos"),
                        "queue_lag_s": round(oldest_due_age_ms(oldest, now_ms) / 1000 / scale, 2),
                    }
                )
                s = samples[-1]
                if len(samples) % 6 == 0:
                    recent = [v.detection_lag_s for t, v in done if t >= time.time() - 60 * scale]
                    p95 = percentile([x for x in recent if x is not None], 95)
                    progress(
                        f"  10k t={s['t_s']:.0f}s in flight {s['inflight']}, finished "
                        f"{s['finished']}, last-minute lag p95 "
                        f"{'-' if p95 is None else f'{p95:.1f}'} s, "
                        f"queue lag {s['queue_lag_s']} s, "
                        f"worker CPU {s['cpu_s']:.0f} s"
                    )
            stopping.set()
            cpu_s = sum(c.sample() for c in procs)
            wall_s = time.time() - t0
            cores = {
                "workers": cpu_s / wall_s,
                "simulator": sim.sample() / wall_s,
                "redis": ((cpu_seconds(redis_pid) or 0.0) - redis_cpu0) / wall_s,
                "harness": (time.process_time() - harness_cpu0) / wall_s,
            }
            st = (await h.get(f"{sim_url}/_sim/stats")).json()
            load = (await h.get(f"{sim_url}/_sim/load")).json()
            refusals: collections.Counter[str] = collections.Counter()
            for port in ports.values():
                text = (await h.get(f"http://127.0.0.1:{port}/metrics")).text
                refusals.update(_local_refusals(text))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        stop_all(procs)
        await client.aclose()
        stop_all([sim])
        await r.aclose()
    return _summarize(
        inflight=inflight,
        minutes=minutes,
        t0=t0,
        done=done,
        samples=samples,
        cpu_s=cpu_s,
        cores={k: round(v, 2) for k, v in cores.items()},
        refusals=dict(refusals),
        sim_stats=st,
        sim_load=load,
        env={k: v for k, v in env.items() if k.startswith("GENQUEUE_") and "URL" not in k},
        sigma=sigma,
        workers=workers,
        scale=scale,
        ramp_s=ramp_s,
    )


def _local_refusals(metrics_text: str) -> dict[str, int]:
    """A worker's count of steps the shared rate limit put off, by operation (create,
    retrieve), from its Prometheus text."""
    out: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "genqueue_rate_limited":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("source") == "local":
                op = sample.labels.get("operation", "")
                out[op] = out.get(op, 0) + int(sample.value)
    return out


def _scaled(view: RequestView, scale: float) -> RequestView:
    """The view with its detection lag in simulated seconds (wall / time scale)."""
    if scale == 1.0 or view.finished_at is None or view.upstream_done_at is None:
        return view
    lag = max(0.0, view.finished_at - view.upstream_done_at) / scale
    return dataclasses.replace(view, finished_at=view.upstream_done_at + lag)


def _summarize(
    *,
    inflight: int,
    minutes: float,
    t0: float,
    done: list[tuple[float, RequestView]],
    samples: list[dict[str, Any]],
    cpu_s: float,
    cores: dict[str, float],
    refusals: dict[str, int],
    sim_stats: dict[str, Any],
    sim_load: dict[str, Any],
    env: dict[str, str],
    sigma: float,
    workers: int,
    scale: float,
    ramp_s: float,
) -> dict[str, Any]:
    per_minute: list[dict[str, Any]] = []
    n_min = int(minutes + 0.999)
    for m in range(n_min):
        lags = [
            v.detection_lag_s
            for t, v in done
            if m * 60 <= (t - t0) / scale < (m + 1) * 60 and v.detection_lag_s is not None
        ]
        per_minute.append(
            {
                "minute": m + 1,
                "finished": len(lags),
                "lag_p50_s": rnd(percentile(lags, 50), 2),
                "lag_p95_s": rnd(percentile(lags, 95), 2),
                "lag_max_s": rnd(max(lags), 2) if lags else None,
            }
        )
    with_data = [p for p in per_minute if p["finished"] >= 50]
    all_lags = [v.detection_lag_s for _, v in done if v.detection_lag_s is not None]
    polls = [v.polls for _, v in done]
    gets = requests_by_endpoint(sim_stats, "GET /v2/videos/{id}")
    creates = requests_by_endpoint(sim_stats, "POST /v2/videos")
    # Memory per in-flight request: samples before the first completion (nothing retained).
    early = [s for s in samples if s["finished"] == 0 and s["inflight"] > 0]
    mem = None
    if early:
        top = max(early, key=lambda s: s["inflight"])
        mem = {
            "inflight": top["inflight"],
            "bytes_per_request": round(top["redis_delta"] / top["inflight"]),
        }
    p95s = [p["lag_p95_s"] for p in with_data]
    trend = (
        linear_fit([float(p["minute"]) for p in with_data], [float(x) for x in p95s])
        if len(with_data) >= 2
        else None
    )
    keeps_up = bool(p95s) and max(p95s) <= 31.0
    not_growing = bool(p95s) and p95s[-1] <= p95s[0] * 1.1 + 1.0
    return {
        "inflight_target": inflight,
        "minutes": minutes,
        "sigma": sigma,
        "workers": workers,
        "env": env,
        "finished": len(done),
        "lag_p50_s": rnd(percentile(all_lags, 50), 2),
        "lag_p95_s": rnd(percentile(all_lags, 95), 2),
        "per_minute": per_minute,
        "p95_first_minute_s": p95s[0] if p95s else None,
        "p95_last_minute_s": p95s[-1] if p95s else None,
        "p95_trend_s_per_minute": rnd(trend["slope"], 3) if trend else None,
        "keeps_up": keeps_up and not_growing,
        "polls_per_finished_video": rnd(sum(polls) / len(polls), 2) if polls else None,
        "upstream_gets": gets,
        "upstream_creates": creates,
        "worker_cpu_s": rnd(cpu_s, 1),
        "worker_cpu_ms_per_upstream_call": rnd(cpu_s / (gets + creates) * 1000, 3)
        if gets + creates
        else None,
        "worker_cpu_cores": rnd(cpu_s / (minutes * 60 * scale), 2),
        "cpu_cores_by_process": cores,
        # Each refusal is one more run of a step (its script, and its claim) at its turn.
        "rate_limit_refusals": sum(refusals.values()),
        "rate_limit_refusals_by_operation": dict(sorted(refusals.items())),
        "refusals_per_upstream_call": rnd(sum(refusals.values()) / (gets + creates), 3)
        if gets + creates
        else None,
        "time_scale": scale,
        "ramp_s": ramp_s,
        "max_calls_in_1s": sim_load.get("max_calls_in_window"),
        "max_jobs_in_flight_upstream": sim_load.get("max_jobs_in_flight"),
        "redis_memory": mem,
        "max_queue_lag_s": max((s["queue_lag_s"] for s in samples), default=None),
        "max_inflight_seen": max((s["inflight"] for s in samples), default=0),
        "samples": samples,
    }


def run_tenk(
    redis_url: str,
    log_dir: Path,
    *,
    inflight: int = 10_000,
    minutes: float = 6.0,
    rate_limit_rps: float | None = None,
    rate_limit_burst: int = 50,
    sigma: float = 0.2,
    workers: int = 2,
    time_scale: float = 1.0,
    ramp_s: float = 0.0,
    env: dict[str, str] | None = None,
    progress: Any = print,
) -> dict[str, Any]:
    """``minutes`` and every reported time are simulated (= wall at time scale 1)."""
    cap_s = float(os.environ.get("GENQUEUE_POLL_CAP_S", "30"))
    # Calls per simulated second; the limit itself is on wall seconds.
    rps = rate_limit_rps if rate_limit_rps is not None else round(1.5 * inflight / cap_s)
    rps = rps / time_scale
    bench = Bench(redis_url, log_dir, env)
    return asyncio.run(
        _run(
            bench,
            inflight=inflight,
            minutes=minutes,
            rate_limit_rps=rps,
            rate_limit_burst=rate_limit_burst,
            sigma=sigma,
            workers=workers,
            time_scale=time_scale,
            ramp_s=ramp_s,
            progress=progress,
        )
    )
