"""The pooled sigma = 0.2 verdicts of ``bench.draws`` on synthetic runs: the analysis, not
the machine (no timing is measured here)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench.__main__ import PARTS, _parser, _smoke, draw_part_plan
from bench.draws import GENQUEUE, SEED_LOOP, draw_specs, paired_p95, summarize_draws


def _run(label: str, seed: int, lags: list[float], polls: list[int]) -> dict[str, Any]:
    return {
        "label": label,
        "workload": {"seed": seed},
        "videos": len(lags),
        "finished": len(lags),
        "upstream_gets": sum(polls),
        "polls_per_video": sum(polls) / len(polls),
        "lag_p95_s": None,
        "lags_by_video": {str(i): x for i, x in enumerate(lags)},
        "polls_by_video": {str(i): p for i, p in enumerate(polls)},
    }


def _draws(shift_s: float, genqueue_polls: int, n: int = 400) -> list[dict[str, Any]]:
    """Two draws; the seed loop's lags uniform on [0, 5); genqueue's the same videos'
    lags plus ``shift_s``."""
    runs = []
    for seed in (1, 2):
        rng = random.Random(seed)
        seed_lags = [rng.uniform(0, 5) for _ in range(n)]
        runs.append(_run(SEED_LOOP, seed, seed_lags, [26] * n))
        runs.append(_run(GENQUEUE, seed, [x + shift_s for x in seed_lags], [genqueue_polls] * n))
    return runs


def test_a_clearly_lower_lag_and_a_third_of_the_polls_is_met() -> None:
    """Lags lower by 0.3 s on every video and 8 of 26 polls: both verdicts are met."""
    out = summarize_draws(_draws(-0.3, 8), resamples=300)
    assert out["lags_verdict"] == "met" and out["polls_verdict"] == "met"
    assert out["lag_p95_difference_s"]["high"] < 0
    assert out["lag_p95_difference_s"]["value"] == pytest.approx(-0.3, abs=1e-6)
    assert out["videos_per_system"] == 800
    assert [d["seed"] for d in out["draws"]] == [1, 2]


def test_a_clearly_higher_lag_or_too_many_polls_is_not_met() -> None:
    """Lags higher by 0.3 s and 10 of 26 polls: neither verdict is met."""
    out = summarize_draws(_draws(0.3, 10), resamples=300)
    assert out["lags_verdict"] == "NOT met" and out["polls_verdict"] == "NOT met"
    assert out["lag_p95_difference_s"]["low"] > 0
    assert out["polls_ratio"]["value"] == pytest.approx(10 / 26, abs=1e-3)


def test_lags_of_independent_draws_of_one_distribution_are_within_noise() -> None:
    """Two systems with lags from the same distribution (not the same values): the interval
    of the difference straddles zero, so the verdict says so instead of picking a side."""
    runs = []
    for seed in (1, 2):
        a, b = random.Random(seed), random.Random(100 + seed)
        runs.append(_run(SEED_LOOP, seed, [a.uniform(0, 5) for _ in range(300)], [26] * 300))
        runs.append(_run(GENQUEUE, seed, [b.uniform(0, 5) for _ in range(300)], [9] * 300))
    out = summarize_draws(runs, resamples=300)
    diff = out["lag_p95_difference_s"]
    assert diff["low"] < 0 < diff["high"]
    assert out["lags_verdict"] == "within noise"


def test_only_videos_both_systems_saw_are_paired() -> None:
    """A video one system never saw end is left out of the paired p95s."""
    a = {0: 1.0, 1: 2.0, 2: 100.0}
    b = {0: 1.0, 1: 2.0}
    out = paired_p95([(a, b)], resamples=50)
    assert out["a"].value == out["b"].value


def test_a_draw_without_both_systems_is_an_error() -> None:
    """Runs that pair up nowhere cannot give a verdict."""
    with pytest.raises(ValueError, match="both"):
        summarize_draws([_run(GENQUEUE, 1, [1.0], [3])])


def test_every_draw_runs_both_systems_on_its_own_seed() -> None:
    """draw_specs: genqueue then the seed loop per seed, each with that seed's workload."""
    specs = draw_specs(
        [3, 4], videos=10, window_s=5.0, time_scale=0.1, sigma=0.2, workers=2, env={}, warmup=7
    )
    assert [(s.label, s.workload.seed) for s in specs] == [
        (GENQUEUE, 3),
        (SEED_LOOP, 3),
        (GENQUEUE, 4),
        (SEED_LOOP, 4),
    ]
    assert specs[0].warmup == 7 and specs[1].warmup == 0


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
def test_each_draw_like_part_runs_its_own_setting(smoke: bool) -> None:
    """Every draw-like part gets its sigma, queue profile and shift factor (the smoke run
    leaves out the parts that differ from another only by these)."""
    a = _parser().parse_args(["--smoke"] if smoke else [])
    if smoke:
        _smoke(a)
    sigmas = [float(x) for x in a.sigmas.split(",") if x]
    plan = {p: draw_part_plan(a, p, sigmas) for p in PARTS if p.startswith(("draws", "shift"))}
    assert plan["draws"][0] == sigmas[0] and plan["draws-wide"][0] == 0.4
    assert plan["draws-wide"][2] == plan["draws"][2]
    assert plan["draws-noqueued"][2] == {**plan["draws"][2], "report_queued": False}
    for part, (sigma, seeds, kw) in plan.items():
        if not part.startswith("shift"):
            continue
        assert sigma == sigmas[0] and seeds == a.shift_seeds
        assert kw["queue_shift_factor"] == (2.0 if part.startswith("shift-up") else 0.5)
        assert kw["report_queued"] is not part.endswith("-noqueued")
        assert kw["queue_shift_at_s"] == a.shift_at_s and kw["videos"] == a.shift_videos
