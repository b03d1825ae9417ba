"""Shared limits hold across worker processes: the upstream never sees more than rate +
burst calls in any second, nor more jobs in flight than the cap."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from genqueue.producer import Client, Settings
from genqueue.simulator import SimConfig, running_simulator
from tests.integration.test_restart import wait_until, worker_env

RPS, BURST, CAP = 15, 5, 8


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_three_workers_share_rate_limit_and_inflight_cap(
    settings: Settings, tmp_path: Path
) -> None:
    """Three worker processes together stay within rate + burst per second and the cap."""
    cfg = SimConfig(time_scale=0.005, seed=9, failure_share=0.0)
    with running_simulator(cfg) as sim, Client(settings) as client:
        env = worker_env(settings, sim.base_url)
        env.update(
            GENQUEUE_TIME_SCALE="0.005",
            GENQUEUE_RATE_LIMIT_RPS=str(RPS),
            GENQUEUE_RATE_LIMIT_BURST=str(BURST),
            GENQUEUE_MAX_INFLIGHT=str(CAP),
        )
        procs = []
        for i in range(3):
            with (tmp_path / f"w{i}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "genqueue", "worker"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            ids = [
                client.submit({"model": "google/veo-3.0-fast", "prompt": f"p{i}"})
                for i in range(40)
            ]
            wait_until(lambda: sum(client.stats().requests_by_status.values()) == 0, 120, "finish")
            views = [client.get(i) for i in ids]
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)
        load = httpx.get(f"{sim.base_url}/_sim/load", params={"window_s": 1}).json()
        truth = sim.sim.stats()
    assert {v.status for v in views} == {"completed"}
    assert truth["jobs_created"] == 40
    assert load["calls"] > 2 * (RPS + BURST), "too few calls to exercise the limit"
    assert load["max_calls_in_window"] <= RPS + BURST, load
    assert load["max_jobs_in_flight"] <= CAP, load
