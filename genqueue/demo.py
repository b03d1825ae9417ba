"""``genqueue demo``: the whole system, as real processes, against the simulator.

Redis (``GENQUEUE_REDIS_URL`` if it answers, else a private ``redis-server``), the simulator
and N workers run as separate processes; this process submits the videos with the async
client, shows progress by status, then checks the books: every video finished, and the cost
genqueue recorded equals what the simulator billed. Everything it started is stopped on the
way out (SIGTERM, then SIGKILL after a grace period), also on Ctrl-C and on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import redis
import redis.asyncio
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from genqueue.demo_report import DemoSummary, summarize, summary_table
from genqueue.local_redis import LocalRedis, free_port, redis_reachable
from genqueue.logs import scrub
from genqueue.producer import AsyncClient, RequestView, Settings, Stats
from genqueue.producer.connections import sync_redis
from genqueue.producer.keys import NON_TERMINAL, TERMINAL
from genqueue.producer.record import with_id
from genqueue.producer.settings import redact_url
from genqueue.simulator.config import DEFAULT_MODELS
from genqueue.terminal import inert_markup
from genqueue.worker.config import WorkerConfig

#: Wall seconds per simulated second. At 0.125 the default run (200 videos over every simulated
#: model, the slowest a ~4-minute median) takes about a minute on a 2-core machine.
_T = TypeVar("_T")

DEFAULT_TIME_SCALE = 0.125
DEMO_API_KEY = "demo-key"
#: Idle workers ask Redis for due timers this often (wall seconds): small, so detection lag
#: measured in simulated seconds stays honest at small time scales.
DEMO_POLL_DELAY_S = 0.02
#: Demo records expire after two days, not a week (they must outlast webhook retries).
DEMO_RETENTION_S = 2 * 86400  # must outlast the webhook retry window (a day)
STOP_GRACE_S = 10.0
STARTUP_TIMEOUT_S = 30.0
#: Default wait for all videos, in simulated seconds (about 2.5x the slowest model's tail).
DEFAULT_TIMEOUT_SIM_S = 1800.0
MIN_TIMEOUT_S = 60.0
_REFRESH_S = 0.25
_PLAIN_EVERY_S = 5.0
_SUBMIT_CONCURRENCY = 50

_SUBJECTS = (
    "a red fox",
    "a lighthouse keeper",
    "two astronauts",
    "a paper boat",
    "a street musician",
    "a hummingbird",
    "a vintage tram",
    "a snow leopard",
)
_ACTIONS = (
    "crossing a frozen lake at dawn",
    "in a rainy neon alley, slow dolly shot",
    "under a sky full of lanterns",
    "in the style of a 1970s documentary",
    "drifting through fog, cinematic lighting",
    "on a windswept cliff, aerial view",
)


class DemoError(Exception):
    """The demo could not run (no Redis, a process that would not start...)."""


@dataclass(frozen=True)
class DemoOptions:
    videos: int = 200
    workers: int = 2
    time_scale: float = DEFAULT_TIME_SCALE
    seed: int = 1
    #: Wall seconds to wait for every video (None: DEFAULT_TIMEOUT_SIM_S, at least 60).
    timeout_s: float | None = None
    as_json: bool = False

    @property
    def effective_timeout_s(self) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        return max(MIN_TIMEOUT_S, DEFAULT_TIMEOUT_SIM_S * self.time_scale)


# --- child processes ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM if the demo dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class Child:
    """A subprocess whose output goes to a log file."""

    def __init__(
        self, name: str, args: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The last lines of its log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close_log(self) -> None:
        self._log.close()


def stop_children(children: Sequence[Child], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every live child, wait up to ``grace_s`` in all, then SIGKILL the rest."""
    # A second Ctrl-C or SIGTERM must not cut the clean-up short and orphan the children.
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for c in children:
            if c.alive:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for c in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for c in children:
            if c.alive:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
                c.proc.wait()
    finally:
        for c in children:
            c.close_log()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _dead_message(child: Child) -> str:
    return (
        f"{child.name} exited with code {child.proc.returncode}; last lines of "
        f"{child.log_path}:\n{child.tail()}"
    )


