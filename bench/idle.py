"""What one idle worker costs (item 1 of issue 22): one ``genqueue worker`` process (its main
and side arq workers) with nothing to do, against its own key prefix, measured for a window:

* Redis commands per second: ``INFO commandstats`` calls before and after, every command
  counted (those a script runs inside it too, as Redis counts them), minus the harness's own
  ``INFO`` calls; per command, so the sources show;
* worker CPU: user + system CPU of the process (``/proc``) over the window, as % of a core.

The worker is started with its defaults (no time scale, the default ``poll_delay_s``).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import redis.asyncio

from bench.procs import start_genqueue_workers, stop_all
from bench.workload import API_KEY

PREFIX = "bench-idle"


def command_calls(stats: dict[str, Any]) -> dict[str, int]:
    """``INFO commandstats`` as command -> calls (redis-py parses each ``cmdstat_x`` entry)."""
    out: dict[str, int] = {}
    for key, value in stats.items():
        if key.startswith("cmdstat_") and isinstance(value, dict):
            out[key.removeprefix("cmdstat_")] = int(value.get("calls", 0))
    return out


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls per command made between two snapshots (commands never called are left out)."""
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}


async def redis_cpu_s(r: redis.asyncio.Redis) -> float:
    """Redis' CPU so far on its main thread (``used_cpu_{sys,user}_main_thread``, Redis >= 7:
    the thread that runs every command and script, so the one that saturates); the whole
    process's on an older Redis."""
    info = await r.info("cpu")
    if "used_cpu_sys_main_thread" in info:
        return float(info["used_cpu_sys_main_thread"]) + float(info["used_cpu_user_main_thread"])
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def measure_idle(
    redis_url: str, log_dir: Path, *, window_s: float = 120.0, warmup_s: float = 10.0
) -> dict[str, Any]:
    """One idle worker process over ``window_s`` after ``warmup_s`` (start-up excluded)."""
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    env = {
        "GENQUEUE_LOG_FORMAT": "json",
        "GENQUEUE_LOG_LEVEL": "WARNING",
        **os.environ,
        "GENQUEUE_REDIS_URL": redis_url,
        "GENQUEUE_KEY_PREFIX": PREFIX,
        # Never called: an idle worker makes no upstream call.
        "GENQUEUE_UPSTREAM_URL": "http://127.0.0.1:9",
        "TOGETHER_API_KEY": API_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    workers = await start_genqueue_workers(["idle-1"], env, log_dir, r, PREFIX)
    try:
        await asyncio.sleep(warmup_s)
        (w,) = workers
        w.mark()
        before = command_calls(await r.info("commandstats"))
        t0 = time.monotonic()
        await asyncio.sleep(window_s)
        after = command_calls(await r.info("commandstats"))
        wall = time.monotonic() - t0
        cpu = w.sample()
    finally:
        stop_all(workers)
        await r.aclose()
    delta = calls_delta(before, after)
    # The harness's own: the second snapshot's INFO (the first is counted before it).
    delta["info"] = delta.get("info", 0) - 1
    delta = {k: v for k, v in delta.items() if v > 0}
    total = sum(delta.values())
    return {
        "window_s": round(wall, 1),
        "commands": total,
        "commands_per_s": round(total / wall, 3),
        "by_command": delta,
        "cpu_s": round(cpu, 3),
        "cpu_pct_of_core": round(cpu / wall * 100, 3),
    }


def run_idle(
    redis_url: str,
    log_dir: Path,
    *,
    window_s: float,
    warmup_s: float = 10.0,
    progress: Any = print,
) -> Any:
    res = asyncio.run(measure_idle(redis_url, log_dir, window_s=window_s, warmup_s=warmup_s))
    progress(
        f"  idle worker: {res['commands_per_s']} Redis commands/s, "
        f"{res['cpu_pct_of_core']} % of a core ({res['by_command']})"
    )
    return res
