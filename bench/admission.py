"""Admission under contention (issue 25, "Measure it"): first come, first served against fair
admission, in one invocation, on the same simulator, workers and global cap.

Sides:

* ``fcfs``: the code before admission (``FCFS_COMMIT``), exported with ``git archive`` and
  installed into a folder (``pip install --no-deps --target``: the package maps folders with
  ``package-dir``, so the bare source tree does not import), run with that folder first on
  ``PYTHONPATH`` and from a folder outside the checkout. A request that meets the full cap
  re-arms its own timer every ``cap_wait_s``; tenants exist but have no weights.
* ``fair``: this tree (weighted fair admission queues) with no reserve
  (``GENQUEUE_ADMISSION_RESERVE_SLOTS=0``): strictly work-conserving, as admission was built.
* ``reserve``: this tree with ``reserve_slots`` (its default, 1) kept for tenants below their
  weighted share (docs/architecture.md rule 20).

Every process of a side (workers, the ``genqueue tenant set`` calls, the submitter
``bench/admission_submitter.py``) runs that side's code; the harness only reads Redis (record
fields and the counts hash, which both versions write alike) and the simulator.

Runs (each with fresh workers and an empty Redis, on one simulator per workload reset to the
same seed before each run; scenario by scenario, the sides in turn):

* ``shares``: three tenants each submit a backlog of ``backlog_per_tenant`` (>= 10x the cap),
  one batch after the other (A, B, C); weights 1:1:1, and 3:1:1 on the fair side (the baseline
  has no weights: its one run is reported against both). Share = a tenant's upstream creates
  (the record's ``submitted_at_ms``) within the time when all three have requests waiting
  (submitted, not yet created), over everyone's creates in it.
* ``latency``: A submits ``heavy`` at once; B and C submit one request each every
  ``light_every_s`` (staggered; below their fair share); ``alone``: B and C on the same
  schedule without A. Admission wait = ``submitted_at_ms - enqueued_at_ms`` (created upstream
  minus submitted; Redis clock), in simulated seconds; a request not created by the run's end
  counts with its wait so far (a lower bound, flagged). Beside it (``next_slot``): whether
  each light request took the first slot that freed after it arrived, and the wait for that
  first create, which bounds any admission that keeps every slot busy.
* utilisation, sampled every simulated second in the runs above, over the samples with
  someone waiting, counted from the first sample at the cap (the start-up fill is not
  admission): the mean share of the cap held (``HOLDING_SLOT`` in the counts hash; the
  target), and the share of samples with every slot held (a reserve keeps one free by design
  while a tenant above its share waits).
* ``cost``: at time scale 1, the cap filled with videos that never end within the run, then
  ``cost_sizes[0]`` and later ``cost_sizes[1]`` requests waiting: over a fixed window after a
  settling time, Redis script calls (``INFO commandstats`` eval/evalsha/fcall calls) and
  every command per second, worker and Redis CPU seconds per second, and the timers past due
  at the window's end (a side that falls behind shows a flat rate: its work queues up).

Slot turnover (the latency target's unit) = the mean hold time of the run's finished videos
(``finished_at_ms - submitted_at_ms``) divided by the cap: the mean time between slot frees
with the cap full.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio

from bench.idle import calls_delta, command_calls, redis_cpu_s
from bench.measure import percentile, rnd
from bench.procs import Child, start_genqueue_workers
from bench.runs import Bench, RunSpec, genqueue_env
from bench.workload import Workload, start_simulator
from genqueue.producer import Settings
from genqueue.producer.keys import HOLDING_SLOT
from genqueue.producer.stats import oldest_due_age_ms

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUBMITTER = HERE / "admission_submitter.py"
#: ``genqueue tenant set`` for several tenants in one process (one interpreter start a run).
TENANT_SET = """
import json, sys
from genqueue.cli import main
for args in json.loads(sys.argv[1]):
    main.main(args=args, prog_name="genqueue", standalone_mode=False)
