"""SIGTERM lets in-flight upstream calls finish and record their ids before the worker exits."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from genqueue.producer import Client, Settings
from genqueue.simulator import SimConfig, parse_faults, running_simulator
from tests.integration.test_restart import wait_until, worker_env


def spawn_worker(settings: Settings, upstream: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "genqueue", "worker"],
            env=worker_env(settings, upstream),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_finishes_inflight_creates_then_exits(settings: Settings, tmp_path: Path) -> None:
    """A worker told to stop while creates are in flight waits for their answers, records
    every upstream id, exits 0; the next worker finishes the videos without re-creating any."""
    slow_creates = parse_faults("slow_share=1.0,slow_s=2")
    cfg = SimConfig(time_scale=0.02, seed=2, failure_share=0.0, faults=slow_creates)
    with running_simulator(cfg) as sim, Client(settings) as client:
        worker = spawn_worker(settings, sim.base_url, tmp_path / "w1.log")
        ids = [
            client.submit({"model": "minimax/video-01-director", "prompt": f"p{i}"})
            for i in range(5)
        ]
        wait_until(lambda: sim.sim.stats()["jobs_created"] >= 1, 30, "a create in flight")
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
        log = (tmp_path / "w1.log").read_text(errors="replace")
        assert code == 0, log[-2000:]
        created = {j["id"] for j in sim.sim.jobs()}
        held = {v.upstream_id for v in (client.get(i) for i in ids) if v.upstream_id}
        assert created and created <= held, "a created job's id was not recorded"
        second = spawn_worker(settings, sim.base_url, tmp_path / "w2.log")
        try:
            views = [client.wait(i, timeout_s=60) for i in ids]
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
        truth = sim.sim.stats()
    assert {v.status for v in views} == {"completed"}
    assert truth["jobs_created"] == 5 and truth["duplicate_creations"] == 0
