"""``python -m bench``: the benchmark harness (``make bench``, ``make bench-smoke``,
``make bench-10k``). Writes ``bench/results.json`` (merged: each part replaces only its own
section) and renders ``bench/RESULTS.md`` from it. See ``bench/RESULTS.md`` for the method."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.admission import AdmissionConfig, run_admission
from bench.admission import summarize as summarize_admission
from bench.budget import run_budget
from bench.ceiling import run_ceiling
from bench.draws import draw_specs, summarize_draws
from bench.floor import CLIENTS, measure_floor
from bench.frontier import genqueue_schedule, ideal_schedule
from bench.idle import run_idle
from bench.report import curve_points, render, summarize_compare, svg_plot
from bench.runs import Bench, RunSpec, run_one
from bench.shift import RECOVER_S, summarize_shift
from bench.sweep import run_sweep
from bench.tenk import run_tenk
from bench.workload import Workload
from genqueue.local_redis import LocalRedis
from genqueue.worker.config import WorkerConfig

HERE = Path(__file__).resolve().parent
PARTS = (
    "idle",
    "floor",
    "compare",
    "draws",
    "draws-wide",
    "draws-noqueued",
    "shift-up",
    "shift-down",
    "shift-up-noqueued",
    "shift-down-noqueued",
    "restart",
    "sweep",
    "memory",
    "ceiling",
    "budget",
    "admission",
)
#: The sections of results.json the draw-like parts write.
DRAW_KEYS = {
    "draws": "draws",
    "draws-wide": "draws_wide",
    "draws-noqueued": "draws_noqueued",
    "shift-up": "shift_up",
    "shift-down": "shift_down",
    "shift-up-noqueued": "shift_up_noqueued",
    "shift-down-noqueued": "shift_down_noqueued",
}


def _kv(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"--env expects KEY=VALUE, got {item!r}")
        out[k] = v
    return out


def _variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, rest = text.partition(":")
    return label, _kv([x for x in rest.split(",") if x])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("mode", nargs="?", choices=("all", "tenk"), default="all")
    p.add_argument("--smoke", action="store_true", help="a toy-size run (CI): under a minute")
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    p.add_argument("--md", type=Path, default=HERE / "RESULTS.md")
    # ``memory`` is the sweep's active set alone (the sweep measures it too): on request only.
    default_parts = ",".join(part for part in PARTS if part != "memory")
    p.add_argument("--only", default=default_parts, help=f"parts to run: {','.join(PARTS)}")
    p.add_argument("--videos", type=int, default=150, help="videos per comparison run")
    p.add_argument("--window-s", type=float, default=150.0, help="arrival window (sim s)")
    p.add_argument("--time-scale", type=float, default=0.1)
    p.add_argument("--sigmas", default="0.2,0.4")
    p.add_argument("--repeats", type=int, default=2, help="repeats at the first sigma")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--warm-history",
        type=int,
        default=10_000,
        help="completions genqueue has seen before a run (default: its horizon, a steady state)",
    )
    p.add_argument("--tuned-max-jobs", type=int, default=1000)
    p.add_argument("--seed-curve", default="2.5,10,20", help="extra seed-loop sleeps (s)")
    p.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="for genqueue workers"
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:K=V,K=V",
        help="an extra genqueue run at every sigma with these variables",
    )
    p.add_argument(
        "--draw-seeds", default="1,2,3", help="draws: one simulator seed and history each"
    )
    p.add_argument("--draw-videos", type=int, default=400, help="draws: videos per draw")
    p.add_argument(
        "--draw-window-s", type=float, default=400.0, help="draws: arrival window (sim s)"
    )
    p.add_argument(
        "--draw-time-scale",
        type=float,
        default=0.25,
        help="draws: slower than the comparison, so the seed loop's threads are not CPU-bound",
    )
    p.add_argument(
        "--wide-seeds", default="1", help="draws-wide: seeds at the second sigma (default 0.4)"
    )
    p.add_argument(
        "--noqueued-seeds", default="1", help="draws-noqueued: seeds, upstream never says queued"
    )
    p.add_argument("--shift-seeds", default="1,2,3", help="shift parts: one draw per seed, pooled")
    p.add_argument("--shift-videos", type=int, default=600)
    p.add_argument("--shift-window-s", type=float, default=1500.0, help="arrival window (sim s)")
    p.add_argument("--shift-at-s", type=float, default=500.0, help="when the queue wait moves")
    p.add_argument(
        "--shift-queue-median-s",
        type=float,
        default=30.0,
        help="the busy platform's queue wait before the shift (median, sim s)",
    )
    p.add_argument("--shift-time-scale", type=float, default=0.1)
    p.add_argument("--floor-repeats", type=int, default=3)
    p.add_argument("--floor-rate", type=float, default=200.0)
    p.add_argument("--sweep-sizes", default="1000,10000,50000")
    p.add_argument("--sweep-active", type=int, default=2000)
    p.add_argument("--sweep-window-s", type=float, default=15.0)
    p.add_argument(
        "--sweep-cpu-repeats", type=int, default=3, help="CPU windows per N (median reported)"
    )
    p.add_argument("--idle-window-s", type=float, default=120.0, help="idle: measured window")
    p.add_argument("--ceiling-videos", type=int, default=1000, help="ceiling: videos created")
    p.add_argument(
        "--adm-sides",
        default="fcfs,fair,reserve",
        help="admission: fcfs (the baseline), fair (no reserve), reserve (fair + the reserve)",
    )
    p.add_argument(
        "--adm-weightings", default="1:1:1,3:1:1", help="admission: fair side's A:B:C weights"
    )
    p.add_argument("--adm-time-scale", type=float, default=None, help="admission: time scale")
    p.add_argument(
        "--adm-window-s", type=float, default=None, help="admission: each run's window (sim s)"
    )
    p.add_argument("--appendfsync", default="everysec", choices=("always", "everysec", "no"))
    p.add_argument("--log-dir", type=Path, default=None)
    # tenk
    p.add_argument("--inflight", type=int, default=10_000)
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--rate-limit-rps", type=float, default=None, help="default 1.5 x N / cap")
    p.add_argument("--rate-limit-burst", type=int, default=50)
    p.add_argument("--tenk-time-scale", type=float, default=1.0)
    p.add_argument(
        "--ramp-s",
        type=float,
        default=0.0,
        help="spread the first N submissions over this many simulated s (0: all at once)",
    )
    p.add_argument(
        "--tenk-key",
        default="tenk",
        help="section of results.json (e.g. tenk-rps1000 for a variant beside the main run)",
    )
    p.add_argument(
        "--render-only", action="store_true", help="re-render --md from --out, run nothing"
    )
    return p


def _smoke(a: argparse.Namespace) -> None:
    """Toy size, every part, well under a minute: checks the plumbing, not the figures."""
    a.videos, a.window_s, a.time_scale = 6, 20.0, 0.01
    a.sigmas, a.repeats, a.seed_curve, a.tuned_max_jobs = "0.2", 1, "2.5", 50
    a.draw_seeds, a.draw_videos, a.draw_window_s, a.draw_time_scale = "1,2", 6, 20.0, 0.01
    a.wide_seeds, a.noqueued_seeds, a.shift_seeds = "1", "1", "1"
    a.shift_videos, a.shift_window_s, a.shift_at_s, a.shift_time_scale = 12, 24.0, 8.0, 0.01
    a.warm_history = 200
    a.floor_repeats, a.floor_rate = 1, 100.0
    a.sweep_sizes, a.sweep_active, a.sweep_window_s = "100,200", 50, 1.0
    a.sweep_cpu_repeats = 2
    a.idle_window_s, a.ceiling_videos = 2.0, 20
    a.inflight, a.minutes, a.tenk_time_scale = 50, 3.0, 0.05
    # A SIGKILLed task is re-run after the task timeout + 10 s: short, so the restart fits.
    a.env = [
        "GENQUEUE_TASK_TIMEOUT_S=2",
        "GENQUEUE_CONNECT_TIMEOUT_S=0.5",
        "GENQUEUE_READ_TIMEOUT_S=1",
        *a.env,
    ]


def _meta(a: argparse.Namespace, redis_version: str) -> dict[str, Any]:
    from importlib.metadata import version

    def ver(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip()
    except OSError:
        rev = "?"
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "git": rev,
        "cpus": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "redis_server": redis_version,
        "appendfsync": a.appendfsync,
        "versions": {
            n: ver(n) for n in ("arq", "redis", "httpx", "httpx-aiohttp", "aiohttp", "together")
        },
    }


def _load(path: Path) -> dict[str, Any]:
    if path.exists():
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        except ValueError:
            pass
    return {}


def _compare_specs(a: argparse.Namespace, sigmas: list[float]) -> list[RunSpec]:
    genv = _kv(a.env)
    if a.smoke:
        w = Workload(videos=a.videos, arrival_window_s=a.window_s, time_scale=a.time_scale)
        return [
            RunSpec("genqueue", "genqueue", w, a.workers, env=genv, warmup=a.warm_history),
            RunSpec("seed_loop", "seed loop", w, a.workers),
            RunSpec("seed_loop", "seed loop (curve)", w, a.workers, sleeps=(2.5, 10.0)),
            RunSpec("naive_arq", "naive arq (max_jobs=10)", w, a.workers),
        ]
    variants = [_variant(v) for v in a.variant]
    curve = tuple(float(x) for x in a.seed_curve.split(",") if x)
    warm = a.warm_history
    specs: list[RunSpec] = []
    for k, sigma in enumerate(sigmas):
        w = Workload(
            videos=a.videos, sigma=sigma, arrival_window_s=a.window_s, time_scale=a.time_scale
        )
        reps = a.repeats if k == 0 else 1
        for rep in range(reps):
            # Interleaved, so a change in the machine's load hits both alike.
            specs.append(
                RunSpec("genqueue", "genqueue", w, a.workers, env=genv, warmup=warm, repeat=rep)
            )
            specs.append(RunSpec("seed_loop", "seed loop", w, a.workers, repeat=rep))
        specs.append(
            RunSpec(
                "genqueue",
                "genqueue (fixed schedule)",
                w,
                a.workers,
                env={**genv, "GENQUEUE_POLL_SCHEDULE": "fixed"},
            )
        )
        for label, venv in variants:
            venv = {**genv, **venv}
            specs.append(
                RunSpec("genqueue", f"genqueue ({label})", w, a.workers, env=venv, warmup=warm)
            )
        if curve:
            specs.append(RunSpec("seed_loop", "seed loop (curve)", w, a.workers, sleeps=curve))
        if k == 0:
            specs.append(RunSpec("naive_arq", "naive arq (max_jobs=10)", w, a.workers))
            specs.append(
                RunSpec(
                    "naive_arq",
                    f"naive arq (max_jobs={a.tuned_max_jobs})",
                    w,
                    a.workers,
                    max_jobs=a.tuned_max_jobs,
                )
            )
    return specs


def _restart_specs(a: argparse.Namespace, sigma: float) -> list[RunSpec]:
    w = Workload(videos=a.videos, sigma=sigma, arrival_window_s=a.window_s, time_scale=a.time_scale)
    at = a.window_s  # every video requested, the most in flight
    genv = _kv(a.env)
    if a.smoke:  # arq re-runs a killed job only after its lock expires (>= 10 s): left out
        return [
            RunSpec("genqueue", "genqueue", w, a.workers, env=genv, restart_at_s=at),
            RunSpec("seed_loop", "seed loop", w, a.workers, restart_at_s=at),
        ]
    return [
        RunSpec(
            "genqueue", "genqueue", w, a.workers, env=genv, warmup=a.warm_history, restart_at_s=at
        ),
        RunSpec("seed_loop", "seed loop", w, a.workers, restart_at_s=at),
        RunSpec("naive_arq", "naive arq (max_jobs=10)", w, a.workers, restart_at_s=at),
        RunSpec(
            "naive_arq",
            f"naive arq (max_jobs={a.tuned_max_jobs})",
            w,
            a.workers,
            max_jobs=a.tuned_max_jobs,
            restart_at_s=at,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.render_only:
        results = _load(a.out)
        if results.get("compare"):
            results["compare"]["summary"] = summarize_compare(results["compare"]["runs"])
            _add_ideal(results["compare"], samples=2000 if results["meta"].get("smoke") else 20_000)
        if results.get("admission"):
            results["admission"]["summary"] = summarize_admission(results["admission"])
        _write(a, results)
        return 0
    if a.smoke:
        _smoke(a)
    parts = {p.strip() for p in a.only.split(",") if p.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts: {sorted(unknown)}")
    if a.smoke:
        # The same code as another part with another setting (draw_part_plan, unit-tested in
        # tests/bench/test_draws.py): the toy size stays short.
        parts -= {"shift-down-noqueued", "shift-down", "draws-wide"}
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found on PATH (apt-get install redis-server)")
    sigmas = [float(x) for x in a.sigmas.split(",") if x]
    log_dir = a.log_dir or Path(tempfile.mkdtemp(prefix="genqueue-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    if a.smoke and a.out == HERE / "results.json":
        # The smoke form never overwrites the recorded results.
        a.out, a.md = log_dir / "results.json", log_dir / "RESULTS.md"
    results = _load(a.out)
    started = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", flush=True)

    say(f"logs in {log_dir}")
    from genqueue.logs import configure_logging

    configure_logging("ERROR", "json")  # the harness's own genqueue calls (reconciler) stay quiet
    with LocalRedis(appendfsync=a.appendfsync) as server:
        import redis

        rv = str(redis.Redis.from_url(server.url).info("server")["redis_version"])
        genv = _kv(a.env)
        bench = Bench(server.url, log_dir, genv)
        if a.mode == "tenk":
            say(
                f"10k run: {a.inflight} in flight for {a.minutes:g} simulated min at time "
                f"scale {a.tenk_time_scale:g}"
            )
            results[a.tenk_key] = run_tenk(
                server.url,
                log_dir,
                inflight=a.inflight,
                minutes=a.minutes,
                rate_limit_rps=a.rate_limit_rps,
                rate_limit_burst=a.rate_limit_burst,
                sigma=sigmas[0],
                workers=a.workers,
                time_scale=a.tenk_time_scale,
                ramp_s=a.ramp_s,
                env=genv,
                progress=say,
            )
            results[a.tenk_key]["meta"] = _meta(a, rv)
            results[a.tenk_key]["smoke"] = a.smoke
        else:
            # The admission part alone keeps the file's run details (its section has its own):
            # they describe the other parts' figures.
            own_meta = parts != {"admission"} or "meta" not in results
            if own_meta:
                results["meta"] = _meta(a, rv)
                results["meta"]["smoke"] = a.smoke
            if "idle" in parts:
                say(f"idle: one worker process with nothing to do, {a.idle_window_s:g} s")
                results["idle"] = run_idle(
                    server.url,
                    log_dir,
                    window_s=a.idle_window_s,
                    warmup_s=2.0 if a.smoke else 10.0,
                    progress=say,
                )
            if "floor" in parts:
                say("floor: arq no-op job, GET clients, at a steady rate")
                results["floor"] = measure_floor(
                    server.url,
                    log_dir,
                    rate=a.floor_rate,
                    count=int(a.floor_rate * (0.5 if a.smoke else 7.5)),
                    repeats=a.floor_repeats,
                    clients=("aiohttp",) if a.smoke else CLIENTS,
                    progress=say,
                )
                results["floor"]["meta"] = _meta(a, rv)  # a floor may be run on its own
            if "compare" in parts:
                specs = _compare_specs(a, sigmas)
                runs = []
                for k, spec in enumerate(specs, 1):
                    say(f"compare {k}/{len(specs)}: {spec.key}")
                    res = asyncio.run(run_one(bench, spec, progress=say))
                    _slim(res)
                    runs.append(res)
                    say(
                        f"  -> {res['finished']}/{res['videos']} finished, polls/video "
                        f"{res['polls_per_video']}, lag p50/p95 {res['lag_p50_s']}/"
                        f"{res['lag_p95_s']} s, CPU {res['cpu_s_per_1000_videos']} s/1000 videos"
                    )
                results["compare"] = {
                    "runs": runs,
                    "summary": summarize_compare(runs),
                    "meta": _meta(a, rv),  # the current schedule's (older ones have none)
                }
                _add_ideal(results["compare"], samples=2000 if a.smoke else 20_000)
            for part, key in DRAW_KEYS.items():
                if part in parts:
                    results[key] = _draws_part(a, part, bench, genv, sigmas, log_dir, rv, say)
            if "restart" in parts:
                runs = []
                for spec in _restart_specs(a, sigmas[0]):
                    say(f"restart: {spec.label}")
                    res = asyncio.run(run_one(bench, spec, progress=say))
                    _slim(res)
                    runs.append(res)
                    say(
                        f"  -> lost {res['unfinished_at_cutoff']}, re-created {res['recreated']}, "
                        f"orphaned {res['orphaned_upstream_jobs']}, lag p95 {res['lag_p95_s']} s"
                    )
                results["restart"] = {"runs": runs, "meta": _meta(a, rv)}
            if "sweep" in parts:
                sizes = [int(x) for x in a.sweep_sizes.split(",") if x]
                say(f"sweep: N = {sizes}")
                results["sweep"] = run_sweep(
                    server.url,
                    log_dir,
                    sizes,
                    active=a.sweep_active,
                    rate=a.floor_rate,
                    window_s=a.sweep_window_s,
                    cpu_repeats=a.sweep_cpu_repeats,
                    env=genv,
                    progress=say,
                )
                results["sweep"]["meta"] = _meta(a, rv)  # a sweep may be run on its own
            if "memory" in parts:
                say("memory: the sweep's active set alone, bytes per polling request")
                results["memory"] = run_sweep(
                    server.url,
                    log_dir,
                    [],
                    active=a.sweep_active,
                    rate=a.floor_rate,
                    window_s=a.sweep_window_s,
                    env=genv,
                    progress=say,
                )
                results["memory"]["meta"] = _meta(a, rv)
            if "ceiling" in parts:
                say("ceiling: Redis CPU and commands per poll, create and finished video")
                results["ceiling"] = run_ceiling(
                    server.url,
                    log_dir,
                    progress=say,
                    active=a.sweep_active if not a.smoke else 50,
                    rate=a.floor_rate,
                    window_s=a.sweep_window_s,
                    videos=a.ceiling_videos,
                    workers=a.workers,
                    video_time_scale=0.1 if a.smoke else 1.0,
                )
            if "budget" in parts:
                say("budget: $20/day budgets against $100 of videos each, a tenant without")
                results["budget"] = run_budget(
                    server.url,
                    log_dir,
                    # Smoke: $10 of videos against $2/day, a faster clock.
                    dollars_each=10 if a.smoke else 100,
                    budget_scale=0.1 if a.smoke else 1.0,
                    time_scale=0.005 if a.smoke else 0.02,
                    progress=say,
                )
                results["budget"]["meta"] = _meta(a, rv)  # a part may be run on its own
                for tenant, row in results["budget"]["tenants"].items():
                    say(
                        f"  -> {tenant}: spent ${row['spent_usd']} of ${row['budget_usd']}, "
                        f"held {row['held']} ({row['held_reason_derived']})"
                    )
            if "admission" in parts:
                results["admission"] = _admission_part(a, server.url, log_dir, rv, say)
            if own_meta:
                results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    _write(a, results)
    say(f"wrote {a.out} and {a.md}")
    return 0


def draw_part_plan(
    a: argparse.Namespace, part: str, sigmas: list[float]
) -> tuple[float, str, dict[str, Any]]:
    """What a draw-like part runs: its sigma, its seeds and its workload's settings."""
    draw = {"videos": a.draw_videos, "window_s": a.draw_window_s, "time_scale": a.draw_time_scale}
    kw: dict[str, Any]
    if part == "draws":
        sigma, seeds, kw = sigmas[0], a.draw_seeds, draw
    elif part == "draws-wide":
        sigma, seeds, kw = (sigmas[1] if len(sigmas) > 1 else 0.4), a.wide_seeds, draw
    elif part == "draws-noqueued":
        sigma, seeds, kw = sigmas[0], a.noqueued_seeds, {**draw, "report_queued": False}
    else:
        sigma, seeds = sigmas[0], a.shift_seeds
        kw = {
            "videos": a.shift_videos,
            "window_s": a.shift_window_s,
            "time_scale": a.shift_time_scale,
            "queue_median_s": a.shift_queue_median_s,
            "queue_shift_at_s": a.shift_at_s,
            "queue_shift_factor": 2.0 if part.startswith("shift-up") else 0.5,
            "report_queued": not part.endswith("-noqueued"),
        }
    return sigma, seeds, kw


