"""``python -m bench.shiftsim``: genqueue's schedule on the shift workloads, computed (not
measured): the worker's own functions (``worker/window.py``, ``worker/drift.py``,
``worker/backoff.py``) on simulated videos, checks run up to 0.1 s late, the learned
durations refreshed every 30 s. It compares how the long sample's quantiles follow a change:
not at all, by the median's shift alone, or by the shift and stretch the worker uses.

Workload as ``bench/shift.py`` runs it: 600 videos over 1,500 s, generation lognormal
(median 120 s, sigma 0.2) after a queue wait (lognormal, median 30 s, sigma 0.5) that is
doubled or halved for videos requested from 500 s on; *after*: videos requested 600 s or
more after the shift.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable

from genqueue.worker.backoff import learned_delay_s
from genqueue.worker.drift import NONE, Shift, location_shift
from genqueue.worker.window import Seen, check_window, span

FOLLOW: dict[str, Callable[[list[float], list[tuple[float, float]]], Shift]] = {
    "not followed": lambda long, recent: NONE,
    "shift only": lambda long, recent: (lambda m: Shift(m.shift_s, 0.0, m.median_s))(
        location_shift(long, recent, 3.0)
    ),
    "shift and stretch": lambda long, recent: location_shift(long, recent, 3.0),
}


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[math.ceil(0.95 * len(xs)) - 1]


def run(
    factor: float,
    follow: str,
    *,
    videos: int = 600,
    window_s: float = 1500.0,
    shift_at_s: float = 500.0,
    queue_median_s: float = 30.0,
    sigma: float = 0.2,
    recent: int = 100,
    floor_s: float = 4.7,
    seed: int = 1,
) -> dict[str, float]:
    """Polls per video and p95 lags (steady, after) of one computed run."""
    rng = random.Random(seed)

    def queue() -> float:
        return rng.lognormvariate(math.log(queue_median_s), 0.5)

    def generation() -> float:
        return rng.lognormvariate(math.log(120.0), sigma)

    long = sorted(queue() + generation() for _ in range(10_000))
    done_pairs: list[tuple[float, float]] = []
    mapping, refreshed = NONE, -math.inf
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
        if t - refreshed >= 30.0:
            mapping = FOLLOW[follow](long, done_pairs[-recent:])
            refreshed = t
        queued, started = seen.get(i, (None, None))
        if checked:
            j["polls"] += 1
            if t >= j["done"]:
                lags[i] = t - j["done"]
                done_pairs.append((j["c"], j["done"]))
                continue
            if t < j["start"]:
                queued = t
            elif started is None:
                started = t
            seen[i] = (queued, started)
        total = span(long, mapping, q=0.04, confidence=0.9, dense_q=0.999)
        first, until = check_window(Seen(j["c"], queued, started), total, None, floor_s)
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
        if not checked:
            delay += rng.uniform(-floor_s / 2, floor_s / 2)
        nxt = t + max(0.0, delay)
        heapq.heappush(events, (nxt + rng.uniform(0, 0.1), 1, i, nxt))
    steady = [lag for i, lag in lags.items() if jobs[i]["c"] < shift_at_s]
    after = [lag for i, lag in lags.items() if jobs[i]["c"] >= shift_at_s + 600.0]
    seed_loop_polls = sum(math.ceil((j["done"] - j["c"]) / 5.0) for j in jobs) / videos
    return {
        "polls_per_video": sum(j["polls"] for j in jobs) / videos,
        "seed_loop_polls_per_video": seed_loop_polls,
        "lag_p95_steady_s": _p95(steady),
        "lag_p95_after_s": _p95(after),
    }


def main() -> None:
    print(
        "| queue wait | follows by | polls/video | ÷ seed loop (5 s) | p95 lag steady (s) "
        "| p95 lag after (s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for factor, what in ((2.0, "doubles"), (0.5, "halves")):
        for follow in FOLLOW:
            r = run(factor, follow)
            print(
                f"| {what} | {follow} | {r['polls_per_video']:.2f} | "
                f"{r['polls_per_video'] / r['seed_loop_polls_per_video']:.3f} | "
                f"{r['lag_p95_steady_s']:.2f} | {r['lag_p95_after_s']:.2f} |"
            )


if __name__ == "__main__":
    main()
