"""The acceptance check as real processes: `genqueue simulator`, `genqueue worker` and
`genqueue submit --wait` talking over HTTP and the test Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from genqueue.local_redis import free_port
from genqueue.producer.settings import Settings
from tests.processes import stop_process, wait_until

MODEL = "minimax/video-01-director"
TIME_SCALE = "0.01"

pytestmark = pytest.mark.slow


@pytest.fixture
def simulator_url(tmp_path: Path) -> Iterator[str]:
    """`genqueue simulator` as a subprocess on a free port (no failures, small time scale)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "simulator.log").open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "genqueue", "simulator", "--port", str(port)),
            *("--time-scale", TIME_SCALE, "--seed", "7", "--failure-share", "0"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "simulator.log").read_text()
        try:
            return httpx.get(f"{url}/_sim/stats", timeout=1).is_success
        except httpx.TransportError:
            return False

    try:
        wait_until(up, 20, "the simulator")
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def child_env(settings: Settings, simulator_url: str) -> dict[str, str]:
    """Environment of the worker and CLI processes: the test Redis, prefix and simulator."""
    return {
        **os.environ,
        "GENQUEUE_REDIS_URL": settings.redis_url,
        "GENQUEUE_KEY_PREFIX": settings.key_prefix,
        "GENQUEUE_UPSTREAM_URL": simulator_url,
        "TOGETHER_API_KEY": "test-key",
        "GENQUEUE_TIME_SCALE": TIME_SCALE,
        "GENQUEUE_POLL_DELAY_S": "0.02",
        "GENQUEUE_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def worker(child_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`genqueue worker` as a subprocess (stopped with SIGTERM if the test did not)."""
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "genqueue", "worker"],
            env=child_env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield proc
        finally:
            stop_process(proc)


def _sim_stats(url: str) -> dict[str, object]:
    data: dict[str, object] = httpx.get(f"{url}/_sim/stats", timeout=5).json()
    return data


@pytest.mark.timeout(90)
def test_submit_wait_json_through_real_processes(
    worker: subprocess.Popen[bytes], child_env: dict[str, str], simulator_url: str
) -> None:
    """`genqueue submit --wait --json` against a worker and simulator processes prints a
    completed record with a video URL and the cost the simulator billed."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "genqueue", "submit", "--model", MODEL),
            *("--prompt", "a lighthouse at dusk", "--param", "width=1366", "--param", "height=768"),
            *("--wait", "--timeout", "60", "--json"),
        ],
        env=child_env,
        capture_output=True,
        timeout=80,
    )
    assert result.returncode == 0, result.stderr.decode()
    record = json.loads(result.stdout)
    assert record["status"] == "completed"
    assert record["video_url"].startswith(simulator_url)
    sim = _sim_stats(simulator_url)
    assert sim["jobs_created"] == 1
    assert record["cost_micro_usd"] == sim["billed_micro_usd"] > 0
    assert Decimal(record["cost_usd"]) == Decimal(str(sim["billed_usd"]))
    assert worker.poll() is None


@pytest.mark.timeout(60)
def test_worker_exits_0_on_sigterm(
    worker: subprocess.Popen[bytes], child_env: dict[str, str], tmp_path: Path
) -> None:
    """A running `genqueue worker` stops cleanly (exit code 0, no traceback) on SIGTERM."""
    import redis

    client = redis.Redis.from_url(child_env["GENQUEUE_REDIS_URL"])
    prefix = child_env["GENQUEUE_KEY_PREFIX"]
    try:
        # arq writes its health-check key once the worker is up and polling.
        wait_until(lambda: bool(client.keys(f"{prefix}:health:*")), 30, "the worker")
    finally:
        client.close()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log
    assert "worker_stopped" in log


@pytest.mark.timeout(60)
def test_simulator_exits_0_on_sigterm(tmp_path: Path) -> None:
    """`genqueue simulator` answers /_sim/stats and stops with exit code 0 on SIGTERM."""
    port = free_port()
    with (tmp_path / "sim.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "genqueue", "simulator", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def up() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/_sim/stats", timeout=1).is_success
                except httpx.TransportError:
                    return False

            wait_until(up, 20, "the simulator")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            stop_process(proc)
    assert "Traceback" not in (tmp_path / "sim.log").read_text()


@pytest.mark.timeout(60)
def test_worker_refuses_a_redis_that_may_evict_keys(settings: Settings) -> None:
    """`genqueue worker` on a Redis whose maxmemory-policy is not noeviction exits 1 with one
    clear line and no traceback."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    before = client.config_get("maxmemory-policy")["maxmemory-policy"]
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "genqueue", "worker"],
            env={
                **os.environ,
                "GENQUEUE_REDIS_URL": settings.redis_url,
                "GENQUEUE_KEY_PREFIX": settings.key_prefix,
                "TOGETHER_API_KEY": "test-key",
                "GENQUEUE_LOG_FORMAT": "json",
            },
            capture_output=True,
            timeout=45,
        )
    finally:
        client.config_set("maxmemory-policy", before)
        client.close()
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "refusing to start" in err and "noeviction" in err
    assert "Traceback" not in err
