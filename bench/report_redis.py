# ruff: noqa: RUF001
"""RESULTS.md sections and target rows of issue 22: what an idle worker costs, and the
ceiling of one Redis (``bench/idle.py``, ``bench/ceiling.py``)."""

from __future__ import annotations

import statistics
from typing import Any

#: Issue 22's targets.
IDLE_COMMANDS_PER_S = 1.0
IDLE_CPU_PCT = 0.2
#: Worker CPU per poll at 200 polls/s before issue 22, as a multiple of the floor.
PER_POLL_BEFORE_X_FLOOR = 0.83


def _top(by: dict[str, Any], n: int = 8) -> str:
    items = sorted(by.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:g}" for k, v in items)


def idle_section(results: dict[str, Any]) -> list[str]:
    idle = results.get("idle")
    if not idle:
        return []
    return [
        "## An idle worker",
        "",
        f"One `genqueue worker` process (its main and side arq workers) with nothing to do, "
        f"its defaults, for {idle['window_s']:g} s after start-up (`bench/idle.py`): "
        f"**{idle['commands_per_s']:g} Redis commands/s** ({idle['commands']} commands, every "
        f"command a script runs counted as Redis counts it) and **{idle['cpu_pct_of_core']:g} % "
        f"of a core** ({idle['cpu_s']:g} CPU-s). By command: {_top(idle['by_command']) or '–'}.",
        "",
        "Where they come from (`worker/wakeup.py`): each arq worker keeps one `BLPOP` on its "
        "wake list (renewed every `GENQUEUE_IDLE_WAIT_MAX_S`, 60 s) and looks when it ends; the "
        "reconciler's turn every 30 s is one `SET NX` (and, for the one worker that wins it, "
        "`TIME`, `ZRANGE`, `ZRANGEBYSCORE`; redis-py's `PING` on a connection idle for 30 s); "
        "each health key is written every 60 s (`ZCARD` + `PSETEX`); the outbox is watched by "
        "the side worker's look, and the durations cache reads only when a check needs it. "
        "Before (main, `91c3fc3`, as issue 22 measured it): 96 commands/s and 2.2 % of a core.",
        "",
    ]


def ceiling_section(results: dict[str, Any]) -> list[str]:
    c = results.get("ceiling")
    if not c:
        return []
    p, cr, f = c["poll"], c["create"], c["finished_video"]
    pr = c.get("projection_one_core") or {}
    out = [
        "## The ceiling of one Redis",
        "",
        "Redis' own cost per operation, read from Redis (`INFO cpu` main thread, `INFO "
        "commandstats`) before and after each phase (`bench/ceiling.py`): *poll* at a steady "
        f"{p.get('polls_per_s')} polls/s ({p['n']:,} checks by 2 workers); *create* "
        f"({cr['n']:,} submits, no worker running); *finished video* (those videos taken from "
        "submit to their end by 2 workers, their checks taken out at the poll's cost: the "
        "submit step, the end, their events and counts, the workers' looks).",
        "",
        "| operation | Redis CPU (µs) | Redis commands | largest (finished video: the whole "
        "phase per video, its checks included) |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, row in (("poll", p), ("create", cr), ("finished video", f)):
        out.append(
            f"| {name} | {row['redis_cpu_us']} | {row['commands']} | "
            f"{_top(row['commands_by_name'], 6)} |"
        )
    out.append("")
    if pr:
        out += [
            "**Projection for one Redis core** (1 CPU-second per second divided by the costs "
            "above; not a measured saturation): "
            f"**{pr['polls_per_s']:,} polls/s**, or **{pr['creates_per_s']:,} creates/s**, or "
            f"**{pr['in_flight_videos']:,.0f} videos in flight** at the default schedule for a "
            f"{pr['median_s'] / 60:g}-minute median ({pr['polls_per_video']} checks per video, "
            f"computed by `bench/frontier.py`; {pr['redis_cpu_us_per_video']:,} µs of Redis per "
            f"video = {pr['videos_per_s']} videos/s, each in flight {pr['mean_in_flight_s']} s "
            "on average). On this 2-core machine the limit is the workers, not Redis: the "
            "workers spend several times Redis' CPU on every check (see the floor), so the "
            "cores are full of workers long before Redis' core is. A Redis on its own core is "
            "the ceiling only for a deployment with enough worker hosts; `docs/scaling.md` says "
            "what lies past it.",
            "",
        ]
    return out


def issue22_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    idle = results.get("idle")
    if idle:
        ok = (
            idle["commands_per_s"] <= IDLE_COMMANDS_PER_S
            and idle["cpu_pct_of_core"] <= IDLE_CPU_PCT
        )
        rows.append(
            (
                f"an idle worker: ≤ {IDLE_COMMANDS_PER_S:g} Redis command/s and ≤ "
                f"{IDLE_CPU_PCT:g} % of a core, all sources included",
                f"{idle['commands_per_s']:g} commands/s, {idle['cpu_pct_of_core']:g} % over "
                f"{idle['window_s']:g} s",
                "met" if ok else "NOT met",
            )
        )
    cmp_rows = (results.get("compare") or {}).get("summary") or []
    gq = next((r for r in cmp_rows if r["label"] == "genqueue" and r["sigma"] == 0.2), None)
    sl = next((r for r in cmp_rows if r["label"] == "seed loop" and r["sigma"] == 0.2), None)
    if gq and sl:
        g = _median(gq.get("cpu_s_per_1000_videos"))
        s = _median(sl.get("cpu_s_per_1000_videos"))
        if g and s:
            rows.append(
                (
                    "worker CPU-s per 1,000 videos ≤ ⅓ of the seed loop's (comparison, σ 0.2)",
                    f"{g:.1f} vs {s:.1f} = {g / s:.2f}×",
                    "met" if g <= s / 3 else "NOT met",
                )
            )
    floor, sweep = results.get("floor"), results.get("sweep")
    if floor and sweep and sweep.get("steps"):
        per_poll = [
            s["worker_cpu_ms_per_poll"] for s in sweep["steps"] if s["worker_cpu_ms_per_poll"]
        ]
        fl = floor["floor_ms"]
        x = statistics.median(per_poll) / fl["median"]
        lo, hi = min(per_poll) / fl["max"], max(per_poll) / fl["min"]
        verdict = "met" if x <= PER_POLL_BEFORE_X_FLOOR else "NOT met"
        if x > PER_POLL_BEFORE_X_FLOOR >= lo:
            verdict += " (within the spread)"
        rows.append(
            (
                f"worker CPU per poll at {sweep['poll_rate_per_s']:g} polls/s no worse than "
                f"before ({PER_POLL_BEFORE_X_FLOOR}× the floor)",
                f"{x:.2f}× the floor (spread {lo:.2f}–{hi:.2f}×)",
                verdict,
            )
        )
    c = results.get("ceiling")
    if c and c.get("projection_one_core"):
        pr = c["projection_one_core"]
        rows.append(
            (
                "the one-Redis ceiling, with the per-operation costs it comes from",
                f"{pr['polls_per_s']:,} polls/s, {pr['creates_per_s']:,} creates/s, "
                f"{pr['in_flight_videos']:,.0f} in flight (3-min median) per Redis core, from "
                f"{c['poll']['redis_cpu_us']} / {c['create']['redis_cpu_us']} / "
                f"{c['finished_video']['redis_cpu_us']} µs per poll / create / finished video",
                "stated",
            )
        )
    return rows


def _median(v: Any) -> float | None:
    if isinstance(v, dict):
        m = v.get("median")
        return float(m) if m is not None else None
    return float(v) if v is not None else None
