"""The pooled shift verdicts of ``bench.shift`` on synthetic runs: the analysis, not the
machine (no timing is measured here)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench.draws import GENQUEUE, SEED_LOOP
from bench.shift import pool_invocations, summarize_shift

VIDEOS, WINDOW_S, SHIFT_AT_S, RECOVER_S = 300, 300.0, 100.0, 100.0


def _run(label: str, seed: int, lags: list[float], polls: list[int]) -> dict[str, Any]:
    return {
        "label": label,
        "workload": {
            "seed": seed,
            "videos": len(lags),
            "arrival_window_s": WINDOW_S,
            "queue_shift_at_s": SHIFT_AT_S,
            "queue_shift_factor": 2.0,
        },
        "videos": len(lags),
        "finished": len(lags),
        "upstream_gets": sum(polls),
        "polls_per_video": sum(polls) / len(polls),
        "lag_p95_s": None,
        "lags_by_video": {str(i): x for i, x in enumerate(lags)},
        "polls_by_video": {str(i): p for i, p in enumerate(polls)},
    }


def _runs(after_extra_s: float, polls: tuple[int, int, int]) -> list[dict[str, Any]]:
    """Three draws: video ``i`` requested at ``i`` s; lags uniform on [0, 5) plus
    ``after_extra_s`` for genqueue's videos requested ``RECOVER_S`` after the shift; genqueue's
    checks per video by phase (steady, transition, after), the seed loop's 30."""
    runs = []
    for seed in (1, 2, 3):
        rng = random.Random(seed)
        lags = [rng.uniform(0, 5) for _ in range(VIDEOS)]
        mine = [
            x + (after_extra_s if i >= SHIFT_AT_S + RECOVER_S else 0.0) for i, x in enumerate(lags)
        ]
        phase = [
            0 if i < SHIFT_AT_S else 2 if i >= SHIFT_AT_S + RECOVER_S else 1 for i in range(VIDEOS)
        ]
        runs.append(_run(SEED_LOOP, seed, lags, [30] * VIDEOS))
        runs.append(_run(GENQUEUE, seed, mine, [polls[p] for p in phase]))
    return runs


def test_checks_are_split_by_phase_and_pooled_over_draws() -> None:
    """Each phase's polls ratio counts only the videos requested in it, over every draw."""
    out = summarize_shift(_runs(0.0, (9, 15, 11)), recover_s=RECOVER_S, resamples=200)
    by = out["polls_by_phase"]
    assert {k: v["videos"] for k, v in by.items()} == {
        "steady": 300,
        "transition": 300,
        "after": 300,
    }
    assert by["steady"]["polls_ratio"]["value"] == pytest.approx(9 / 30, abs=1e-3)
    assert by["transition"]["polls_ratio"]["value"] == pytest.approx(15 / 30, abs=1e-3)
    assert by["after"]["polls_per_video"] == {GENQUEUE: 11.0, SEED_LOOP: 30.0}
    assert out["polls_ratio"]["value"] == pytest.approx(35 / 90, abs=1e-3)
    assert out["polls_verdict"] == "NOT met"


def test_a_lag_that_stays_high_after_the_shift_is_not_recovered() -> None:
    """Lags 1 s higher (about 20 % of the p95) from ``recover_s`` after the shift: NOT met."""
    out = summarize_shift(_runs(1.0, (9, 9, 9)), recover_s=RECOVER_S, resamples=300)
    gq = out["phases"][GENQUEUE]
    assert gq["recovered_verdict"] == "NOT met"
    assert gq["after_over_steady"]["low"] > 1.1
    assert out["phases"][SEED_LOOP]["recovered_verdict"] != "NOT met"


def test_a_recovered_lag_and_a_third_of_the_polls_are_not_refused() -> None:
    """The same lag distribution before and after, 9 of 30 checks: polls met, and the lag
    not found worse than 10 % above the steady p95."""
    out = summarize_shift(_runs(0.0, (9, 9, 9)), recover_s=RECOVER_S, resamples=300)
    assert out["polls_verdict"] == "met"
    assert out["phases"][GENQUEUE]["recovered_verdict"] in ("met", "within noise")
    assert out["phases"][GENQUEUE]["after_over_steady"]["high"] > 1.0


def _section(runs: list[dict[str, Any]], command: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An invocation's slimmed section of results.json and its per-video log."""
    per_video = {}
    slim = []
    for k, r in enumerate(runs):
        name = f"{command}-{k}"
        per_video[name] = {"lags_s": r["lags_by_video"], "polls": r["polls_by_video"]}
        kept = {x: y for x, y in r.items() if x not in ("lags_by_video", "polls_by_video")}
        slim.append({**kept, "run": name})
    section = {"sigma": 0.2, "recover_s": RECOVER_S, "runs": slim, "meta": {"command": command}}
    return section, per_video


def test_invocations_are_pooled_over_every_draw() -> None:
    """Draws from two invocations give the figures of one invocation that ran them all."""
    runs = _runs(0.0, (9, 15, 11))
    pooled = pool_invocations([_section(runs[:2], "a"), _section(runs[2:], "b")], resamples=200)
    whole = summarize_shift(runs, recover_s=RECOVER_S, resamples=200)
    assert [d["seed"] for d in pooled["draws"]] == [1, 2, 3]
    assert pooled["polls_ratio"] == whole["polls_ratio"]
    assert pooled["phases"] == whole["phases"]
    assert pooled["meta"]["command"] == "a" and pooled["meta"]["also"] == [{"command": "b"}]
    assert all("lags_by_video" not in r for r in pooled["runs"])


def test_a_draw_pooled_twice_is_refused() -> None:
    """The same seed from two invocations would count its videos twice."""
    runs = _runs(0.0, (9, 9, 9))
    with pytest.raises(ValueError, match="twice"):
        pool_invocations([_section(runs[:2], "a"), _section(runs[:2], "b")], resamples=50)
