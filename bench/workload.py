"""The workload every system gets: N videos arriving evenly over a window, generation times
lognormal (median, sigma) on the simulator, one time scale for everything (architecture rule 14).

All figures are simulated seconds; wall seconds are ``sim_s * time_scale``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.procs import Child, python_child, wait_http
from genqueue.local_redis import free_port

MODEL = "minimax/video-01-director"
API_KEY = "bench-key"
#: The upstream's own queue wait before generation starts (the simulator's default).
QUEUE_MEDIAN_S = 5.0
QUEUE_SIGMA = 0.5
#: Generation times (start bracketed by genqueue's checks) in the warm history of an upstream
#: that reports ``queued``: what a deployment holds once its bootstrap probes learned the
#: ``adaptive_generation_min_samples`` (100) it needs, plus the jobs in flight meanwhile.
WARM_GENERATIONS = 150


@dataclass(frozen=True)
class Workload:
    videos: int = 400
    median_s: float = 120.0
    sigma: float = 0.2
    #: Submissions are spread evenly over this many simulated seconds (a steady stream, so a
    #: schedule that learns from completions sees some, as a running deployment does).
    arrival_window_s: float = 200.0
    time_scale: float = 0.1
    seed: int = 1
    model: str = MODEL
    #: The upstream's queue wait before generation (lognormal median and sigma, sim s).
    queue_median_s: float = QUEUE_MEDIAN_S
    queue_sigma: float = QUEUE_SIGMA
    #: Shift workload: videos requested this many simulated seconds after the first wait
    #: ``queue_shift_factor`` times as long in the upstream's queue (None: no shift).
    queue_shift_at_s: float | None = None
    queue_shift_factor: float = 1.0
    #: False: the simulator never reports ``queued`` (the spec's status enum has none).
    report_queued: bool = True

    def arrivals_s(self) -> list[float]:
        """Simulated seconds after the start at which video i is requested."""
        step = self.arrival_window_s / max(1, self.videos)
        return [i * step for i in range(self.videos)]

    def request(self, i: int) -> dict[str, Any]:
        return {"model": self.model, "prompt": f"bench video {i}: a paper boat on a canal"}

    @property
    def tail_s(self) -> float:
        """A generous longest job: queue wait + generation at ~4 sigma."""
        queue = self.queue_median_s * max(1.0, self.queue_shift_factor)
        return queue * math.exp(4 * self.queue_sigma) + self.median_s * math.exp(4 * self.sigma)

    @property
    def cutoff_s(self) -> float:
        """When a run is stopped even if videos are still unfinished (simulated seconds)."""
        return self.arrival_window_s + self.tail_s + 60.0

    def wall(self, sim_s: float) -> float:
        return sim_s * self.time_scale

    def with_(self, **kw: Any) -> Workload:
        return replace(self, **kw)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def start_simulator(w: Workload, log_dir: Path, name: str = "simulator") -> tuple[Child, str]:
    """A fresh simulator process for one run; returns it and its base URL."""
    port = free_port()
    child = python_child(
        name,
        [
            "bench.simserver",
            *("--port", str(port), "--time-scale", repr(w.time_scale), "--seed", str(w.seed)),
            *("--median-s", repr(w.median_s), "--sigma", repr(w.sigma)),
            *("--queue-median-s", repr(w.queue_median_s), "--queue-sigma", repr(w.queue_sigma)),
            *(
                ("--queue-shift-at-s", repr(w.queue_shift_at_s))
                if w.queue_shift_at_s is not None
                else ()
            ),
            *("--queue-shift-factor", repr(w.queue_shift_factor)),
            *(() if w.report_queued else ("--no-report-queued",)),
        ],
        _clean_env(),
        log_dir,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_sim/stats", child)
    return child, url


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("GENQUEUE_SIM_")}
