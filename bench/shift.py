"""The shift workloads: the upstream's queue wait doubles (or halves) part-way through a steady
stream of videos. genqueue and the seed loop run on the same videos (the simulator multiplies
the same draws), as in ``bench/draws.py``.

The target: the p95 lag of the videos requested ``recover_s`` (10 simulated minutes) or more
after the shift is back within 10 % of the p95 of those requested before it (steady, the
warm history describing them), and the polls per video over the whole run stay at most a
third of the seed loop's. Video ``i`` is requested at ``i * window / videos``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from bench.draws import GENQUEUE, SEED_LOOP, Interval, _p95, _quantiles, summarize_draws
from bench.measure import rnd

#: Videos requested this long after the shift are measured against the steady p95.
RECOVER_S = 600.0
#: How close to the steady p95 they must be.
TOLERANCE = 0.10


PHASES = ("steady", "transition", "after")


def _phase_of(i: int, step_s: float, shift_at_s: float, recover_s: float) -> str:
    at = i * step_s
    if at < shift_at_s:
        return "steady"
    return "after" if at >= shift_at_s + recover_s else "transition"


def _phases(
    lags: Mapping[int, float], step_s: float, shift_at_s: float, recover_s: float
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in PHASES}
    for i, lag in lags.items():
        out[_phase_of(i, step_s, shift_at_s, recover_s)].append(lag)
    return out


def _phase_polls(
    runs: Sequence[dict[str, Any]],
    step_s: float,
    shift_at_s: float,
    recover_s: float,
    resamples: int,
    seed: int = 3,
) -> dict[str, dict[str, Any]]:
    """Per phase: both systems' polls per video and genqueue's over the seed loop's, pooled
    over the draws on the videos both saw end, the interval resampling videos within each
    draw (pairs kept), as the whole run's ratio (``bench/draws.py``). Says where the checks
    go: before the shift, while the schedule follows it, after."""
    by_draw: dict[int, dict[str, dict[str, Any]]] = {}
    for r in runs:
        by_draw.setdefault(int(r["workload"]["seed"]), {})[r["label"]] = r
    pairs: dict[str, list[list[tuple[int, int]]]] = {k: [] for k in PHASES}
    for d in by_draw.values():
        if GENQUEUE not in d or SEED_LOOP not in d:
            continue
        g = {int(k): int(v) for k, v in d[GENQUEUE]["polls_by_video"].items()}
        s = {int(k): int(v) for k, v in d[SEED_LOOP]["polls_by_video"].items()}
        split: dict[str, list[tuple[int, int]]] = {k: [] for k in PHASES}
        for i in sorted(g.keys() & s.keys()):
            split[_phase_of(i, step_s, shift_at_s, recover_s)].append((g[i], s[i]))
        for k in PHASES:
            pairs[k].append(split[k])

    def ratio(sample: Sequence[Sequence[tuple[int, int]]]) -> float:
        return sum(a for d in sample for a, _ in d) / max(1, sum(b for d in sample for _, b in d))

    rng = random.Random(seed)
    out: dict[str, dict[str, Any]] = {}
    for k, per_draw in pairs.items():
        flat = [p for d in per_draw for p in d]
        if not flat:
            continue
        boot = [
            ratio([[d[rng.randrange(len(d))] for _ in d] for d in per_draw if d])
            for _ in range(resamples)
        ]
        out[k] = {
            "videos": len(flat),
            "polls_per_video": {
                GENQUEUE: rnd(sum(a for a, _ in flat) / len(flat), 3),
                SEED_LOOP: rnd(sum(b for _, b in flat) / len(flat), 3),
            },
            "polls_ratio": Interval(ratio(per_draw), *_quantiles(boot)).to_json(),
        }
    return out


def _ratio_interval(
    steady: list[list[float]], after: list[list[float]], resamples: int, seed: int = 2
) -> Interval:
    """p95 of ``after`` over p95 of ``steady`` (pooled over draws), resampling videos."""
    flat_s = [x for d in steady for x in d]
    flat_a = [x for d in after for x in d]
    value = _p95(flat_a) / _p95(flat_s)
    rng = random.Random(seed)
    boot = []
    for _ in range(resamples):
        s = [d[rng.randrange(len(d))] for d in steady for _ in d]
        a = [d[rng.randrange(len(d))] for d in after for _ in d]
        boot.append(_p95(a) / _p95(s))
    return Interval(value, *_quantiles(boot))


def summarize_shift(
    runs: Sequence[dict[str, Any]], *, recover_s: float = RECOVER_S, resamples: int = 2000
) -> dict[str, Any]:
    """The pooled draw figures over the whole run (``bench/draws.py``) plus, per system, the
    p95 lag before the shift, in the ``recover_s`` after it, and after that, with the
    after/steady ratio's interval and verdict."""
    whole = summarize_draws(runs, resamples=resamples)
    w = runs[0]["workload"]
    step_s = w["arrival_window_s"] / max(1, w["videos"])
    shift_at_s = float(w["queue_shift_at_s"])
    phases: dict[str, dict[str, Any]] = {}
    for label in (GENQUEUE, SEED_LOOP):
        per_draw = [
            _phases(
                {int(k): float(v) for k, v in r["lags_by_video"].items()},
                step_s,
                shift_at_s,
                recover_s,
            )
            for r in runs
            if r["label"] == label
        ]
        pooled = {k: [x for d in per_draw for x in d[k]] for k in PHASES}
        row: dict[str, Any] = {f"{k}_videos": len(v) for k, v in pooled.items()} | {
            f"{k}_p95_s": rnd(_p95(v), 3) if v else None for k, v in pooled.items()
        }
        if pooled["steady"] and pooled["after"]:
            ratio = _ratio_interval(
                [d["steady"] for d in per_draw if d["steady"]],
                [d["after"] for d in per_draw if d["after"]],
                resamples,
            )
            row["after_over_steady"] = ratio.to_json()
            row["recovered_verdict"] = (
                "met"
                if ratio.high <= 1 + TOLERANCE
                else "NOT met"
                if ratio.low > 1 + TOLERANCE
                else "within noise"
            )
        phases[label] = row
    return {
        **whole,
        "shift_at_s": shift_at_s,
        "shift_factor": w["queue_shift_factor"],
        "recover_s": recover_s,
        "phases": phases,
        "polls_by_phase": _phase_polls(runs, step_s, shift_at_s, recover_s, resamples),
    }


