"""Upgrading to tenants with requests in flight: the previous version (main before tenants,
``OLD_COMMIT``, exported from git) and this one run side by side on one Redis.

What it proves: requests the old producer wrote (no ``tenant`` field, idempotency mappings
under the old name, timers already queued) are finished by an old and a new worker together
and read as ``default``'s; the old worker also finishes requests the new producer wrote for
``default``; an old idempotency key still names its request afterwards, while another tenant
using the same key gets its own; ``default``'s figures (the cluster's minus the other
tenants') count every one of them and end at zero in flight. Not covered (documented in
docs/tenants.md): an old worker handling a request of a tenant other than ``default`` —
configure tenants once every worker runs this version.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import redis

from genqueue.producer import Client, Settings
from genqueue.producer.tenants import set_tenant
from genqueue.simulator import SimConfig, running_simulator
from tests.integration.previous import (  # noqa: F401
    env_for,
    export_root,
    procs,
    submit_old,
    worker,
)
from tests.processes import stop_process, wait_until

#: main just before tenants (the last main merged into the tenants branch).
OLD_COMMIT = "910d0fb0d9d51a2ffac554d35f5c02a19e5314df"
SCALE = 0.02
N_OLD = 24
N_NEW = 8
REQ = {"model": "minimax/video-01-director", "prompt": "an old lighthouse"}


@pytest.fixture(scope="module")
def old_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous version as an import root."""
    return export_root(OLD_COMMIT, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_old_and_new_workers_side_by_side_with_requests_in_flight(
    settings: Settings,
    old_root: Path,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    """Requests written by the previous version finish under old and new workers, read as
    ``default``'s, keep their idempotency keys, and count in ``default``'s figures."""
    with running_simulator(SimConfig(time_scale=SCALE, seed=5, failure_share=0.0)) as sim:
        old_env = env_for(settings, sim.base_url, old_root, time_scale=SCALE)
        new_env = env_for(settings, sim.base_url, None, time_scale=SCALE)
        old_ids = submit_old(old_env, tmp_path, REQ["model"], N_OLD, absent="TENANT", keyed=True)
        assert len(set(old_ids)) == N_OLD

        procs.append(worker(old_env, tmp_path / "old-worker.log"))
        with Client(settings) as client:
            # The old worker alone takes the old requests in flight...
            wait_until(lambda: sim.sim.stats()["jobs_created"] >= N_OLD // 2, 60, "creates")
            # ...the new producer writes `default` requests it may pick up too...
            new_ids = [
                client.submit({**REQ, "prompt": f"new {i}"}, idempotency_key=f"new-{i}")
                for i in range(N_NEW)
            ]
            # ...and a new worker joins, then the old one leaves mid-flight.
            procs.append(worker(new_env, tmp_path / "new-worker.log"))
            wait_until(lambda: sim.sim.stats()["completed"] >= 4, 60, "some completions")
            stop_process(procs[0], signal.SIGTERM)

            views = [client.wait(rid, 90) for rid in old_ids + new_ids]
            assert {v.status for v in views} == {"completed"}
            assert {v.tenant for v in views} == {"default"}

            # The old idempotency mappings kept their names: the same key, the same request.
            assert client.submit(REQ, idempotency_key="old-3") == old_ids[3]
            with redis.Redis.from_url(settings.redis_url) as conn:
                assert conn.pttl(settings.keys.idempotency("old-3")) > 0  # expires with it
                set_tenant(conn, settings.keys, "acme")
            # Another tenant's same key is its own request.
            acme_id = client.submit(REQ, idempotency_key="old-3", tenant="acme")
            assert acme_id not in old_ids
            assert client.wait(acme_id, 60, tenant="acme").status == "completed"

            default = client.stats(tenant="default")
            acme = client.stats(tenant="acme")
            cluster = client.stats()
    assert default.finished_by_outcome == {"completed": N_OLD + N_NEW}
    assert acme.finished_by_outcome == {"completed": 1}
    assert cluster.finished_by_outcome == {"completed": N_OLD + N_NEW + 1}
    assert sum(default.requests_by_status.values()) == 0 and default.inflight == 0
    assert default.total_cost_micro_usd + acme.total_cost_micro_usd == (
        cluster.total_cost_micro_usd
    )
