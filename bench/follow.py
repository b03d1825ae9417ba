"""``python -m bench.follow``: what following a change costs and gives (computed, not
measured): ``worker/drift.py`` on a simulated stream of completions, one video a second.

For each size of the recent window and threshold ``z``: in a steady state, how often the
schedule's quantiles are moved at all and by how much; after the queue wait shifts every
duration by ``shift_s``, how long (simulated s after the shift) until the applied shift is
within a quarter of the true one.
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import asdict, dataclass

from genqueue.worker.drift import location_shift_s


@dataclass(frozen=True)
class Following:
    recent: int
    z: float
    steady_moved_share: float
    steady_mean_abs_shift_s: float
    followed_after_s: dict[str, float | None]


def _durations(rng: random.Random, median_s: float, sigma: float, queue_s: float) -> float:
    return rng.lognormvariate(math.log(queue_s), 0.5) + rng.lognormvariate(
        math.log(median_s), sigma
    )


def follow(
    recent: int,
    z: float,
    *,
    shifts_s: tuple[float, ...] = (15.0, -15.0, 30.0),
    median_s: float = 120.0,
    sigma: float = 0.2,
    queue_s: float = 5.0,
    rate_per_s: float = 1.0,
    seconds: float = 3000.0,
    every: int = 10,
    seed: int = 1,
) -> Following:
    """One configuration: a steady stream of ``seconds``, then one stream per shift (shifted
    from its middle on), evaluating the schedule's shift every ``every`` completions."""
    rng = random.Random(seed)
    long = sorted(_durations(rng, median_s, sigma, queue_s) for _ in range(10_000))

    def run(shift_s: float, at_s: float) -> list[tuple[float, float]]:
        """(completion time, applied shift) at each evaluation."""
        n = int(seconds * rate_per_s)
        jobs = []
        for i in range(n):
            c = i / rate_per_s
            d = _durations(rng, median_s, sigma, queue_s) + (shift_s if c >= at_s else 0.0)
            jobs.append((c, c + d))
        jobs.sort(key=lambda j: j[1])
        out = []
        for k in range(recent, len(jobs), every):
            window = jobs[k - recent : k]
            out.append((jobs[k - 1][1], location_shift_s(long, window, z)))
        return out

    steady = run(0.0, math.inf)
    moved = [abs(s) for _, s in steady]
    after: dict[str, float | None] = {}
    at = seconds / 2
    for shift in shifts_s:
        hit = next(
            (t - at for t, s in run(shift, at) if t >= at and abs(s - shift) <= abs(shift) / 4),
            None,
        )
        after[f"{shift:+g}"] = None if hit is None else round(hit, 0)
    return Following(
        recent,
        z,
        round(sum(m > 0 for m in moved) / len(moved), 4),
        round(sum(moved) / len(moved), 3),
        after,
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.follow", description=__doc__)
    p.add_argument("--recent", default="50,100,200")
    p.add_argument("--z", default="2,3,4")
    a = p.parse_args()
    print("| recent | z | steady: share moved | steady: mean |shift| (s) | followed after (s) |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for r in (int(x) for x in a.recent.split(",")):
        for z in (float(x) for x in a.z.split(",")):
            f = asdict(follow(r, z))
            shifts = ", ".join(
                f"{k} s: {v if v is not None else 'never'}"
                for k, v in f["followed_after_s"].items()
            )
            print(
                f"| {r} | {z:g} | {f['steady_moved_share']:.3f} | "
                f"{f['steady_mean_abs_shift_s']:.2f} | {shifts} |"
            )


if __name__ == "__main__":
    main()
