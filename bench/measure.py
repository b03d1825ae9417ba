"""Turning one run's observations and the simulator's ground truth into figures.

Definitions (all times in simulated seconds = wall seconds / time scale):

* detection lag: when the system saw the video end (genqueue: the record's ``finished_at``,
  Redis clock; baselines: ``time.time()`` when the loop saw it) minus the upstream job's true
  ``done_at`` from ``/_sim/jobs`` (same host clock), clamped at 0;
* polls per video: every ``GET /v2/videos/{id}`` the simulator answered, divided by the videos
  that finished (wasted polls of orphaned jobs count too);
* videos per minute: finished videos / (last end seen - first arrival), per simulated minute;
* worker CPU: user + system CPU of the worker processes only (``/proc/<pid>/stat``), from
  just before the first arrival to the end of the run (start-up and imports excluded);
* max in flight: most upstream jobs created and not yet done at any moment (``/_sim/load``);
* restart cost: ``recreated`` = upstream jobs beyond one per video; ``orphaned`` = upstream jobs
  that ended (and were billed when completed) with nobody seeing it; ``lost`` = videos that
  never ended for the user by the cut-off.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def rnd(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


@dataclass
class Seen:
    """One video as the system under test saw it end."""

    index: int
    upstream_ids: list[str]
    status: str
    seen_at: float  # unix seconds


def requests_by_endpoint(sim_stats: Mapping[str, Any], endpoint: str) -> int:
    by_status = sim_stats.get("requests", {}).get(endpoint, {})
    return int(sum(by_status.values()))


def summarize(
    *,
    videos: int,
    scale: float,
    t0: float,
    seen: Mapping[int, Seen],
    created: Mapping[int, list[str]],
    jobs: Iterable[Mapping[str, Any]],
    sim_stats: Mapping[str, Any],
    sim_load: Mapping[str, Any],
    cpu_s: float,
    samples: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The figures of one run (see the module docstring)."""
    by_id = {j["id"]: j for j in jobs}
    lag_of: dict[int, float] = {}
    polls_of: dict[int, int] = {}
    for s in seen.values():
        polls_of[s.index] = sum(int(by_id[u].get("polls", 0)) for u in s.upstream_ids if u in by_id)
        job = by_id.get(s.upstream_ids[-1]) if s.upstream_ids else None
        if job is not None:
            lag_of[s.index] = max(0.0, s.seen_at - float(job["done_at"])) / scale
    lags = list(lag_of.values())
    finished = len(seen)
    gets = requests_by_endpoint(sim_stats, "GET /v2/videos/{id}")
    posts = requests_by_endpoint(sim_stats, "POST /v2/videos")
    last = max((s.seen_at for s in seen.values()), default=t0)
    span_min = max(1e-9, (last - t0) / scale / 60.0)
    seen_ids = {u for s in seen.values() for u in s.upstream_ids[-1:]}
    ended = [j for j in by_id.values() if j["status"] in ("completed", "failed")]
    orphaned = [j for j in ended if j["id"] not in seen_ids]
    videos_with_job = sum(1 for ids in created.values() if ids)
    recreated = max(0, len(by_id) - videos_with_job)
    lost = videos - finished
    inflight_mem = _memory_per_inflight(samples)
    calls = gets + posts
    return {
        "videos": videos,
        "finished": finished,
        "unfinished_at_cutoff": lost,
        "completed": sum(1 for s in seen.values() if s.status == "completed"),
        "videos_per_min": rnd(finished / span_min, 2),
        "worker_cpu_s": rnd(cpu_s, 2),
        "cpu_s_per_1000_videos": rnd(cpu_s / finished * 1000, 2) if finished else None,
        "upstream_gets": gets,
        "upstream_creates": posts,
        "cpu_ms_per_upstream_call": rnd(cpu_s / calls * 1000, 3) if calls else None,
        "polls_per_video": rnd(gets / finished, 2) if finished else None,
        "lag_p50_s": rnd(percentile(lags, 50), 2),
        "lag_p95_s": rnd(percentile(lags, 95), 2),
        "lag_max_s": rnd(max(lags), 2) if lags else None,
        "lag_mean_s": rnd(statistics.fmean(lags), 2) if lags else None,
        "max_inflight_upstream": int(sim_load.get("max_jobs_in_flight", 0)),
        "max_inflight_seen": max((int(s.get("inflight", 0)) for s in samples), default=0),
        "redis_bytes_per_inflight": inflight_mem,
        "peak_worker_rss_mib": rnd(max((s.get("rss", 0) for s in samples), default=0) / 2**20, 1),
        "upstream_jobs": len(by_id),
        "recreated": recreated,
        "orphaned_upstream_jobs": len(orphaned),
        "orphaned_billed_usd": rnd(sum(int(j.get("cost_micro_usd", 0)) for j in orphaned) / 1e6, 2),
        "duplicate_creations_by_key": int(sim_stats.get("duplicate_creations", 0)),
        "span_sim_s": rnd((last - t0) / scale, 1),
        # Per video (index -> lag in simulated s, -> checks its upstream jobs answered): for
        # pooling draws (``bench.draws``); not kept in results.json.
        "lags_by_video": lag_of,
        "polls_by_video": polls_of,
    }


def _memory_per_inflight(samples: Sequence[Mapping[str, Any]]) -> int | None:
    """Redis bytes per in-flight request before anything finished (retained finished records
    would count otherwise): the slope of ``used_memory`` over requests in flight, so fixed
    costs (health keys, connections) drop out; a plain ratio with fewer than 3 samples."""
    pts = [
        (float(s["inflight"]), float(s["redis_delta"]))
        for s in samples
        if not s.get("finished") and s.get("redis_delta") is not None and s.get("inflight")
    ]
    if not pts:
        return None
    if len({x for x, _ in pts}) >= 3:
        slope = linear_fit([x for x, _ in pts], [y for _, y in pts])["slope"]
        if slope > 0:
            return round(slope)
    n, used = max(pts)
    return round(used / n) if used > 0 else None


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """min / median / max of repeated figures (None entries ignored)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least squares y = a + b x, with r^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1 - ss_res / ss_tot if ss_tot else 1.0
    return {"intercept": a, "slope": b, "r2": r2}
