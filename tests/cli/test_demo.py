"""`genqueue demo`: the full run as real processes, its summary arithmetic, and its clean-up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from genqueue.demo import DemoOptions, counts_line
from genqueue.demo_report import percentile, summarize
from genqueue.local_redis import free_port
from genqueue.producer.keys import Field
from genqueue.producer.record import RequestView
from genqueue.producer.stats import Stats

DEMO = [sys.executable, "-m", "genqueue", "demo"]


def _env(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENQUEUE_")}
    env["PYTHONUNBUFFERED"] = "1"
    for k, v in overrides.items():
        if v is not None:
            env[k] = v
    return env


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_demo_runs_every_video_to_the_end_and_balances_the_books(redis_url: str) -> None:
    """A 20-video demo with 2 workers on the test Redis exits 0: every video completed or
    failed, none lost, and the cost genqueue recorded equals what the simulator billed."""
    result = subprocess.run(
        [*DEMO, "--videos", "20", "--workers", "2", "--time-scale", "0.01", "--json"],
        env=_env(GENQUEUE_REDIS_URL=redis_url),
        capture_output=True,
        timeout=140,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    summary = json.loads(result.stdout)
    assert summary["videos"] == 20
    assert summary["completed"] + summary["failed"] == 20
    assert summary["lost"] == 0
    assert summary["cost_recorded_micro_usd"] == summary["cost_billed_micro_usd"]
    assert summary["cost_in_records_micro_usd"] == summary["cost_billed_micro_usd"]
    assert summary["upstream_jobs_created"] == 20
    assert summary["duplicate_creations"] == 0
    assert summary["latency_unit"] == "simulated seconds"
    assert summary["latency_p50_s"] is not None
    assert summary["ok"] is True
    assert summary["key_prefix"].startswith("genqueue-demo-")


def test_demo_without_any_redis_exits_1_saying_how_to_get_one(tmp_path: Path) -> None:
    """With GENQUEUE_REDIS_URL unreachable and no redis-server on PATH the demo exits 1 with a
    message saying how to get Redis."""
    result = subprocess.run(
        [*DEMO, "--videos", "1"],
        env=_env(GENQUEUE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PATH=str(tmp_path)),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "redis-server" in err and "GENQUEUE_REDIS_URL" in err
    assert "Traceback" not in err


def test_demo_with_a_bad_setting_exits_1_before_starting_anything(redis_url: str) -> None:
    """An unusable GENQUEUE_* value stops the demo with exit 1 and a configuration error."""
    result = subprocess.run(
        [*DEMO, "--videos", "1"],
        env=_env(GENQUEUE_REDIS_URL=redis_url, GENQUEUE_POLL_FACTOR="0.5"),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "configuration error" in err and "poll_factor" in err
    assert "Traceback" not in err


def _processes_with(marker: bytes) -> list[int]:
    """Pids of live processes whose command line or environment contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker in blob and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("sig", "private_redis", "sigint"),
    [
        (signal.SIGINT, False, signal.SIG_DFL),
        (signal.SIGTERM, True, signal.SIG_DFL),
        (signal.SIGTERM, False, signal.SIG_IGN),  # started by nohup or `&` in a script
    ],
)
def test_interrupted_demo_stops_everything_it_started(
    redis_url: str, sig: signal.Signals, private_redis: bool, sigint: signal.Handlers
) -> None:
    """SIGINT or SIGTERM to a running demo stops its workers, simulator and private Redis and
    exits 130, also when the demo was started with SIGINT ignored."""
    seed = str(900_000 + free_port())  # marks this run's simulator command line
    proc = subprocess.Popen(
        [*DEMO, "--videos", "40", "--time-scale", "1", "--seed", seed, "--json"],
        env=_env(GENQUEUE_REDIS_URL=None if private_redis else redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # Set explicitly: the child would otherwise inherit however pytest itself was started.
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )
    assert proc.stderr is not None
    seen = []
    try:
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            seen.append(line)
            if "ready after" in line:
                break
        text = "".join(seen)
        m = re.search(r"key prefix (genqueue-demo-[\w-]+)", text)
        assert m, text
        prefix = m.group(1)
        markers = [f"GENQUEUE_KEY_PREFIX={prefix}".encode(), f"--seed\0{seed}\0".encode()]
        port = re.search(r"private redis-server on port (\d+)", text)
        assert bool(port) == private_redis, text
        if port:
            markers.append(f"127.0.0.1:{port.group(1)}".encode())  # its process title
        assert all(_processes_with(m) for m in markers), "children should be running"
        proc.send_signal(sig)
        rest = proc.stderr.read().decode(errors="replace")
        assert proc.wait(timeout=30) == 130, text + rest
    finally:
        if proc.poll() is None:  # a failed assertion above: still let the demo clean up
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stderr.close()
    assert "interrupted" in rest
    assert "Traceback" not in rest, rest
    for marker in markers:
        assert _processes_with(marker) == [], marker


# --- the summary's arithmetic ----------------------------------------------------------------


def _view(
    rid: str,
    status: str,
    *,
    latency_s: float = 10.0,
    lag_s: float = 1.0,
    cost: int | None = None,
    polls: int = 3,
) -> RequestView:
    enq_ms = 1_000_000
    fin_ms = enq_ms + int(latency_s * 1000)
    raw = {
        Field.ID: rid,
        Field.STATUS: status,
        Field.MODEL: "m",
        Field.ENQUEUED_AT_MS: str(enq_ms),
        Field.POLLS: str(polls),
    }
    if status in ("completed", "failed"):
        raw[Field.FINISHED_AT_MS] = str(fin_ms)
        raw[Field.UPSTREAM_DONE_AT] = str(fin_ms / 1000 - lag_s)
    if cost is not None:
        raw[Field.COST_MICRO_USD] = str(cost)
    return RequestView.from_hash(raw)


def _summary(views: dict[str, RequestView], ids: list[str], recorded: int, billed: int):  # type: ignore[no-untyped-def]
    return summarize(
        ids,
        views,
        cost_recorded_micro_usd=recorded,
        sim_stats={
            "jobs_created": len(views),
            "duplicate_creations": 0,
            "billed_micro_usd": billed,
            "requests": {"GET /v2/videos/{id}": {"200": 3 * len(views), "503": 5}},
        },
        time_scale=0.1,
        wall_s=12.0,
        workers=2,
        seed=1,
        key_prefix="p",
        redis="r",
    )


def test_percentile_interpolates_between_ranks() -> None:
    """The percentile helper interpolates linearly and returns None for no data."""
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([float(i) for i in range(101)], 0.95) == 95.0


def test_summary_reports_simulated_seconds_and_balanced_books() -> None:
    """Latencies are divided by the time scale; matching costs and no lost video make it ok."""
    views = {
        "a": _view("a", "completed", latency_s=10.0, lag_s=1.0, cost=280_000),
        "b": _view("b", "completed", latency_s=20.0, lag_s=2.0, cost=490_000),
        "c": _view("c", "failed", latency_s=30.0, lag_s=3.0),
    }
    s = _summary(views, ["a", "b", "c"], 770_000, 770_000)
    assert (s.completed, s.failed, s.lost) == (2, 1, 0)
    assert s.latency_p50_s == pytest.approx(200.0)
    assert s.detection_lag_p50_s == pytest.approx(20.0)
    assert s.polls_mean == 3.0
    assert s.upstream_polls_mean == 3.0
    assert s.ok and s.problems == []
    assert s.to_json_dict()["cost_billed_usd"] == "0.770000"


def test_summary_counts_missing_and_unfinished_videos_as_lost() -> None:
    """A video whose record is missing or not terminal at the end is lost and fails the run."""
    views = {
        "a": _view("a", "completed", cost=1),
        "b": _view("b", "in_progress"),
    }
    s = _summary(views, ["a", "b", "gone"], 1, 1)
    assert s.lost == 2
    assert set(s.lost_ids) == {"b", "gone"}
    assert not s.ok


def test_summary_flags_a_cost_mismatch() -> None:
    """Recorded cost different from the billed cost fails the run and says both figures."""
    views = {"a": _view("a", "completed", cost=280_000)}
    s = _summary(views, ["a"], 280_000, 560_000)
    assert not s.cost_matches and not s.ok
    assert "0.56" in s.problems[0] and "0.28" in s.problems[0]


def test_counts_line_shows_every_live_status_and_outcomes() -> None:
    """The progress line names each non-terminal status and the completed/failed counts."""
    stats = Stats(
        requests_by_status={"pending": 1, "submitting": 2, "queued": 3, "in_progress": 4},
        tracking=0,
        active_upstream=7,
        inflight=10,
        queue_ready=1,
        queue_deferred=9,
        finished={("m", "completed"): 5, ("m", "failed"): 1},
        cost_micro_usd={"m": 5},
        paused={"reason": "invalid_api_key", "code": "401"},
    )
    text = counts_line(stats).plain
    for part in ("pending 1", "submitting 2", "queued 3", "in_progress 4", "completed 5"):
        assert part in text
    assert "failed 1" in text
    assert "cancelled" not in text
    assert "PAUSED" in text


def test_default_timeout_is_generous_in_simulated_seconds() -> None:
    """Without --timeout the demo waits 1800 simulated seconds, and at least a minute."""
    assert DemoOptions(time_scale=0.125).effective_timeout_s == pytest.approx(225.0)
    assert DemoOptions(time_scale=0.001).effective_timeout_s == 60.0
    assert DemoOptions(timeout_s=5.0).effective_timeout_s == 5.0
