"""Upgrading to admission with requests waiting: the previous version (``OLD_COMMIT``, the
last commit before admission, exported from git) spins requests beyond its in-flight cap (each
re-arms its submit timer every ``cap_wait_s``); a new worker joins, the old one leaves, a new
producer submits more. Every request completes, the spinning ones end up in the admission
queue (no timer), and nothing is left reserved, waiting or in flight.

Not covered (docs/architecture.md, "Admission"): an old worker's steps admit nobody (the
reconciler's safety net does) and it does not count reserved slots against its cap.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from genqueue.producer import Client, Settings
from genqueue.simulator import SimConfig, running_simulator
from tests.integration.previous import (  # noqa: F401
    env_for,
    export_root,
    procs,
    submit_old,
    worker,
)
from tests.processes import stop_process, wait_until

OLD_COMMIT = "b56fbb7"
SCALE = 0.02
CAP = 4
N_OLD = 24
N_NEW = 8
REQ = {"model": "minimax/video-01-director", "prompt": "a slow glacier"}


@pytest.fixture(scope="module")
def old_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The version before admission as an import root."""
    return export_root(OLD_COMMIT, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_requests_spinning_under_the_old_cap_wait_finish_after_the_upgrade(
    settings: Settings,
    old_root: Path,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    """Old requests re-arming at the cap are queued by the new worker and all complete with
    new ones; the counts end at zero, nothing reserved or waiting."""
    with running_simulator(SimConfig(time_scale=SCALE, seed=9, failure_share=0.0)) as sim:
        capped = {"GENQUEUE_MAX_INFLIGHT": str(CAP)}
        old_env = {**env_for(settings, sim.base_url, old_root, time_scale=SCALE), **capped}
        new_env = {**env_for(settings, sim.base_url, None, time_scale=SCALE), **capped}
        old_ids = submit_old(old_env, tmp_path, REQ["model"], N_OLD, absent="WAITING")
        procs.append(worker(old_env, tmp_path / "old-worker.log"))
        with Client(settings) as client:
            # The old worker holds the cap; the rest spin (their submit timers re-arming).
            wait_until(lambda: sim.sim.stats()["jobs_created"] >= CAP, 60, "old creates")
            procs.append(worker(new_env, tmp_path / "new-worker.log"))
            wait_until(lambda: client.stats().waiting["cap"] > 0, 60, "spinning ones queued")
            stop_process(procs[0])
            new_ids = [client.submit({**REQ, "prompt": f"new {i}"}) for i in range(N_NEW)]
            views = [client.wait(rid, 120) for rid in old_ids + new_ids]
            assert {v.status for v in views} == {"completed"}
            assert sim.sim.stats()["jobs_created"] == N_OLD + N_NEW

            def settled() -> bool:
                st = client.stats()
                return st.admitted == 0 and sum(st.waiting.values()) == 0

            wait_until(settled, 30, "reservations given back")
            st = client.stats()
    assert sum(st.requests_by_status.values()) == 0 and st.active_upstream == 0
    assert st.finished_by_outcome == {"completed": N_OLD + N_NEW}
