"""The two naive ways genqueue is compared with, written as a user would write them, with the
official ``together`` SDK (defaults: its retries, its connection pool) against the simulator.

* ``python -m bench.baselines arq ...``: an arq worker whose job creates one video, then loops
  ``retrieve(); await asyncio.sleep(5)`` inside the job (arq defaults: ``max_jobs=10``,
  ``job_timeout=300 s``, pickle serializer, results kept), optionally with a larger
  ``max_jobs``.
* ``python -m bench.baselines seed ...``: the README's documented blocking loop, one thread per
  video (``time.sleep(5)``), started at each video's arrival time.

Every sleep, job timeout and idle poll delay is multiplied by the run's time scale
(architecture rule 14). Each finished video is appended as one JSON line (index, upstream
id, status, when it was seen) to this process's results file, which is how the harness
learns "our completion time"; a restarted seed process skips the videos already in the files
and re-creates the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bench.workload import API_KEY, MODEL

#: The documented loop's sleep (seconds, before the time scale).
SEED_SLEEP_S = 5.0
#: arq's default job timeout (seconds, before the time scale).
ARQ_DEFAULT_TIMEOUT_S = 300.0
#: arq's default poll delay (seconds, before the time scale).
ARQ_DEFAULT_POLL_DELAY_S = 0.5


class ResultLog:
    """Appends one JSON line per finished video (thread-safe, flushed at once: a SIGKILL
    loses nothing already written)."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def write(self, event: str, index: int, job_id: str, status: str, **extra: Any) -> None:
        row = {"e": event, "i": index, "id": job_id, "status": status, "at": time.time(), **extra}
        line = json.dumps(row)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


def _rows(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by SIGKILL
    return rows


def read_results(paths: list[Path]) -> dict[int, dict[str, Any]]:
    """Every video's first observed end ("done" lines), by index."""
    out: dict[int, dict[str, Any]] = {}
    for row in _rows(paths):
        i = int(row["i"])
        if row.get("e") == "done" and (i not in out or row["at"] < out[i]["at"]):
            out[i] = row
    return out


def read_created(paths: list[Path]) -> dict[int, list[str]]:
    """Every upstream job each video created ("created" lines), by index."""
    out: dict[int, list[str]] = {}
    for row in _rows(paths):
        if row.get("e") == "created":
            out.setdefault(int(row["i"]), []).append(row["id"])
    return out


# --- naive arq ------------------------------------------------------------------------------


async def make_video(ctx: dict[str, Any], index: int, prompt: str, sleep_s: float) -> str:
    """arq job: create the video, then poll it by sleeping inside the job."""
    client = ctx["together"]
    job = await client.videos.create(model=MODEL, prompt=prompt)
    ctx["results"].write("created", index, job.id, job.status)
    while True:
        job = await client.videos.retrieve(job.id)
        if job.status in ("completed", "failed"):
            break
        await asyncio.sleep(sleep_s)
    ctx["results"].write("done", index, job.id, job.status)
    return str(job.status)


def run_arq(a: argparse.Namespace) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func
    from together import AsyncTogether

    results = ResultLog(Path(a.results))

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["together"] = AsyncTogether(base_url=a.upstream, api_key=API_KEY)
        ctx["results"] = results

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["together"].close()

    kwargs: dict[str, Any] = {}
    if a.max_jobs:
        kwargs["max_jobs"] = a.max_jobs
    worker = Worker(
        functions=[func(make_video, name="make_video", timeout=ARQ_DEFAULT_TIMEOUT_S * a.scale)],
        queue_name=a.queue,
        redis_settings=RedisSettings.from_dsn(a.redis),
        on_startup=startup,
        on_shutdown=shutdown,
        poll_delay=max(0.005, ARQ_DEFAULT_POLL_DELAY_S * a.scale),
        health_check_key=f"{a.queue}:health:{os.getpid()}",
        **kwargs,
    )
    worker.run()


# --- the documented blocking loop -----------------------------------------------------------


def seed_video(client: Any, index: int, prompt: str, sleep_s: float, results: ResultLog) -> None:
    """The README's loop, verbatim apart from the time scale."""
    job = client.videos.create(model=MODEL, prompt=prompt)
    results.write("created", index, job.id, job.status)
    while True:
        job = client.videos.retrieve(job.id)
        if job.status in ("completed", "failed"):
            break
        time.sleep(sleep_s)
    results.write("done", index, job.id, job.status, sleep_s=sleep_s)


def run_seed(a: argparse.Namespace) -> None:
    from together import Together

    done = read_results([Path(p) for p in a.done]) if a.done else {}
    results = ResultLog(Path(a.results))
    client = Together(base_url=a.upstream, api_key=API_KEY)
    # Ready (imports done): the harness then writes the schedule with the start time.
    Path(a.results + ".ready").touch()
    schedule_path = Path(a.schedule)
    while not schedule_path.exists():
        time.sleep(0.01)
    schedule = json.loads(schedule_path.read_text())
    mine = [v for v in schedule["videos"] if v["i"] % a.parts == a.part and v["i"] not in done]
    t0 = float(schedule["t0"])
    threads = []
    for v in sorted(mine, key=lambda v: v["at"]):
        delay = t0 + v["at"] - time.time()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(
            target=seed_video,
            args=(client, v["i"], v["prompt"], v["sleep_s"], results),
            daemon=True,
        )
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.baselines")
    sub = p.add_subparsers(dest="kind", required=True)
    arq = sub.add_parser("arq", help="naive arq worker")
    arq.add_argument("--redis", required=True)
    arq.add_argument("--queue", required=True)
    arq.add_argument("--upstream", required=True)
    arq.add_argument("--scale", type=float, required=True)
    arq.add_argument("--max-jobs", type=int, default=0, help="0: arq's default (10)")
    arq.add_argument("--results", required=True)
    seed = sub.add_parser("seed", help="thread-per-video blocking loop")
    seed.add_argument("--schedule", required=True)
    seed.add_argument("--upstream", required=True)
    seed.add_argument("--part", type=int, default=0)
    seed.add_argument("--parts", type=int, default=1)
    seed.add_argument("--results", required=True)
    seed.add_argument("--done", nargs="*", default=[], help="results files of earlier runs")
    a = p.parse_args(argv)
    if a.kind == "arq":
        run_arq(a)
    else:
        run_seed(a)


if __name__ == "__main__":
    main()
