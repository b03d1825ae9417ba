"""``python -m bench.shiftsim``: genqueue's schedule on the shift workloads, computed (not
measured): the worker's own functions (``worker/window.py``, ``worker/drift.py``,
``worker/backoff.py``) on simulated videos, checks run up to 0.1 s late, the learned
durations refreshed every 30 s, pooled over several draws. It compares how the long sample's
quantiles follow a change: not at all, by the median's shift alone, by the shift and stretch
the worker uses, and *instantly* (each video's window placed from a history of the platform it
was requested on: what the best possible following reaches). The checks per video are split
by phase (before the shift, the ``recover_s`` after it, later) to say where they go.

*+ probes*: the upstream reports ``queued`` and the worker probes jobs during their queue wait
when the learned means say it saves checks (``worker/window.py: plan_probes``): a check that
sees ``queued`` / ``in_progress`` is kept as the worker keeps it, the window placed from the
bracketed start (``check_window`` with the generation sample), a start bracketed within two
floors added to that sample. The history holds ``WARM_GENERATIONS`` generation times (a
deployment past its bootstrap, as ``bench/runs.py`` warms it); *cold*: none, so the run pays
its own bootstrap (every job probed once a start was seen, until 100 are known). *stays*: no
shift (factor 1), at the shift workloads' 30 s and the steady draws' 5 s median queue wait.
*+ generation times*: the same history and brackets, no probe planned (``probe_gain`` infinite):
what the generation sample alone gives, through the checks made anyway.

A second table bounds any schedule that, like genqueue's on an upstream that never reports
``queued``, knows only when a video was created and how long videos take: the ideal grid
(``bench/frontier.py``) over the workload's durations (queue wait + generation), with its p95
lag at most genqueue's floor (4.7 s), against the seed loop's ``ceil(duration / 5)``.

Workload as ``bench/shift.py`` runs it: 600 videos over 1,500 s, generation lognormal
(median 120 s, sigma 0.2) after a queue wait (lognormal, median 30 s, sigma 0.5) that is
doubled or halved for videos requested from 500 s on; *after*: videos requested 600 s or
more after the shift.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
from collections.abc import Callable
from typing import Any

from bench.frontier import _grid_cost
from bench.workload import WARM_GENERATIONS
from genqueue.worker.backoff import learned_delay_s
from genqueue.worker.drift import NONE, Shift, location_shift, settled
from genqueue.worker.window import Seen, check_window, plan_probes, probe_due, span

FOLLOW: dict[str, Callable[[list[float], list[tuple[float, float]]], Shift]] = {
    "not followed": lambda long, recent: NONE,
    "shift only": lambda long, recent: (lambda m: Shift(m.shift_s, 0.0, m.median_s))(
        location_shift(long, recent, 3.0)
    ),
    "shift and stretch": lambda long, recent: location_shift(long, recent, 3.0),
}
#: Each video's window from a history of the platform it was requested on.
INSTANT = "instantly (bound)"
PHASES = ("steady", "transition", "after")
FLOOR_S = 4.7
#: Completions are used once every neighbour has been seen (``worker/durations.py``): cap + floor.
SETTLE_S = 30.0 + FLOOR_S


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[math.ceil(0.95 * len(xs)) - 1]


def _seed_loop_polls(duration_s: float) -> int:
    return math.ceil(duration_s / 5.0)


def run(
    factor: float,
    follow: str,
    *,
    videos: int = 600,
    window_s: float = 1500.0,
    shift_at_s: float = 500.0,
    recover_s: float = 600.0,
    queue_median_s: float = 30.0,
    sigma: float = 0.2,
    recent: int = 100,
    floor_s: float = FLOOR_S,
    seed: int = 1,
    probe_gain: float | None = None,
    generations: int = WARM_GENERATIONS,
    generation_min: int = 100,
) -> dict[str, dict[str, list[float]]]:
    """One computed run: per phase, each video's genqueue checks, seed-loop checks and lag.
    ``probe_gain``: checks during the queue wait where they save that many (``probes``),
    the start then bracketed by ``queued``/``in_progress`` (the worker's rules); the history
    holds ``generations`` generation times, and every start this run brackets is added."""
    rng = random.Random(seed)

    def queue() -> float:
        return rng.lognormvariate(math.log(queue_median_s), 0.5)

    def generation() -> float:
        return rng.lognormvariate(math.log(120.0), sigma)

    long = sorted(queue() + generation() for _ in range(10_000))
    after_long = sorted(queue() * factor + generation() for _ in range(10_000))
    # Its own draws: the videos stay those of the rows without probes.
    grng = random.Random(f"generation:{seed}")
    gen_long = (
        sorted(grng.lognormvariate(math.log(120.0), sigma) for _ in range(generations))
        if probe_gain is not None
        else []
    )
    gen_pairs: list[tuple[float, float]] = []
    done_pairs: list[tuple[float, float]] = []
    mapping, refreshed = NONE, -math.inf
    gen_mapping = NONE
    means = {id(long): sum(long) / len(long), id(after_long): sum(after_long) / len(after_long)}
    gen_mean = sum(gen_long) / len(gen_long) if gen_long else 0.0
    jobs = []
    events: list[tuple[float, int, int, float]] = []
    for i in range(videos):
        c = i * window_s / videos
        q = queue() * (factor if c >= shift_at_s else 1.0)
        jobs.append({"c": c, "start": c + q, "done": c + q + generation(), "polls": 0})
        heapq.heappush(events, (c, 0, i, c))
    lags: dict[int, float] = {}
    seen: dict[int, tuple[float | None, float | None]] = {}
    while events:
        t, checked, i, due = heapq.heappop(events)
        j = jobs[i]
        if t - refreshed >= 30.0 and (follow != INSTANT or probe_gain is not None):
            recent_pairs = settled(done_pairs, full=False, settle_s=SETTLE_S, used=recent)
            if follow != INSTANT:
                mapping = FOLLOW[follow](long, recent_pairs)
            if probe_gain is not None:
                gen_recent = settled(gen_pairs, full=False, settle_s=SETTLE_S, used=recent)
                following = FOLLOW.get(follow)
                gen_mapping = following(gen_long, gen_recent) if gen_long and following else NONE
                gen_mean = sum(gen_long) / len(gen_long) if gen_long else 0.0
            refreshed = t
        queued, started = seen.get(i, (None, None))
        if checked:
            j["polls"] += 1
            if t >= j["done"]:
                lags[i] = t - j["done"]
                bisect.insort(done_pairs, (j["c"], j["done"]), key=lambda e: e[1])
                lo, hi = j["c"] if queued is None else queued, t if started is None else started
                if probe_gain is not None and hi - lo <= 2 * floor_s:
                    # The worker's rule (``observed.generation_s``): a bracket two floors wide.
                    bisect.insort(gen_long, j["done"] - (lo + hi) / 2)
                    bisect.insort(gen_pairs, ((lo + hi) / 2, j["done"]), key=lambda e: e[1])
                continue
            if t < j["start"]:
                queued = t
            elif started is None:
                started = t
            seen[i] = (queued, started)
        history = after_long if follow == INSTANT and j["c"] >= shift_at_s else long
        total = span(history, mapping, q=0.04, confidence=0.9, dense_q=0.999)
        gen = (
            span(gen_long, gen_mapping, q=0.04, confidence=0.9, dense_q=0.999)
            if probe_gain is not None and len(gen_long) >= generation_min
            else None
        )
        view = Seen(j["c"], queued, started)
        first, until = check_window(view, total, gen, floor_s)
        plan = None
        if probe_gain is not None and gen_long:
            queue_mean = mapping.apply(means[id(history)]) - gen_mapping.apply(gen_mean)
            plan = plan_probes(
                total,
                gen,
                queue_mean,
                floor_s,
                min_gain=probe_gain,
                bootstrap=len(gen_long) < generation_min,
            )
        probe = probe_due(view, plan)
        delay = learned_delay_s(
            t - j["c"],
            checked=bool(checked),
            late_s=t - due if checked else 0.0,
            first_s=first - j["c"],
            dense_until_s=until - j["c"],
            dense_every_s=floor_s,
            cap_s=30.0,
            factor=1.5,
        )
        if probe is not None and probe < first and t + delay > probe:
            delay = probe - t
        if not checked:
            delay += rng.uniform(-floor_s / 2, floor_s / 2)
        nxt = t + max(0.0, delay)
        heapq.heappush(events, (nxt + rng.uniform(0, 0.1), 1, i, nxt))
    out: dict[str, dict[str, list[float]]] = {k: {"g": [], "s": [], "lag": []} for k in PHASES}
    for i, j in enumerate(jobs):
        at = j["c"]
        ph = (
            "steady"
            if at < shift_at_s
            else "after"
            if at >= shift_at_s + recover_s
            else "transition"
        )
        out[ph]["g"].append(j["polls"])
        out[ph]["s"].append(_seed_loop_polls(j["done"] - j["c"]))
        out[ph]["lag"].append(lags[i])
    return out


def pooled(factor: float, follow: str, seeds: list[int], **kw: Any) -> dict[str, float]:
    """Polls over the seed loop's (whole run and per phase) and p95 lags, pooled over draws."""
    phases: dict[str, dict[str, list[float]]] = {k: {"g": [], "s": [], "lag": []} for k in PHASES}
    for seed in seeds:
        for k, v in run(factor, follow, seed=seed, **kw).items():
            for key in v:
                phases[k][key] += v[key]
    g = sum(sum(p["g"]) for p in phases.values())
    s = sum(sum(p["s"]) for p in phases.values())
    n = sum(len(p["g"]) for p in phases.values())
    row = {"polls_per_video": g / n, "ratio": g / s}
    for k, p in phases.items():
        row[f"ratio_{k}"] = sum(p["g"]) / sum(p["s"])
        row[f"lag_p95_{k}_s"] = _p95(p["lag"])
    return row


def ideal_ratio(queue_median_s: float, *, lag_s: float = FLOOR_S, samples: int = 20_000) -> float:
    """The ideal creation-anchored grid's checks over the seed loop's (p95 lag <= ``lag_s``)."""
    rng = random.Random(7)
    durations = sorted(
        rng.lognormvariate(math.log(queue_median_s), 0.5) + rng.lognormvariate(math.log(120), 0.2)
        for _ in range(samples)
    )
    best = math.inf
    for q_first in range(0, 81):  # first check at the 0th..20th percentile, 0.25 steps
        first = durations[q_first * samples // 400]
        for last in (durations[int(0.99 * samples)], durations[-1]):
            polls, p95 = _grid_cost(durations, first, lag_s, last)
            if p95 <= lag_s:
                best = min(best, polls)
    return best / (sum(_seed_loop_polls(d) for d in durations) / samples)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.shiftsim", description=__doc__)
    p.add_argument("--seeds", default="1,2,3,4,5", help="draws, pooled")
    seeds = [int(x) for x in p.parse_args().seeds.split(",") if x]
    print(
        "| queue wait | follows | polls/video | ÷ seed loop: whole run | before | first 600 s "
        "after | later | p95 lag before (s) | first 600 s after (s) | later (s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    probed: dict[str, Any] = {"probe_gain": 0.0}
    # The generation sample without planned probes: only the checks made anyway bracket.
    unplanned: dict[str, Any] = {"probe_gain": math.inf}
    rows: list[tuple[float, str, str, dict[str, Any]]] = []
    for factor, what in ((2.0, "doubles"), (0.5, "halves")):
        rows += [(factor, what, follow, {}) for follow in (*FOLLOW, INSTANT)]
        rows += [
            (factor, what, "shift and stretch + generation times", unplanned),
            (factor, what, f"{INSTANT} + generation times", unplanned),
            (factor, what, "shift and stretch + probes", probed),
            (factor, what, f"{INSTANT} + probes", probed),
            (factor, what, "shift and stretch + probes, cold", {**probed, "generations": 0}),
        ]
    for median in (30.0, 5.0):
        for label, kw in (("shift and stretch", {}), ("shift and stretch + probes", probed)):
            rows.append((1.0, f"stays ({median:g} s)", label, {**kw, "queue_median_s": median}))
    for factor, what, label, kw in rows:
        follow = INSTANT if label.startswith(INSTANT) else "shift and stretch"
        follow = label if label in FOLLOW else follow
        r = pooled(factor, follow, seeds, **kw)
        print(
            f"| {what} | {label} | {r['polls_per_video']:.2f} | {r['ratio']:.3f} | "
            f"{r['ratio_steady']:.3f} | {r['ratio_transition']:.3f} | "
            f"{r['ratio_after']:.3f} | {r['lag_p95_steady_s']:.2f} | "
            f"{r['lag_p95_transition_s']:.2f} | {r['lag_p95_after_s']:.2f} |"
        )
    print()
    print("| queue wait median (s) | ideal creation-anchored grid ÷ seed loop (p95 lag ≤ 4.7 s) |")
    print("| ---: | ---: |")
    for median in (15.0, 30.0, 60.0):
        print(f"| {median:g} | {ideal_ratio(median):.3f} |")


if __name__ == "__main__":
    main()