# --- set-up ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _redis(console: Console) -> Iterator[tuple[str, str]]:
    """(url, description): GENQUEUE_REDIS_URL if it answers, else a private redis-server."""
    url = os.environ.get("GENQUEUE_REDIS_URL", "")
    if url:
        if redis_reachable(url, 1.0):
            yield url, redact_url(url)
            return
        console.print(
            f"[yellow]GENQUEUE_REDIS_URL ({inert_markup(redact_url(url))}) does not answer; "
            "starting a private redis-server instead[/yellow]"
        )
    if shutil.which("redis-server") is None:
        raise DemoError(
            "no Redis: GENQUEUE_REDIS_URL is "
            + ("not reachable" if url else "not set")
            + " and redis-server is not on PATH. Install Redis (e.g. `apt-get install "
            "redis-server` or `brew install redis`), or run one (`docker run -p 6379:6379 "
            "redis:7`) and set GENQUEUE_REDIS_URL=redis://localhost:6379/0"
        )
    server = LocalRedis()
    try:
        server.start()
    except (RuntimeError, TimeoutError, OSError) as exc:
        server.close()
        raise DemoError(f"could not start redis-server: {exc}") from None
    try:
        yield server.url, f"private redis-server on port {server.port}"
    finally:
        server.close()


def _wait_for_simulator(child: Child, url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.alive:
            raise DemoError(_dead_message(child))
        try:
            if httpx.get(f"{url}/_sim/stats", timeout=1.0).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise DemoError(f"the simulator did not answer at {url} within {STARTUP_TIMEOUT_S:g} s")


def _health_key(prefix: str, worker_name: str) -> str:
    # arq's health-check key as worker.app.build_worker names it: written once the worker
    # has finished its start-up and polls the queue.
    return f"{prefix}:health:{worker_name}"


def _wait_for_workers(
    redis_url: str, prefix: str, workers: Sequence[tuple[str, Child]], console: Console
) -> None:
    client = sync_redis(redis_url, socket_connect_timeout=5)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        waiting = list(workers)
        while waiting and time.monotonic() < deadline:
            for name, child in list(waiting):
                if not child.alive:
                    raise DemoError(_dead_message(child))
                if client.exists(_health_key(prefix, name)):
                    waiting.remove((name, child))
            if waiting:
                time.sleep(0.05)
        if waiting:
            console.print(
                f"[yellow]{len(waiting)} worker(s) not ready after {STARTUP_TIMEOUT_S:g} s; "
                "submitting anyway[/yellow]"
            )
    finally:
        client.close()


# --- the run --------------------------------------------------------------------------------


def demo_request(i: int, rng: random.Random) -> dict[str, Any]:
    """The i-th demo video: models in turn, a made-up prompt."""
    models = sorted(DEFAULT_MODELS)
    return {
        "model": models[i % len(models)],
        "prompt": f"{rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)}",
        "metadata": {"source": "genqueue-demo", "index": str(i)},
    }


@dataclass
class _Outcome:
    ids: list[str]
    views: dict[str, RequestView]
    stats: Stats
    wall_s: float


_STATUS_STYLE = {
    "pending": "white",
    "submitting": "cyan",
    "queued": "blue",
    "in_progress": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "expired": "magenta",
}


def counts_line(stats: Stats) -> Text:
    """Requests by status, non-terminal then terminal (cancelled/expired only if any)."""
    line = Text()
    done = stats.finished_by_outcome
    items = [(s, stats.requests_by_status.get(s, 0)) for s in NON_TERMINAL]
    items += [
        (s, done.get(s, 0)) for s in TERMINAL if done.get(s, 0) or s in ("completed", "failed")
    ]
    for i, (status, n) in enumerate(items):
        if i:
            line.append(" · ", style="dim")
        line.append(f"{status} ", style=_STATUS_STYLE.get(status, ""))
        line.append(str(n), style="bold")
    if stats.paused:
        line.append(f" · creates PAUSED ({stats.paused.get('reason', '?')})", style="bold red")
    return line


async def _fetch_views(client: AsyncClient, ids: Sequence[str]) -> dict[str, RequestView]:
    keys = client.settings.keys
    async with client.redis.pipeline(transaction=False) as pipe:
        for request_id in ids:
            pipe.hgetall(keys.record(request_id))
        replies = await pipe.execute()
    return {
        rid: RequestView.from_hash(with_id(rid, raw))
        for rid, raw in zip(ids, replies, strict=True)
        if raw
    }


async def _drive(
    opts: DemoOptions, settings: Settings, workers: Sequence[Child], console: Console
) -> _Outcome:
    """Submit the videos, show progress until all finish (or the timeout), read the records."""
    rng = random.Random(opts.seed)
    requests = [demo_request(i, rng) for i in range(opts.videos)]
    timeout_s = opts.effective_timeout_s
    async with AsyncClient(settings) as client:
        sem = asyncio.Semaphore(_SUBMIT_CONCURRENCY)

        async def submit(req: dict[str, Any]) -> str:
            async with sem:
                return await client.submit(req)

        t0 = time.monotonic()
        deadline = t0 + timeout_s
        ids = list(await asyncio.gather(*(submit(r) for r in requests)))
        finished_at: list[float] = []
        waits = asyncio.gather(
            *(client.wait(i, max(0.1, deadline - time.monotonic())) for i in ids),
            return_exceptions=True,
        )
        waits.add_done_callback(lambda _f: finished_at.append(time.monotonic()))
        try:
            await _watch(client, opts, waits, workers, t0, deadline, console)
        finally:
            if not waits.done():
                waits.cancel()
                await asyncio.wait({waits})  # never absorbs a cancel of this task itself
            if not waits.cancelled():
                # A cancelled gather finishes with CancelledError as its *exception*: read it,
                # or asyncio logs "exception was never retrieved" with a traceback.
                waits.exception()
        wall_s = (finished_at[0] if finished_at else time.monotonic()) - t0
        views = await _fetch_views(client, ids)
        stats = await client.stats()
    return _Outcome(ids, views, stats, wall_s)


async def _watch(
    client: AsyncClient,
    opts: DemoOptions,
    waits: asyncio.Future[Any],
    workers: Sequence[Child],
    t0: float,
    deadline: float,
    console: Console,
) -> None:
    """Live progress by status until every wait returned, the deadline passed, or every
    worker died; a worker that dies has its log tail printed."""
    live = console.is_terminal
    progress = Progress(
        TextColumn("[bold]videos"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("", total=opts.videos)
    reported: set[int] = set()
    last_plain = 0.0
    display = Live(console=console, refresh_per_second=8, transient=False)
    with display if live else contextlib.nullcontext():
        while True:
            stats = await client.stats()
            elapsed = time.monotonic() - t0
            finished = sum(stats.finished_by_outcome.values())
            counts = counts_line(stats)
            progress.update(
                task, completed=finished, description=f"{elapsed / opts.time_scale:,.0f} sim s"
            )
            if live:
                display.update(Group(progress, counts))
            elif elapsed - last_plain >= _PLAIN_EVERY_S or waits.done():
                last_plain = elapsed
                console.print(
                    Text(
                        f"[{elapsed:6.1f} s wall, {elapsed / opts.time_scale:,.0f} sim s] "
                        f"{finished}/{opts.videos} finished: "
                    )
                    + counts
                )
            for i, child in enumerate(workers):
                if i not in reported and not child.alive:
                    reported.add(i)
                    console.print(f"[red]{_dead_message(child)}[/red]", highlight=False)
            if waits.done():
                return
            if len(reported) == len(workers):
                raise DemoError("every worker died; see the log lines above")
            if time.monotonic() >= deadline:
                console.print(
                    f"[red]timed out after {deadline - t0:.0f} s with "
                    f"{opts.videos - finished} video(s) unfinished[/red]"
                )
                return
            await asyncio.wait({waits}, timeout=_REFRESH_S)


def _sim_stats(url: str) -> dict[str, Any]:
    reply = httpx.get(f"{url}/_sim/stats", timeout=5.0)
    reply.raise_for_status()
    data: dict[str, Any] = reply.json()
    return data


def _sigterm_as_sigint(_signum: int, _frame: object) -> None:
    # SIGTERM takes Ctrl-C's path: asyncio.run cancels the main task, then KeyboardInterrupt
    # unwinds through the clean-up. A demo started with SIGINT ignored (nohup, `&` in a
    # script) has no such path, and raising SIGINT would do nothing: raise the interrupt here.
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)
    else:
        raise KeyboardInterrupt


def _run_until_signalled(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` on a fresh event loop; SIGTERM (and SIGINT) cancel it there and then
    surface as ``KeyboardInterrupt`` *outside* the loop.

    Raising from a signal handler at an arbitrary point inside the loop (the path a demo
    started with SIGINT ignored took) could land inside a task or in the loop's own
    machinery, which then logged "Task exception was never retrieved" with a traceback.
    Signals are held while the loop is built, so none lands in a half-made loop.
    """
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        loop = asyncio.new_event_loop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    interrupted = False

    async def guarded() -> _T:
        nonlocal interrupted
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        loop.add_signal_handler(signal.SIGTERM, stop)
        if callable(signal.getsignal(signal.SIGINT)):
            loop.add_signal_handler(signal.SIGINT, stop)
        return await main

    try:
        task = loop.create_task(guarded())
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGTERM, _sigterm_as_sigint)
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def run_demo(opts: DemoOptions, *, out: Console | None = None) -> int:
    """Run the demo; returns the exit code (0: nothing lost and cost recorded == billed)."""
    err = Console(stderr=True, soft_wrap=True)
    out = out or Console()
    started = time.monotonic()
    previous_term = signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    log_dir = Path(tempfile.mkdtemp(prefix="genqueue-demo-"))
    keep_logs = True
    try:
        with contextlib.ExitStack() as stack:
            redis_url, redis_desc = stack.enter_context(_redis(err))
            prefix = f"genqueue-demo-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            sim_port = free_port()
            sim_url = f"http://127.0.0.1:{sim_port}"
            scale = f"{opts.time_scale:g}"
            worker_env = {
                **base_env,
                "GENQUEUE_REDIS_URL": redis_url,
                "GENQUEUE_KEY_PREFIX": prefix,
                "GENQUEUE_UPSTREAM_URL": sim_url,
                "TOGETHER_API_KEY": DEMO_API_KEY,
                "GENQUEUE_TIME_SCALE": scale,
                "GENQUEUE_POLL_DELAY_S": str(DEMO_POLL_DELAY_S),
                "GENQUEUE_RETENTION_S": str(DEMO_RETENTION_S),
                "GENQUEUE_LOG_FORMAT": "json",
            }
            try:
                settings = Settings.from_env(worker_env)
                WorkerConfig.from_env(worker_env)
            except ValueError as exc:
                raise DemoError(f"configuration error: {exc}") from None
            err.print(
                f"genqueue demo: {opts.videos} videos, {opts.workers} workers, time scale "
                f"{scale} (1 wall s = {1 / opts.time_scale:.3g} simulated s); Redis: "
                f"{redis_desc}, key prefix {prefix}; logs in {log_dir}",
                highlight=False,
            )
            children: list[Child] = []
            stack.callback(stop_children, children)
            sim_args = [
                *(sys.executable, "-m", "genqueue", "simulator"),
                *("--host", "127.0.0.1", "--port", str(sim_port)),
                *("--time-scale", scale, "--seed", str(opts.seed), "--api-key", DEMO_API_KEY),
            ]
            sim = Child("simulator", sim_args, base_env, log_dir / "simulator.log")
            # Stopped last: workers first, so none is cut off mid-request.
            children.append(sim)
            _wait_for_simulator(sim, sim_url)

            workers: list[tuple[str, Child]] = []
            for i in range(1, opts.workers + 1):
                name = f"demo-worker-{i}"
                child = Child(
                    name,
                    [sys.executable, "-m", "genqueue", "worker"],
                    {**worker_env, "GENQUEUE_WORKER_NAME": name},
                    log_dir / f"{name}.log",
                )
                workers.append((name, child))
                children.insert(0, child)
            _wait_for_workers(redis_url, prefix, workers, err)
            err.print(
                f"ready after {time.monotonic() - started:.1f} s; submitting", highlight=False
            )

            outcome = _run_until_signalled(_drive(opts, settings, [c for _, c in workers], err))
            summary = summarize(
                outcome.ids,
                outcome.views,
                cost_recorded_micro_usd=outcome.stats.total_cost_micro_usd,
                sim_stats=_sim_stats(sim_url),
                time_scale=opts.time_scale,
                wall_s=outcome.wall_s,
                workers=opts.workers,
                seed=opts.seed,
                key_prefix=prefix,
                redis=redis_desc,
            )
        # Everything is stopped here (the ExitStack closed).
        _report(summary, opts, out, err, time.monotonic() - started, redis_url)
        keep_logs = not summary.ok
        return 0 if summary.ok else 1
    except DemoError as exc:
        err.print(f"[red]genqueue demo: {inert_markup(scrub(str(exc)))}[/red]", highlight=False)
        return 1
    except (redis.RedisError, httpx.HTTPError, OSError) as exc:
        err.print(
            f"[red]genqueue demo: {type(exc).__name__}: {inert_markup(scrub(str(exc)))}[/red]",
            highlight=False,
        )
        return 1
    except KeyboardInterrupt:
        err.print("genqueue demo: interrupted; everything it started is stopped")
        keep_logs = False
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if keep_logs and any(log_dir.iterdir()):
            err.print(f"logs kept in {log_dir}", highlight=False)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


def _report(
    summary: DemoSummary,
    opts: DemoOptions,
    out: Console,
    err: Console,
    total_s: float,
    redis_url: str,
) -> None:
    if opts.as_json:
        import json

        out.file.write(json.dumps(summary.to_json_dict(), indent=2) + "\n")
        out.file.flush()
    else:
        out.print(summary_table(summary))
        if summary.ok:
            out.print(
                "[green]OK[/green]: every video finished, none created twice, and the cost "
                "genqueue recorded equals what the simulator billed."
            )
        else:
            out.print("[red]FAILED[/red]: " + "; ".join(summary.problems))
    err.print(
        f"demo took {total_s:.1f} s in all (start-up and shut-down included)", highlight=False
    )
