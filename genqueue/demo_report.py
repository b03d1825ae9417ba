"""The demo's end-of-run summary: pure functions from records and ground truth to figures.

Latencies are reported in *simulated* seconds (wall seconds divided by the time scale,
architecture rule 14), so a run at any scale reads like production.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from genqueue.producer.keys import TERMINAL
from genqueue.producer.record import RequestView, micro_to_usd


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _scaled(values: list[float], time_scale: float) -> list[float]:
    return [v / time_scale for v in values]


def _round(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


@dataclass(frozen=True)
class DemoSummary:
    """What one demo run did, and whether genqueue's books match the upstream's."""

    videos: int
    completed: int
    failed: int
    cancelled: int
    expired: int
    lost: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    detection_lag_p50_s: float | None
    detection_lag_p95_s: float | None
    polls_mean: float | None
    upstream_polls_mean: float | None
    upstream_jobs_created: int
    duplicate_creations: int
    cost_recorded_micro_usd: int
    cost_in_records_micro_usd: int
    cost_billed_micro_usd: int
    wall_s: float
    time_scale: float
    workers: int
    seed: int
    key_prefix: str
    redis: str
    lost_ids: list[str] = field(default_factory=list)

    @property
    def cost_matches(self) -> bool:
        return (
            self.cost_recorded_micro_usd
            == self.cost_in_records_micro_usd
            == self.cost_billed_micro_usd
        )

    @property
    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{self.lost} video(s) lost (not finished or missing)")
        if not self.cost_matches:
            out.append(
                f"cost recorded {format_usd(self.cost_recorded_micro_usd)} (records: "
                f"{format_usd(self.cost_in_records_micro_usd)}) != billed "
                f"{format_usd(self.cost_billed_micro_usd)}"
            )
        if self.duplicate_creations:
            out.append(f"{self.duplicate_creations} duplicate upstream creation(s)")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency_unit"] = "simulated seconds"
        d["cost_recorded_usd"] = str(micro_to_usd(self.cost_recorded_micro_usd))
        d["cost_billed_usd"] = str(micro_to_usd(self.cost_billed_micro_usd))
        d["cost_matches"] = self.cost_matches
        d["problems"] = self.problems
        d["ok"] = self.ok
        return d


def format_usd(micro: int) -> str:
    """Dollars with 2 to 6 decimals: $65.32, $0.123456."""
    whole, _, frac = f"{micro_to_usd(micro):.6f}".partition(".")
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"


def summarize(
    ids: Sequence[str],
    views: Mapping[str, RequestView],
    *,
    cost_recorded_micro_usd: int,
    sim_stats: Mapping[str, Any],
    time_scale: float,
    wall_s: float,
    workers: int,
    seed: int,
    key_prefix: str,
    redis: str,
) -> DemoSummary:
    """Build the summary: ``views`` holds the records found at the end (a missing or
    unfinished one is lost); ``sim_stats`` is the simulator's ``/_sim/stats``."""
    by_status = {s: 0 for s in TERMINAL}
    lost_ids = []
    latencies: list[float] = []
    lags: list[float] = []
    polls: list[int] = []
    cost_in_records = 0
    for request_id in ids:
        view = views.get(request_id)
        if view is None or not view.is_terminal:
            lost_ids.append(request_id)
            continue
        by_status[view.status] = by_status.get(view.status, 0) + 1
        polls.append(view.polls)
        cost_in_records += view.cost_micro_usd or 0
        if view.total_duration_s is not None:
            latencies.append(view.total_duration_s)
        if view.detection_lag_s is not None:
            lags.append(view.detection_lag_s)
    lat = _scaled(latencies, time_scale)
    lag = _scaled(lags, time_scale)
    created = int(sim_stats.get("jobs_created", 0))
    requests = sim_stats.get("requests", {})
    upstream_gets = sum(
        int(n)
        for endpoint in ("GET /v2/videos/{id}", "GET /v2/videos/status")
        for code, n in requests.get(endpoint, {}).items()
        if code == "200"
    )
    return DemoSummary(
        videos=len(ids),
        completed=by_status["completed"],
        failed=by_status["failed"],
        cancelled=by_status["cancelled"],
        expired=by_status["expired"],
        lost=len(lost_ids),
        latency_p50_s=_round(percentile(lat, 0.5)),
        latency_p95_s=_round(percentile(lat, 0.95)),
        detection_lag_p50_s=_round(percentile(lag, 0.5)),
        detection_lag_p95_s=_round(percentile(lag, 0.95)),
        polls_mean=_round(sum(polls) / len(polls) if polls else None, 2),
        upstream_polls_mean=_round(upstream_gets / created if created else None, 2),
        upstream_jobs_created=created,
        duplicate_creations=int(sim_stats.get("duplicate_creations", 0)),
        cost_recorded_micro_usd=cost_recorded_micro_usd,
        cost_in_records_micro_usd=cost_in_records,
        cost_billed_micro_usd=int(sim_stats.get("billed_micro_usd", 0)),
        wall_s=round(wall_s, 2),
        time_scale=time_scale,
        workers=workers,
        seed=seed,
        key_prefix=key_prefix,
        redis=redis,
        lost_ids=lost_ids[:20],
    )


def _sim_s(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f} s"


def summary_table(s: DemoSummary) -> Table:
    """The summary as a rich table."""
    t = Table(
        title=f"genqueue demo: {s.videos} videos, {s.workers} workers",
        caption=f"Latencies in simulated seconds (wall seconds / time scale {s.time_scale:g})",
        show_header=False,
        title_justify="left",
        caption_justify="left",
    )
    t.add_column(style="bold")
    t.add_column(justify="right")
    lost_style = "red" if s.lost else "green"
    t.add_row("videos submitted", str(s.videos))
    t.add_row("completed", str(s.completed))
    t.add_row("failed (by the upstream)", str(s.failed))
    if s.cancelled or s.expired:
        t.add_row("cancelled / expired", f"{s.cancelled} / {s.expired}")
    t.add_row("lost (not finished or missing)", f"[{lost_style}]{s.lost}[/{lost_style}]")
    t.add_section()
    t.add_row(
        "end-to-end latency p50 / p95", f"{_sim_s(s.latency_p50_s)} / {_sim_s(s.latency_p95_s)}"
    )
    t.add_row(
        "detection lag p50 / p95",
        f"{_sim_s(s.detection_lag_p50_s)} / {_sim_s(s.detection_lag_p95_s)}",
    )
    polls = "-" if s.polls_mean is None else f"{s.polls_mean:.2f}"
    seen = "-" if s.upstream_polls_mean is None else f"{s.upstream_polls_mean:.2f}"
    t.add_row("polls per video (mean; upstream saw)", f"{polls} ({seen})")
    t.add_row(
        "upstream jobs created (duplicates)", f"{s.upstream_jobs_created} ({s.duplicate_creations})"
    )
    t.add_section()
    cost_style = "green" if s.cost_matches else "red"
    t.add_row("cost recorded by genqueue", format_usd(s.cost_recorded_micro_usd))
    t.add_row(
        "cost billed by the simulator",
        f"[{cost_style}]{format_usd(s.cost_billed_micro_usd)}[/{cost_style}]",
    )
    t.add_section()
    t.add_row(
        "wall time",
        f"{s.wall_s:.1f} s (= {s.wall_s / s.time_scale:,.0f} simulated s)",
    )
    return t
