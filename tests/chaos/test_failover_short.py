"""The short failover run inside ``make test``: a Sentinel deployment (primary, two replicas,
three sentinels: real ``redis-server`` processes), requests in flight and creates being made
while the primary is SIGKILLed and a replica promoted. ``make chaos`` runs the long form."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosOptions, run_chaos


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_failover_short(tmp_path: Path) -> None:
    """Across a primary SIGKILL and a promotion, every request ends and none is lost,
    duplicate upstream creations stay within ambiguous submits, and recorded cost equals
    billed minus unattributed."""
    opts = ChaosOptions(
        videos=120,
        workers=2,
        time_scale=0.03,
        faults="flaky",
        honour_idempotency=False,
        kill_every_s=2.0,  # the failover comes 2.4 s in; workers are not killed here
        kill_workers=False,
        redis_restarts=0,
        failovers=1,
        appendfsync="everysec",
        seed=5,
        timeout_s=150,
        log_dir=tmp_path,
    )
    report = run_chaos(opts)
    print(asdict(report))
    assert report.failovers == 1 and report.kills == 0
    assert report.requests == 120 and report.missing_records == 0
    assert report.lost == 0
    assert report.violations() == [], asdict(report)