def pool_invocations(
    sources: Sequence[tuple[dict[str, Any], dict[str, Any]]], *, resamples: int = 2000
) -> dict[str, Any]:
    """One shift section from several invocations of the same part (more draws, other seeds):
    ``sources`` pairs each invocation's section of results.json with its per-video log
    (``<part>-per-video.json``); the figures are recomputed over every draw, and the section
    keeps each invocation's provenance (the first as ``meta``, the others as ``meta.also``)."""
    runs: list[dict[str, Any]] = []
    for section, per_video in sources:
        for r in section["runs"]:
            v = per_video[r["run"]]
            runs.append({**r, "lags_by_video": v["lags_s"], "polls_by_video": v["polls"]})
    seeds = [int(r["workload"]["seed"]) for r in runs if r["label"] == GENQUEUE]
    if len(seeds) != len(set(seeds)):
        raise ValueError(f"a seed was drawn twice: {sorted(seeds)}")
    first = sources[0][0]
    summary = summarize_shift(runs, recover_s=first["recover_s"], resamples=resamples)
    slim = [
        {k: v for k, v in r.items() if k not in ("lags_by_video", "polls_by_video")} for r in runs
    ]
    meta = {**first["meta"], "also": [s["meta"] for s, _ in sources[1:]]}
    return {"sigma": first["sigma"], "runs": slim, **summary, "meta": meta}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.shift --key shift_up --into bench/results.json A/results.json:A/logs
    B/results.json:B/logs``: pool one shift part's draws from several invocations."""
    import argparse
    import json
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m bench.shift", description=pool_invocations.__doc__)
    p.add_argument("--key", required=True, help="section of results.json, e.g. shift_up")
    p.add_argument("--into", type=Path, required=True, help="results.json to write it into")
    p.add_argument("sources", nargs="+", help="RESULTS_JSON:LOG_DIR of each invocation")
    a = p.parse_args(argv)
    part = a.key.replace("_", "-")
    sources = []
    for src in a.sources:
        results_path, _, log_dir = src.partition(":")
        section = json.loads(Path(results_path).read_text())[a.key]
        per_video = json.loads((Path(log_dir) / f"{part}-per-video.json").read_text())
        sources.append((section, per_video))
    results = json.loads(a.into.read_text()) if a.into.exists() else {}
    results[a.key] = pool_invocations(sources)
    a.into.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