"""
#: The last commit before admission queues: first come, first served with ``cap_wait_s``.
FCFS_COMMIT = "b56fbb7"
TENANTS = ("tenant-a", "tenant-b", "tenant-c")
#: Redis commands that run a script.
SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
#: Count fields read for utilisation: the held slots, plus the requests waiting.
PENDING = "pending"
#: The reserve's size (``WorkerConfig.admission_reserve_slots``).
RESERVE_ENV = "GENQUEUE_ADMISSION_RESERVE_SLOTS"
#: Slots reserved by admission for a request whose create has not started (fair side; a
#: field the baseline never writes reads as 0).
ADMITTED = "admitted"


@dataclass(frozen=True)
class AdmissionConfig:
    """Sizes of the admission part (``full()`` for ``make bench``, ``smoke()`` for CI)."""

    cap: int = 50
    workers: int = 2
    time_scale: float = 0.05
    #: Generation time of the contention runs' videos (lognormal median, sim s; sigma 0.2).
    median_s: float = 120.0
    #: shares: each tenant's backlog.
    backlog_per_tenant: int = 500
    #: shares, latency and alone runs: how long each is measured (sim s).
    window_s: float = 1200.0
    #: latency: the heavy tenant's batch, and the light tenants' spacing (sim s).
    heavy: int = 5000
    light_every_s: float = 15.0
    #: After the first videos have ended: every slot has turned over (steady state).
    light_start_s: float = 200.0
    #: Light requests stop this long before the window's end (sim s): each is then created
    #: before the end unless admission holds it back.
    light_tail_s: float = 60.0
    #: Utilisation samples, every this many sim s.
    sample_every_s: float = 1.0
    #: cost: requests waiting, the window measured at each (wall s, time scale 1) and the
    #: time left after each batch's last submit before the window opens.
    cost_sizes: tuple[int, ...] = (5000, 50_000)
    cost_window_s: float = 20.0
    cost_settle_s: float = 10.0
    sides: tuple[str, ...] = ("fcfs", "fair", "reserve")
    #: The ``reserve`` side's ``GENQUEUE_ADMISSION_RESERVE_SLOTS``.
    reserve_slots: int = 1
    #: shares: the weights of A:B:C on the fair side (1:1:1 always runs).
    weightings: tuple[str, ...] = ("1:1:1", "3:1:1")
    fcfs_commit: str = FCFS_COMMIT
    smoke: bool = False

    @classmethod
    def full(cls, **kw: Any) -> AdmissionConfig:
        return cls(**kw)

    @classmethod
    def smoke_size(cls, **kw: Any) -> AdmissionConfig:
        """Toy size: every run and figure, under a minute; the figures mean nothing."""
        base: dict[str, Any] = {
            "cap": 8,
            "time_scale": 0.02,
            "median_s": 15.0,
            "backlog_per_tenant": 60,
            "window_s": 90.0,
            "heavy": 150,
            "light_every_s": 15.0,
            "light_start_s": 20.0,
            "light_tail_s": 10.0,
            "cost_sizes": (100, 400),
            "cost_window_s": 1.5,
            "cost_settle_s": 0.5,
            "smoke": True,
        }
        return cls(**{**base, **kw})


# --- the two sides ----------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One version of genqueue: ``root`` is its import folder (None: this tree's install)."""

    key: str
    label: str
    git: str
    root: Path | None = None
    #: Variables of its own (the reserve's size).
    extra_env: tuple[tuple[str, str], ...] = ()

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env.pop("PYTHONPATH", None)
        if self.root is not None:
            env["PYTHONPATH"] = str(self.root)
        env.update(self.extra_env)
        return env


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def fcfs_root(commit: str, cache: Path | None = None) -> Path:
    """``commit`` installed into a folder (built once per commit, kept in ``cache``)."""
    full = _git("rev-parse", f"{commit}^{{commit}}")
    cache = cache or Path(tempfile.gettempdir()) / "genqueue-bench-cache"
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / f"genqueue-{full[:12]}"
    if (root / ".complete").exists():
        return root
    work = Path(tempfile.mkdtemp(dir=cache, prefix=".build-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", full],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(work / "src", filter="data")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
            + ["--target", str(work / "root"), str(work / "src")],
            check=True,
            capture_output=True,
            cwd=work,
        )
        (work / "root" / ".complete").write_text(full + "\n")
        with contextlib.suppress(OSError):  # another harness built it meanwhile: use theirs
            (work / "root").rename(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def make_sides(cfg: AdmissionConfig, cache: Path | None = None) -> list[Side]:
    sides = []
    for key in cfg.sides:
        if key == "fcfs":
            rev = _git("rev-parse", "--short", f"{cfg.fcfs_commit}^{{commit}}")
            sides.append(
                Side("fcfs", "first come, first served", rev, fcfs_root(cfg.fcfs_commit, cache))
            )
        elif key in ("fair", "reserve"):
            n = 0 if key == "fair" else cfg.reserve_slots
            label = "fair admission" + (f", reserve {n}" if n else ", no reserve")
            env = ((RESERVE_ENV, str(n)),)
            sides.append(Side(key, label, _git("rev-parse", "--short", "HEAD"), None, env))
        else:
            raise ValueError(f"unknown side {key!r} (fcfs, fair, reserve)")
    return sides


# --- one run ----------------------------------------------------------------------------


@dataclass
class Request:
    tenant: str
    enqueued_ms: int
    submitted_ms: int | None
    finished_ms: int | None


@dataclass
class RunData:
    """What one run observed (raw: the figures are computed by the functions below)."""

    name: str
    side: str
    cap: int
    time_scale: float
    t0_ms: int
    end_ms: int
    requests: list[Request]
    #: (sim s since t0, held slots, waiting requests)
    samples: list[tuple[float, int, int]]
    worker_cpu_s: float
    wall_s: float
    genqueue_path: str
    upstream_created: int


@dataclass
class Harness:
    redis_url: str
    log_dir: Path
    cfg: AdmissionConfig
    progress: Any = print
    bench: Bench = field(init=False)

    def __post_init__(self) -> None:
        self.bench = Bench(self.redis_url, self.log_dir)
        self._sims: dict[Workload, tuple[Child, str]] = {}

    async def simulator(self, w: Workload) -> str:
        """The simulator for ``w``: one process per workload for the whole part, reset (jobs,
        counters and its random draws, from the workload's seed) before each run."""
        if w not in self._sims:
            self._sims[w] = start_simulator(w, self.log_dir, f"adm-sim-{len(self._sims) + 1}")
            return self._sims[w][1]
        url = self._sims[w][1]
        async with httpx.AsyncClient(timeout=60) as h:
            (await h.post(f"{url}/_sim/reset", params={"seed": w.seed})).raise_for_status()
        return url

    def close(self) -> None:
        for child, _ in self._sims.values():
            child.kill()
        self._sims.clear()

    def _env(self, side: Side, w: Workload, run: str, prefix: str, sim_url: str) -> dict[str, str]:
        spec = RunSpec("genqueue", run, w, self.cfg.workers)
        env = genqueue_env(self.bench, spec, prefix, sim_url)
        env["GENQUEUE_MAX_INFLIGHT"] = str(self.cfg.cap)
        return side.env(env)

    def _tenants(
        self, side: Side, env: Mapping[str, str], weights: Mapping[str, float]
    ) -> subprocess.Popen[str]:
        """``genqueue tenant set NAME [--weight W]`` with the side's own CLI, every tenant in
        one process (started now, awaited by ``_tenants_done``)."""
        calls = []
        for name, weight in weights.items():
            args = ["tenant", "set", name]
            if weight != 1:  # 1 is the default: the baseline, without weights, takes this too
                args += ["--weight", f"{weight:g}"]
            calls.append(args)
        return subprocess.Popen(
            [sys.executable, "-c", TENANT_SET, json.dumps(calls)],
            env=dict(env),
            cwd=self.log_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def _tenants_done(self, side: Side, proc: subprocess.Popen[str]) -> None:
        out, _ = await asyncio.to_thread(proc.communicate, None, 60)
        if proc.returncode != 0:
            raise RuntimeError(f"{side.key}: genqueue tenant set failed:\n{out}")

    def _submitter(
        self, side: Side, env: Mapping[str, str], name: str, model: str, entries: list[Any]
    ) -> tuple[Child, Path]:
        """Start the side's submitter for ``entries`` (``at``: wall s after the start that
        ``_go`` gives it)."""
        plan = self.log_dir / f"{name}-plan.json"
        out = self.log_dir / f"{name}-ids.jsonl"
        plan.write_text(json.dumps({"model": model, "entries": entries}))
        for path in (out, Path(f"{out}.ready"), Path(f"{out}.start")):
            path.unlink(missing_ok=True)
        args = [sys.executable, str(SUBMITTER), str(plan), str(out)]
        return Child(f"{name}-submitter", args, env, self.log_dir, self.log_dir), out

    async def _go(self, child: Child, out: Path, lead_s: float = 0.2) -> float:
        """Once the submitter is connected, start its plan ``lead_s`` from now; the start."""
        deadline = time.monotonic() + 60
        while not _exists(f"{out}.ready"):
            if not child.alive or time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not start:\n{child.tail()}")
            await asyncio.sleep(0.01)
        t0 = time.time() + lead_s
        _write_start(out, t0)
        return t0

    async def _finish_submitter(
        self, child: Child, out: Path, timeout_s: float
    ) -> tuple[list[tuple[str, str]], str]:
        try:
            await asyncio.to_thread(child.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            raise TimeoutError(f"{child.name} still submitting after {timeout_s:g} s") from None
        child.stop()
        if child.proc.returncode != 0:
            raise RuntimeError(f"{child.name} failed:\n{child.tail()}")
        return _read_ids(out)

    async def timed_run(
        self,
        side: Side,
        label: str,
        *,
        weights: Mapping[str, float],
        plan: Sequence[tuple[float, str, int]],
    ) -> RunData:
        """One contention run: ``plan`` = (sim s after the start, tenant, count) batches,
        measured for ``window_s``."""
        cfg = self.cfg
        run = self.bench.next_name(f"adm-{side.key}-{label}")
        started = time.monotonic()
        w = Workload(videos=0, median_s=cfg.median_s, time_scale=cfg.time_scale)
        scale = cfg.time_scale
        r = redis.asyncio.Redis.from_url(self.redis_url, decode_responses=True)
        await r.flushall()
        sim_url = await self.simulator(w)
        prefix = f"bench-{run}"
        env = self._env(side, w, run, prefix, sim_url)
        keys = Settings.from_env(env).keys
        workers: list[Child] = []
        submitter: Child | None = None
        try:
            tenants = self._tenants(side, env, weights)
            entries = [
                {"at": at * scale, "tenant": t, "count": n, "prefix": f"{t} {k}"}
                for k, (at, t, n) in enumerate(plan)
            ]
            submitter, out = self._submitter(side, env, run, w.model, entries)
            names = [f"{run}-w{k}" for k in range(cfg.workers)]
            workers = await start_genqueue_workers(
                names, env, self.log_dir, r, prefix, cwd=self.log_dir
            )
            await self._tenants_done(side, tenants)
            await asyncio.sleep(0.3)
            for c in workers:
                c.mark()
            t0 = await self._go(submitter, out)
            fields = [*HOLDING_SLOT, PENDING, ADMITTED]
            samples: list[tuple[float, int, int]] = []
            end = t0 + cfg.window_s * scale
            step = cfg.sample_every_s * scale
            nxt = t0
            while (now := time.time()) < end:
                if now >= nxt:
                    nxt += step
                    vals = [int(v or 0) for v in await r.hmget(keys.counts, fields)]
                    held = sum(vals[: len(HOLDING_SLOT)])
                    waiting = vals[-2] - vals[-1]
                    samples.append((round((now - t0) / scale, 2), held, waiting))
                await asyncio.sleep(max(0.0, min(nxt, end) - time.time()))
            end_ms = int(time.time() * 1000)
            cpu = sum(c.sample() for c in workers)
            for c in workers:
                c.kill()  # frozen from here: the records and the simulator are read after
            ids, path = await self._finish_submitter(submitter, out, 120.0)
            requests = await _read_requests(r, keys, ids)
            async with httpx.AsyncClient(timeout=60) as h:
                created = int((await h.get(f"{sim_url}/_sim/stats")).json()["jobs_created"])
        finally:
            for c in workers:
                c.kill()  # the backlog is discarded with the Redis flush: no graceful stop
            if submitter is not None and submitter.alive:
                submitter.kill()
            await r.aclose()
        data = RunData(
            name=run,
            side=side.key,
            cap=cfg.cap,
            time_scale=scale,
            t0_ms=int(t0 * 1000),
            end_ms=end_ms,
            requests=requests,
            samples=samples,
            worker_cpu_s=cpu,
            wall_s=time.monotonic() - started,
            genqueue_path=path,
            upstream_created=created,
        )
        _check_side(side, data.genqueue_path)
        return data

    async def cost_run(self, side: Side) -> dict[str, Any]:
        """Backlog cost: the cap full of videos that do not end in the run, then each of
        ``cost_sizes`` waiting, measured over ``cost_window_s`` (time scale 1)."""
        cfg = self.cfg
        run = self.bench.next_name(f"adm-{side.key}-cost")
        # Generation takes ~11 simulated days: no slot frees during the run.
        w = Workload(videos=0, median_s=1e6, time_scale=1.0)
        r = redis.asyncio.Redis.from_url(self.redis_url, decode_responses=True)
        await r.flushall()
        sim_url = await self.simulator(w)
        prefix = f"bench-{run}"
        env = self._env(side, w, run, prefix, sim_url)
        keys = Settings.from_env(env).keys
        tenant = TENANTS[0]
        workers: list[Child] = []
        steps: list[dict[str, Any]] = []
        try:
            tenants = self._tenants(side, env, {tenant: 1})
            names = [f"{run}-w{k}" for k in range(cfg.workers)]
            workers = await start_genqueue_workers(
                names, env, self.log_dir, r, prefix, cwd=self.log_dir
            )
            await self._tenants_done(side, tenants)
            async with httpx.AsyncClient(timeout=60) as h:

                async def created() -> int:
                    stats = (await h.get(f"{sim_url}/_sim/stats")).json()
                    return int(stats["jobs_created"])

                waiting = 0
                for k, size in enumerate((0, *cfg.cost_sizes)):
                    count = cfg.cap if k == 0 else size - waiting
                    entry = {"at": 0, "tenant": tenant, "count": count, "prefix": f"c{k}"}
                    child, out = self._submitter(side, env, f"{run}-{k}", w.model, [entry])
                    await self._go(child, out, 0.0)
                    t_sub = time.monotonic()
                    _, path = await self._finish_submitter(child, out, 600.0)
                    submit_s = time.monotonic() - t_sub
                    _check_side(side, path)
                    if k == 0:  # the cap filled: every slot held by a video that won't end
                        deadline = time.monotonic() + 60
                        while await created() < cfg.cap:
                            if time.monotonic() > deadline:
                                raise TimeoutError("the cap did not fill")
                            await asyncio.sleep(0.05)
                        continue
                    waiting = size
                    await asyncio.sleep(cfg.cost_settle_s)
                    for c in workers:
                        c.mark()
                    redis_cpu = await redis_cpu_s(r)
                    before = command_calls(await r.info("commandstats"))
                    t0 = time.monotonic()
                    await asyncio.sleep(cfg.cost_window_s)
                    after = command_calls(await r.info("commandstats"))
                    wall = time.monotonic() - t0
                    cpu = sum(c.sample() for c in workers)
                    redis_cpu = await redis_cpu_s(r) - redis_cpu
                    # Timers past due: checks of paid videos wait behind them.
                    now_ms = int(time.time() * 1000)
                    due = await r.zcount(keys.queue, "-inf", now_ms)
                    oldest = await r.zrange(keys.queue, 0, 0, withscores=True)
                    delta = calls_delta(before, after)
                    delta["info"] = delta.get("info", 0) - 1  # the harness's second INFO
                    delta = {k2: v for k2, v in delta.items() if v > 0}
                    scripts = sum(delta.get(c2, 0) for c2 in SCRIPT_COMMANDS)
                    counts = await r.hmget(keys.counts, [PENDING, ADMITTED])
                    steps.append(
                        {
                            "waiting": size,
                            "submit_s": round(submit_s, 1),
                            "window_s": round(wall, 2),
                            "script_calls_per_s": round(scripts / wall, 1),
                            "commands_per_s": round(sum(delta.values()) / wall, 1),
                            "worker_cpu_s_per_s": round(cpu / wall, 3),
                            "redis_cpu_s_per_s": round(redis_cpu / wall, 3),
                            "timers_due": int(due),
                            "oldest_due_age_s": round(oldest_due_age_ms(oldest, now_ms) / 1000, 2),
                            "by_command": dict(list(delta.items())[:10]),
                            "pending_after": int(counts[0] or 0) - int(counts[1] or 0),
                            "upstream_created": await created(),
                        }
                    )
                    self.progress(
                        f"  {side.key} cost, {size:,} waiting: {steps[-1]['script_calls_per_s']} "
                        f"script calls/s, {steps[-1]['worker_cpu_s_per_s']} worker CPU-s/s, "
                        f"Redis {steps[-1]['redis_cpu_s_per_s']} CPU-s/s, "
                        f"{steps[-1]['timers_due']} timers due (oldest "
                        f"{steps[-1]['oldest_due_age_s']} s)"
                    )
        finally:
            for c in workers:
                c.kill()
            await r.aclose()
        return {"side": side.key, "cap": cfg.cap, "tenant": tenant, "steps": steps}


def _exists(path: str) -> bool:
    return Path(path).exists()


def _write_start(out: Path, t0: float) -> None:
    tmp = Path(f"{out}.tmp")
    tmp.write_text(repr(t0))
    tmp.rename(f"{out}.start")  # atomic: the submitter never reads half of it


def _read_ids(out: Path) -> tuple[list[tuple[str, str]], str]:
    """The submitter's output: (tenant, id) per request, and the genqueue it imported."""
    ids, path = [], ""
    for line in out.read_text().splitlines():
        row = json.loads(line)
        if "done" in row:
            path = row["genqueue"]
        else:
            ids.append((row["tenant"], row["id"]))
    return ids, path


def _check_side(side: Side, path: str) -> None:
    """The side's processes imported the version meant for it (never this tree by mistake)."""
    if not path:
        raise RuntimeError(f"{side.key}: the submitter did not say which genqueue it ran")
    inside = side.root is not None and Path(path).resolve().is_relative_to(side.root.resolve())
    if inside != (side.root is not None):
        raise RuntimeError(f"{side.key}: ran {path}, expected the copy in {side.root}")


async def _read_requests(
    r: redis.asyncio.Redis, keys: Any, ids: Sequence[tuple[str, str]]
) -> list[Request]:
    fields = ("tenant", "enqueued_at_ms", "submitted_at_ms", "finished_at_ms")
    out: list[Request] = []
    for lo in range(0, len(ids), 1000):
        chunk = ids[lo : lo + 1000]
        async with r.pipeline(transaction=False) as pipe:
            for _, rid in chunk:
                pipe.hmget(keys.record(rid), fields)
            replies = await pipe.execute()
        for (tenant, _), (_, enq, sub, fin) in zip(chunk, replies, strict=True):
            if enq is None:
                continue
            out.append(
                Request(
                    tenant,
                    int(enq),
                    int(sub) if sub else None,
                    int(fin) if fin and sub else None,
                )
            )
    return out


# --- figures ----------------------------------------------------------------------------


def shares(data: RunData, tenants: Sequence[str], weights: Mapping[str, float]) -> dict[str, Any]:
    """Creates per tenant while every one of ``tenants`` has requests waiting."""
    events: list[tuple[int, int, str]] = []  # (ms, +1 submitted | -1 created, tenant)
    for q in data.requests:
        if q.tenant not in tenants:
            continue
        events.append((q.enqueued_ms, 1, q.tenant))
        if q.submitted_ms is not None and q.submitted_ms <= data.end_ms:
            events.append((q.submitted_ms, -1, q.tenant))
    events.sort()
    waiting = dict.fromkeys(tenants, 0)
    creates = dict.fromkeys(tenants, 0)
    span_ms, since, first, last = 0, None, None, None
    for ms, kind, tenant in events:
        if ms > data.end_ms:
            break
        everyone = all(v > 0 for v in waiting.values())
        if kind < 0 and everyone:
            creates[tenant] += 1
        waiting[tenant] += kind
        now_all = all(v > 0 for v in waiting.values())
        if now_all and since is None:
            since = ms
            first = ms if first is None else first
        elif not now_all and since is not None:
            span_ms += ms - since
            last, since = ms, None
    if since is not None:
        span_ms += data.end_ms - since
        last = data.end_ms
    total = sum(creates.values())
    wsum = sum(weights[t] for t in tenants)
    rows = {}
    for t in tenants:
        target = weights[t] / wsum
        share = creates[t] / total if total else None
        rows[t] = {
            "weight": weights[t],
            "creates": creates[t],
            "share": rnd(share, 4),
            "target": rnd(target, 4),
            "deviation_pct": rnd((share / target - 1) * 100, 1) if share is not None else None,
        }
    scale = data.time_scale
    return {
        "creates": total,
        "window_s": rnd(span_ms / 1000 / scale, 1),
        "window_from_s": rnd(((first or data.t0_ms) - data.t0_ms) / 1000 / scale, 1),
        "window_to_s": rnd(((last or data.t0_ms) - data.t0_ms) / 1000 / scale, 1),
        "tenants": rows,
        "max_abs_deviation_pct": max(
            (abs(v["deviation_pct"]) for v in rows.values() if v["deviation_pct"] is not None),
            default=None,
        ),
    }


def waits(data: RunData, tenants: Iterable[str]) -> dict[str, Any]:
    """Admission waits (sim s) of ``tenants``' requests; one not created by the end counts
    with its wait so far, and a percentile that reaches such a value is a lower bound."""
    want = set(tenants)
    scale = data.time_scale
    created: list[float] = []
    open_: list[float] = []
    for q in data.requests:
        if q.tenant not in want:
            continue
        if q.submitted_ms is not None and q.submitted_ms <= data.end_ms:
            created.append((q.submitted_ms - q.enqueued_ms) / 1000 / scale)
        else:
            open_.append(max(0, data.end_ms - q.enqueued_ms) / 1000 / scale)
    values = sorted(created + open_)
    floor = min(open_) if open_ else None

    def pct(q: float) -> dict[str, Any]:
        v = percentile(values, q)
        # Interpolated: it rests on an open wait when its upper neighbour is one (or later).
        upper = values[math.ceil((len(values) - 1) * q / 100)] if values else None
        bound = floor is not None and upper is not None and upper >= floor
        return {"s": rnd(v, 2), "lower_bound": bound}

    return {
        "requests": len(values),
        "created": len(created),
        "not_created": len(open_),
        "p50": pct(50),
        "p95": pct(95),
        "max_s": rnd(max(values), 2) if values else None,
    }


def next_slot(data: RunData, tenants: Iterable[str]) -> dict[str, Any]:
    """Whether ``tenants``' created requests took the first slots that freed after they
    arrived: per request, the creates of other tenants between its arrival and its own create
    (``ahead``: 0 = nobody went before it), and its wait for the first create of anyone after
    its arrival (the wait for a slot to free, which no work-conserving admission can beat
    while the cap is full)."""
    want = set(tenants)
    creates = sorted(
        (q.submitted_ms, q.tenant)
        for q in data.requests
        if q.submitted_ms is not None and q.submitted_ms <= data.end_ms
    )
    times = [t for t, _ in creates]
    ahead: list[int] = []
    first: list[float] = []
    for q in data.requests:
        if q.tenant not in want or q.submitted_ms is None or q.submitted_ms > data.end_ms:
            continue
        lo = bisect.bisect_left(times, q.enqueued_ms)
        hi = bisect.bisect_left(times, q.submitted_ms)
        ahead.append(sum(1 for _, t in creates[lo:hi] if t not in want))
        first.append((times[lo] - q.enqueued_ms) / 1000 / data.time_scale)
    n = len(ahead)
    return {
        "requests": n,
        "first_free_share": rnd(sum(1 for a in ahead if a == 0) / n, 4) if n else None,
        "ahead_p95": rnd(percentile(ahead, 95), 1),
        "ahead_max": max(ahead, default=None),
        "first_create_wait_p50_s": rnd(percentile(first, 50), 2),
        "first_create_wait_p95_s": rnd(percentile(first, 95), 2),
    }


def utilisation(data: RunData) -> dict[str, Any]:
    """Of the samples with someone waiting (from the first at the cap on): the mean share of
    the cap held (``slots``, the target) and the share with every slot held (``fraction``)."""
    started = False
    waiting = full = held_sum = 0
    for _, held, wait in data.samples:
        started = started or held >= data.cap
        if started and wait > 0:
            waiting += 1
            full += held >= data.cap
            held_sum += min(held, data.cap)
    return {
        "samples_waiting": waiting,
        "samples_at_cap": full,
        "fraction": rnd(full / waiting, 4) if waiting else None,
        "slots": rnd(held_sum / waiting / data.cap, 4) if waiting else None,
    }


def hold(data: RunData) -> dict[str, Any]:
    """Mean hold time of the run's finished videos and the slot turnover it gives."""
    holds = [
        (q.finished_ms - q.submitted_ms) / 1000 / data.time_scale
        for q in data.requests
        if q.finished_ms is not None and q.submitted_ms is not None
    ]
    mean = sum(holds) / len(holds) if holds else None
    return {
        "finished": len(holds),
        "mean_hold_s": rnd(mean, 2),
        "slot_turnover_s": rnd(mean / data.cap, 3) if mean is not None else None,
    }


def run_figures(data: RunData) -> dict[str, Any]:
    """The figures every contention run reports beside its own."""
    wall = data.wall_s
    return {
        "run": data.name,
        "side": data.side,
        "requests": len(data.requests),
        "created": sum(q.submitted_ms is not None for q in data.requests),
        "upstream_created": data.upstream_created,
        "utilisation": utilisation(data),
        "hold": hold(data),
        "worker_cpu_s_per_s": rnd(data.worker_cpu_s / (data.end_ms - data.t0_ms) * 1000, 3),
        "wall_s": round(wall, 1),
    }


# --- the part ---------------------------------------------------------------------------


def _plans(cfg: AdmissionConfig) -> dict[str, list[tuple[float, str, int]]]:
    a, b, c = TENANTS
    light: list[tuple[float, str, int]] = []
    at = cfg.light_start_s
    while at <= cfg.window_s - cfg.light_tail_s:
        light += [(at, b, 1), (at + cfg.light_every_s / 2, c, 1)]
        at += cfg.light_every_s
    return {
        "shares": [(0.0, t, cfg.backlog_per_tenant) for t in TENANTS],
        "latency": [(0.0, a, cfg.heavy), *light],
        "alone": light,
    }


async def _run(
    redis_url: str, log_dir: Path, cfg: AdmissionConfig, progress: Any, cache: Path | None
) -> dict[str, Any]:
    h = Harness(redis_url, log_dir, cfg, progress)
    sides = make_sides(cfg, cache)
    plans = _plans(cfg)
    a, b, c = TENANTS
    fair_weights = {w: _weights(w) for w in ("1:1:1", *cfg.weightings) if w}
    out: dict[str, Any] = {
        "config": {
            **asdict(cfg),
            "cost_sizes": list(cfg.cost_sizes),
            "sides": list(cfg.sides),
            "weightings": list(fair_weights),
        },
        "sides": {s.key: {"label": s.label, "git": s.git} for s in sides},
        "tenants": list(TENANTS),
        "shares": {},
        "latency": {},
        "cost": {},
    }
    try:
        # Scenario by scenario, each side in turn: a change in the machine's load (other work
        # shares it) hits both sides alike.
        for wname, weights in fair_weights.items():
            for side in sides:
                if side.key == "fcfs" and wname != "1:1:1":
                    continue  # the baseline has no weights: its 1:1:1 run is read for both
                progress(f"admission {side.key}: shares {wname}")
                data = await h.timed_run(
                    side, f"shares-{wname.replace(':', '')}", weights=weights, plan=plans["shares"]
                )
                fig = run_figures(data)
                targets = fair_weights if side.key == "fcfs" else {wname: weights}
                fig["by_weights"] = {n: shares(data, TENANTS, wt) for n, wt in targets.items()}
                out["shares"].setdefault(wname, {})[side.key] = fig
                progress(f"  -> {_shares_line(fig)}")
        for kind in ("latency", "alone"):
            for side in sides:
                progress(f"admission {side.key}: {kind}")
                data = await h.timed_run(
                    side, kind, weights=dict.fromkeys(TENANTS, 1.0), plan=plans[kind]
                )
                fig = run_figures(data)
                fig["light"] = waits(data, (b, c))
                fig["by_tenant"] = {t: waits(data, (t,)) for t in (b, c)}
                if kind == "latency":
                    fig["heavy"] = waits(data, (a,))
                    fig["light_next_slot"] = next_slot(data, (b, c))
                out["latency"].setdefault(side.key, {})[kind] = fig
                lt = fig["light"]
                progress(
                    f"  -> light waits p50 {lt['p50']['s']} s, p95 {lt['p95']['s']} s "
                    f"({lt['not_created']} of {lt['requests']} not created); slots held "
                    f"{fig['utilisation'].get('slots')}, all held {fig['utilisation']['fraction']}"
                    f"; turnover {fig['hold']['slot_turnover_s']} s"
                )
        for side in sides:
            progress(f"admission {side.key}: backlog cost at {list(cfg.cost_sizes)} waiting")
            out["cost"][side.key] = await h.cost_run(side)
    finally:
        h.close()
    out["summary"] = summarize(out)
    return out


def _weights(text: str) -> dict[str, float]:
    """``"3:1:1"`` as each tenant's weight."""
    parts = [float(x) for x in text.split(":")]
    if len(parts) != len(TENANTS) or min(parts) <= 0:
        raise ValueError(f"weights {text!r}: one positive weight per tenant, as 3:1:1")
    return dict(zip(TENANTS, parts, strict=True))


def _shares_line(fig: dict[str, Any]) -> str:
    parts = []
    for wname, sh in fig["by_weights"].items():
        pcts = "/".join(f"{(r['share'] or 0) * 100:.1f}" for r in sh["tenants"].values())
        parts.append(f"{wname}: {pcts} % of {sh['creates']} creates over {sh['window_s']} s")
    u = fig["utilisation"]
    return "; ".join(parts) + f"; slots held {u.get('slots')}, all held {u['fraction']}"


#: Issue 25's targets.
SHARE_TOLERANCE_PCT = 5.0
UTILISATION_TARGET = 0.98
#: Backlog cost "the same" at the larger size: within this factor of the smaller size's.
COST_SAME_FACTOR = 1.25
#: ...or within this much of it, for figures near zero (script calls/s, worker CPU-s/s).
COST_SLACK = {"script_calls_per_s": 5.0, "worker_cpu_s_per_s": 0.02}
#: Timers this late at a window's end: the side is falling behind (on a machine shared with
#: other work its processes may be starved of CPU before they show saturation).
BEHIND_S = 1.0
#: CPU seconds per second (of one core: Redis' main thread, or per worker) past which a side
#: is saturated.
SATURATED_CPU_S_PER_S = 0.9


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    """Per side: the headline figures and whether each target holds."""
    summary: dict[str, Any] = {}
    for side in out["sides"]:
        s: dict[str, Any] = {}
        for wname in ("1:1:1", "3:1:1"):
            src = out["shares"].get(wname, {}).get(side) or out["shares"].get("1:1:1", {}).get(side)
            if src and wname in src["by_weights"]:
                dev = src["by_weights"][wname]["max_abs_deviation_pct"]
                s[f"shares_{wname}_max_deviation_pct"] = dev
                s[f"shares_{wname}_met"] = dev is not None and dev <= SHARE_TOLERANCE_PCT
        lat = out["latency"].get(side)
        if lat:
            with_a, alone = lat["latency"], lat["alone"]
            turnover = with_a["hold"]["slot_turnover_s"]
            p95, p95_alone = with_a["light"]["p95"], alone["light"]["p95"]
            s["light_p95_s"] = p95["s"]
            s["light_p95_lower_bound"] = p95["lower_bound"]
            s["light_p95_alone_s"] = p95_alone["s"]
            s["slot_turnover_s"] = turnover
            if None not in (p95["s"], p95_alone["s"], turnover):
                excess = p95["s"] - p95_alone["s"]
                s["light_p95_excess_s"] = rnd(excess, 2)
                s["light_p95_met"] = excess <= turnover
        figs = [
            fig["utilisation"]
            for fig in [
                *(v.get(side) for v in out["shares"].values()),
                (lat or {}).get("latency"),
            ]
            if fig and fig["utilisation"]["fraction"] is not None
        ]
        if figs:
            # Results written before the mean share held was measured: the full-sample share.
            slots = [u.get("slots", u["fraction"]) for u in figs]
            s["utilisation_min"] = min(slots)
            s["utilisation_all_held_min"] = min(u["fraction"] for u in figs)
            s["utilisation_met"] = min(slots) >= UTILISATION_TARGET
        cost = (out["cost"].get(side) or {}).get("steps") or []
        if len(cost) >= 2:
            lo, hi = cost[0], cost[-1]
            same = []
            for key, slack in COST_SLACK.items():
                s[f"cost_{key}_ratio"] = rnd(hi[key] / lo[key], 2) if lo[key] else None
                same.append(hi[key] <= max(lo[key] * COST_SAME_FACTOR, lo[key] + slack))
            # A saturated side's rate is flat because the work queues up instead (its timers
            # fall behind): flat is then no evidence of a free backlog.
            s["cost_saturated"] = any(
                st.get("redis_cpu_s_per_s", 0) >= SATURATED_CPU_S_PER_S
                or st["worker_cpu_s_per_s"] >= SATURATED_CPU_S_PER_S * out["config"]["workers"]
                or st.get("oldest_due_age_s", 0) > BEHIND_S
                for st in cost
            )
            s["cost_timers_due"] = [st.get("timers_due") for st in cost]
            s["cost_met"] = not s["cost_saturated"] and all(same)
        summary[side] = s
    return summary


def run_admission(
    redis_url: str,
    log_dir: Path,
    cfg: AdmissionConfig,
    *,
    progress: Any = print,
    cache: Path | None = None,
) -> dict[str, Any]:
    """The whole part: every run of every side, then the summary (``results.json``'s
    ``admission`` section)."""
    return asyncio.run(_run(redis_url, log_dir, cfg, progress, cache))
