"""A worker process survives Redis being SIGKILLed and restarted (AOF, appendfsync always)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genqueue.local_redis import LocalRedis
from genqueue.producer import Client, Settings
from genqueue.simulator import SimConfig, running_simulator
from tests.integration.test_restart import wait_until, worker_env


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_worker_survives_redis_restart_and_nothing_is_lost(tmp_path: Path) -> None:
    """Redis killed mid-run and restarted: the same worker process reconnects and every video
    finishes, each created once, with its cost recorded, though the upstream ignores
    idempotency keys (as Together does): creates in flight are neither lost nor re-bought."""
    with LocalRedis(appendfsync="always") as server:
        settings = Settings(redis_url=server.url, key_prefix="gq-redis-restart")
        cfg = SimConfig(time_scale=0.02, seed=5, failure_share=0.0, honour_idempotency=False)
        with running_simulator(cfg) as sim, Client(settings) as client:
            log_path = tmp_path / "worker.log"
            env = worker_env(settings, sim.base_url)
            with log_path.open("wb") as log:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "genqueue", "worker"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                ids = [
                    client.submit({"model": "minimax/video-01-director", "prompt": f"p{i}"})
                    for i in range(100)
                ]
                wait_until(lambda: sim.sim.stats()["jobs_created"] >= 50, 60, "creates")
                server.kill()
                time.sleep(1.0)
                server.start()
                wait_until(
                    lambda: sum(client.stats().requests_by_status.values()) == 0, 150, "finish"
                )
                assert worker.poll() is None, "the worker died with its Redis connection"
                views = [client.get(i) for i in ids]
                truth = sim.sim.stats()
            finally:
                worker.send_signal(signal.SIGTERM)
                code = worker.wait(timeout=60)
    log_text = log_path.read_text(errors="replace")
    assert code == 0, log_text[-3000:]
    assert {v.status for v in views} == {"completed"}
    assert truth["jobs_created"] == 100 and truth["duplicate_creations"] == 0
    assert sum(v.cost_micro_usd or 0 for v in views) == truth["billed_micro_usd"]
    assert "redis_unavailable" in log_text


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_worker_started_without_redis_retries_with_clear_json_lines(tmp_path: Path) -> None:
    """A worker whose Redis is down logs one-line JSON retries (password hidden, no traceback)
    and still stops cleanly on SIGTERM."""
    import json

    from genqueue.local_redis import free_port

    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    env = worker_env(Settings(redis_url=url), "http://127.0.0.1:9")
    env["GENQUEUE_LOG_LEVEL"] = "INFO"
    log_path = tmp_path / "w.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "genqueue", "worker"], env=env, stdout=log, stderr=log
        )
    wait_until(lambda: "redis_unavailable" in log_path.read_text(), 30, "a retry line")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    text = log_path.read_text()
    assert "Traceback" not in text and "hunter2-secret" not in text
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(e["event"] == "redis_unavailable" and "***" in e["redis"] for e in events)