def _draws_part(
    a: argparse.Namespace,
    part: str,
    bench: Bench,
    genv: dict[str, str],
    sigmas: list[float],
    log_dir: Path,
    rv: str,
    say: Any,
) -> dict[str, Any]:
    """One draw-like part: genqueue and the seed loop on the same videos, per seed, pooled
    (``bench/draws.py``); the shift parts add the before/after figures (``bench/shift.py``)."""
    resamples = 200 if a.smoke else 2000
    meta = _meta(a, rv)  # when the part started, and the load then
    common: dict[str, Any] = {"workers": a.workers, "env": genv, "warmup": a.warm_history}
    sigma, seeds, kw = draw_part_plan(a, part, sigmas)
    specs = draw_specs([int(x) for x in seeds.split(",") if x], sigma=sigma, **common, **kw)
    runs = []
    for k, spec in enumerate(specs, 1):
        say(f"{part} {k}/{len(specs)}: {spec.key}")
        res = asyncio.run(run_one(bench, spec, progress=say))
        res.pop("samples", None)  # per video figures kept until pooled, below
        runs.append(res)
        say(
            f"  -> {res['finished']}/{res['videos']} finished, polls/video "
            f"{res['polls_per_video']}, lag p95 {res['lag_p95_s']} s"
        )
    if part.startswith("shift"):
        recover_s = a.shift_window_s / 3 if a.smoke else RECOVER_S
        summary = summarize_shift(runs, recover_s=recover_s, resamples=resamples)
    else:
        summary = summarize_draws(runs, resamples=resamples)
    per_video = {
        r["run"]: {"lags_s": r["lags_by_video"], "polls": r["polls_by_video"]} for r in runs
    }
    name = "draws" if part == "draws" else part
    (log_dir / f"{name}-per-video.json").write_text(json.dumps(per_video))
    for res in runs:
        _slim(res)
    meta["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out: dict[str, Any] = {"sigma": sigma, "runs": runs, **summary, "meta": meta}
    if part == "draws":
        seed_p95 = summary["lag_p95_s"]["seed loop"]["value"]
        out["ideal_at_seed_loop_lag"] = dataclasses.asdict(
            ideal_schedule(seed_p95, sigma=sigma, samples=2000 if a.smoke else 20_000)
        )
    say(
        f"  pooled: polls {summary['polls_per_video']}, ratio {summary['polls_ratio']}, "
        f"lag p95 {summary['lag_p95_s']}, difference {summary['lag_p95_difference_s']}"
        + (f", phases {summary['phases']}" if "phases" in summary else "")
    )
    return out


def _admission_part(
    a: argparse.Namespace, redis_url: str, log_dir: Path, rv: str, say: Any
) -> dict[str, Any]:
    """First come, first served (the code before admission) against fair admission
    (``bench/admission.py``)."""
    kw: dict[str, Any] = {
        "workers": a.workers,
        "sides": tuple(s.strip() for s in a.adm_sides.split(",") if s.strip()),
        "weightings": tuple(s.strip() for s in a.adm_weightings.split(",") if s.strip()),
    }
    if a.adm_time_scale is not None:
        kw["time_scale"] = a.adm_time_scale
    if a.adm_window_s is not None:
        kw["window_s"] = a.adm_window_s
    cfg = AdmissionConfig.smoke_size(**kw) if a.smoke else AdmissionConfig.full(**kw)
    say(
        f"admission: sides {list(cfg.sides)}, cap {cfg.cap}, time scale {cfg.time_scale:g}, "
        f"{cfg.window_s:g} simulated s per run"
    )
    started = time.monotonic()
    out = run_admission(redis_url, log_dir, cfg, progress=say)
    out["meta"] = {**_meta(a, rv), "wall_s": round(time.monotonic() - started, 1)}
    out["smoke"] = a.smoke
    return out


def _slim(res: dict[str, Any]) -> None:
    """Drop what a run returns that results.json does not keep (time series, per video)."""
    for key in ("samples", "lags_by_video", "polls_by_video"):
        res.pop(key, None)


def _add_ideal(compare: dict[str, Any], samples: int) -> None:
    """The ideal schedule's checks per video for the seed loop's measured p95 lag, per sigma
    (``bench.frontier``: a computed lower bound, beside the measured figures)."""
    ideal = {}
    for row in compare["summary"]:
        p95 = row["lag_p95_s"]["median"] if row["label"] == "seed loop" else None
        if p95:
            point = ideal_schedule(p95, sigma=row["sigma"], samples=samples)
            ideal[str(row["sigma"])] = dataclasses.asdict(point)
    compare["ideal_at_seed_loop_lag"] = ideal
    videos = 500 if samples < 20_000 else 4000
    compare["schedule_by_history"] = [
        dataclasses.asdict(genqueue_schedule(history=n, videos=videos))
        for n in (200, 1000, WorkerConfig().schedule.adaptive_samples)
    ]


def _write(a: argparse.Namespace, results: dict[str, Any]) -> None:
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    a.md.write_text(render(results))
    summary = (results.get("compare") or {}).get("summary")
    if summary:
        (a.md.parent / "lag_polls.svg").write_text(svg_plot(curve_points(summary)))


if __name__ == "__main__":
    sys.exit(main())
