"""The short chaos run inside ``make test``: faults upstream, workers SIGKILLed at random,
Redis SIGKILLed once — nothing lost, cost counted once; duplicates only from ambiguous creates
when the upstream ignores idempotency keys (as Together does), none when it honours them.
``make chaos`` runs the full size."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.chaos.harness import LATE_ANSWER_LEASE_S, ChaosOptions, late_answer_faults, run_chaos


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("honour", [False, True], ids=["idem-ignored", "idem-honoured"])
def test_chaos_short(tmp_path: Path, honour: bool) -> None:
    """Under upstream faults, worker SIGKILLs and a Redis SIGKILL, every request ends, its
    outcome matches the upstream's, and recorded cost equals billed minus unattributed."""
    opts = ChaosOptions(
        videos=200,
        workers=3,
        time_scale=0.03,
        honour_idempotency=honour,
        kill_every_s=3.0,
        redis_restarts=1,
        seed=3,
        timeout_s=300,
        log_dir=tmp_path,
    )
    report = run_chaos(opts)
    print(asdict(report))
    assert report.kills >= 2 and report.redis_restarts == 1
    assert sum(report.faults_injected.values()) > 0
    assert report.violations() == [], asdict(report)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_chaos_short_late_answers(tmp_path: Path) -> None:
    """Creates answered after a second attempt went out (workers standing in for stalled
    ones): the superseded jobs are counted, each checked to its end, and every learned
    dollar is recorded (recorded cost = billed - unattributed, nothing learned untracked)."""
    opts = ChaosOptions(
        videos=100,
        workers=3,
        time_scale=0.03,
        faults=late_answer_faults("chaos", share=0.1),
        honour_idempotency=False,
        kill_every_s=6.0,
        redis_restarts=1,
        seed=5,
        timeout_s=300,
        log_dir=tmp_path,
        stalled_lease_s=LATE_ANSWER_LEASE_S,
    )
    report = run_chaos(opts)
    print(asdict(report))
    assert report.faults_injected.get("late_answer", 0) > 0
    assert report.superseded_jobs > 0 and report.superseded_unchecked == 0
    assert report.cost_learned_untracked_usd == "0.000000"
    assert report.violations() == [], asdict(report)
