"""Real worker processes: SIGKILL one mid-flight, start another — every video finishes, and
nothing is bought twice except where the record itself shows an ambiguous submit."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from genqueue.producer import Client, RequestView, Settings
from genqueue.simulator import SimConfig, running_simulator
from tests.integration.previous import env_for
from tests.processes import wait_until

SCALE = 0.02
N_VIDEOS = 300
MODELS = ["minimax/video-01-director", "google/veo-3.0-fast", "openai/sora-2"]


def worker_env(settings: Settings, upstream: str) -> dict[str, str]:
    """This version's worker environment, with short task timeouts: arq re-runs a SIGKILLed
    task after timeout + 10 s."""
    env = env_for(settings, upstream, None, time_scale=SCALE)
    env.update(
        GENQUEUE_TASK_TIMEOUT_S="6",
        GENQUEUE_CONNECT_TIMEOUT_S="2",
        GENQUEUE_READ_TIMEOUT_S="3",
    )
    return env


class Workers:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"worker-{len(self.procs)}.log").open("wb") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "genqueue", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def workers_factory(tmp_path: Path) -> Iterator[list[Workers]]:
    made: list[Workers] = []
    yield made
    for w in made:
        w.stop_all()


def ambiguous_ids(views: list[RequestView]) -> set[str]:
    return {v.id for v in views if v.ambiguous_submits > 0}


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("honour_idempotency", [True, False], ids=["idem-honoured", "idem-ignored"])
def test_sigkill_worker_mid_flight_loses_nothing(
    settings: Settings,
    tmp_path: Path,
    workers_factory: list[Workers],
    honour_idempotency: bool,
) -> None:
    """300 in-flight videos survive a SIGKILLed worker: all finish, cost is counted once, and a
    second creation happens only where the record shows an ambiguous submit."""
    cfg = SimConfig(
        time_scale=SCALE, seed=11, failure_share=0.05, honour_idempotency=honour_idempotency
    )
    with running_simulator(cfg) as sim, Client(settings) as client:
        workers = Workers(worker_env(settings, sim.base_url), tmp_path)
        workers_factory.append(workers)
        ids = [
            client.submit({"model": MODELS[i % 3], "prompt": f"shot {i}"}) for i in range(N_VIDEOS)
        ]
        first = workers.start()
        # Kill while creates are still going out and earlier videos are being polled.
        wait_until(lambda: sim.sim.stats()["jobs_created"] >= N_VIDEOS // 2, 60, "creates")
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = sim.sim.stats()
        workers.start()

        def all_terminal() -> bool:
            st = client.stats()
            return sum(st.requests_by_status.values()) == 0 and st.tracking == 0

        wait_until(all_terminal, 180, "all videos to finish")
        views = [client.get(i) for i in ids]
        truth = sim.sim.stats()
        jobs = {j["id"]: j for j in sim.sim.jobs()}

    print(
        f"\nkilled at: created={killed_at['jobs_created']} completed={killed_at['completed']}; "
        f"end: created={truth['jobs_created']} duplicates={truth['duplicate_creations']} "
        f"replays={truth['idempotent_replays']} ambiguous={len(ambiguous_ids(views))} "
        f"completed={sum(v.status == 'completed' for v in views)}"
    )
    assert killed_at["completed"] < N_VIDEOS, "the kill came after everything was done"
    assert [v.status for v in views if v.status not in ("completed", "failed")] == []
    # The job each record holds is the truth for its outcome and cost.
    held = [jobs[v.upstream_id] for v in views if v.upstream_id]
    assert len(held) == N_VIDEOS
    assert sum(v.status == "completed" for v in views) == sum(
        j["status"] == "completed" for j in held
    )
    assert sum(v.cost_micro_usd or 0 for v in views) == sum(j["cost_micro_usd"] for j in held)
    per_key = Counter(j["idempotency_key"] for j in jobs.values())
    duplicated = {v.id for v in views if per_key[f"genqueue-{v.id}"] > 1}
    ambiguous = ambiguous_ids(views)
    if honour_idempotency:
        assert truth["duplicate_creations"] == 0 and not duplicated
    else:
        assert duplicated <= ambiguous
        assert truth["duplicate_creations"] == sum(per_key[f"genqueue-{i}"] - 1 for i in duplicated)
