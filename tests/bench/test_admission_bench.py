"""The admission bench part (``bench/admission.py``): its figures from hand-made runs, and the
part end to end at toy size against the first come, first served baseline and this tree. No
timing is asserted: the smoke figures mean nothing; ``make bench`` is where they are measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.admission import (
    RESERVE_ENV,
    TENANTS,
    AdmissionConfig,
    Request,
    RunData,
    hold,
    make_sides,
    next_slot,
    shares,
    utilisation,
    waits,
)
from genqueue.worker.config import WorkerConfig

A, B, C = TENANTS
SCALE = 0.1


def _run(requests: list[Request], samples: list[tuple[float, int, int]] | None = None) -> RunData:
    return RunData(
        name="r",
        side="fair",
        cap=2,
        time_scale=SCALE,
        t0_ms=0,
        end_ms=10_000,
        requests=requests,
        samples=samples or [],
        worker_cpu_s=1.0,
        wall_s=10.0,
        genqueue_path="x",
        upstream_created=0,
    )


def test_shares_count_only_creates_while_every_tenant_waits() -> None:
    """A create counts toward shares only when all tenants had requests waiting just before."""
    reqs = [
        # A alone waits from 0 until B joins at 1000: its create at 500 is outside the window.
        Request(A, 0, 500, None),
        Request(A, 0, 2000, None),
        Request(A, 0, None, None),
        Request(B, 1000, 3000, None),
        Request(B, 1000, None, None),
        Request(C, 1500, 2500, None),
        Request(C, 1500, 9000, None),  # C's last: created at 9000, the window ends there
        Request(A, 1500, 9500, None),  # after the window: not counted
    ]
    out = shares(_run(reqs), TENANTS, {A: 2.0, B: 1.0, C: 1.0})
    rows = out["tenants"]
    assert [rows[t]["creates"] for t in TENANTS] == [1, 1, 2]
    assert out["creates"] == 4
    assert out["window_from_s"] == pytest.approx(1.5 / SCALE)
    assert out["window_to_s"] == pytest.approx(9.0 / SCALE)
    assert out["window_s"] == pytest.approx(7.5 / SCALE)
    assert rows[A]["target"] == 0.5 and rows[A]["share"] == 0.25
    assert rows[A]["deviation_pct"] == -50.0 and rows[C]["deviation_pct"] == 100.0
    assert out["max_abs_deviation_pct"] == 100.0


def test_waits_flag_a_percentile_reaching_an_uncreated_request_as_a_lower_bound() -> None:
    """A request never created counts with its wait so far, and a percentile reaching it is
    marked as a lower bound."""
    created = [Request(B, 0, 100 * k, None) for k in range(1, 20)]
    quick = waits(_run(created), (B,))
    assert quick["created"] == 19 and quick["not_created"] == 0
    assert quick["p50"] == {"s": 10.0, "lower_bound": False}
    assert not quick["p95"]["lower_bound"]
    stuck = waits(_run([*created, Request(B, 4000, None, None)]), (B,))
    assert stuck["not_created"] == 1 and stuck["max_s"] == pytest.approx(60.0)
    assert stuck["p95"]["lower_bound"] and not stuck["p50"]["lower_bound"]
    assert waits(_run(created), (C,))["requests"] == 0


def test_next_slot_counts_other_tenants_creates_that_went_first() -> None:
    """A light request's ``ahead`` counts other tenants' creates between its arrival and its
    own create; its first-create wait ends at the first create of anyone after it arrived."""
    reqs = [
        Request(A, 0, 1200, None),
        Request(B, 1000, 1500, None),  # A's create at 1200 went first
        Request(A, 0, 1600, None),
        Request(C, 1700, 1800, None),  # the first create after it arrived: its own
        Request(B, 9000, None, None),  # never created: left out
    ]
    out = next_slot(_run(reqs), (B, C))
    assert out["requests"] == 2 and out["first_free_share"] == 0.5
    assert out["ahead_max"] == 1
    assert out["first_create_wait_p50_s"] == pytest.approx((0.2 + 0.1) / 2 / SCALE)


def test_utilisation_counts_waiting_samples_from_the_first_full_cap() -> None:
    """Over the samples with someone waiting (after the cap first filled): the mean share of
    the cap held, and the share of samples in which every slot is held."""
    samples = [(0, 1, 5), (1, 2, 5), (2, 1, 5), (3, 2, 0), (4, 1, 0), (5, 2, 3)]
    out = utilisation(_run([], samples))
    assert out == {"samples_waiting": 3, "samples_at_cap": 2, "fraction": 0.6667, "slots": 0.8333}
    assert utilisation(_run([], [(0, 1, 5)]))["fraction"] is None


def test_the_fair_sides_differ_only_by_the_reserve() -> None:
    """``fair`` runs this tree with no reserve and ``reserve`` with the configured one, each
    through the variable its workers read."""
    fair, reserve = make_sides(AdmissionConfig(sides=("fair", "reserve"), reserve_slots=2))
    assert fair.git == reserve.git and fair.root is None and reserve.root is None
    assert fair.env({RESERVE_ENV: "9", "PYTHONPATH": "x"}) == {RESERVE_ENV: "0"}
    assert reserve.env({})[RESERVE_ENV] == "2"
    assert WorkerConfig.from_env(reserve.env({})).admission_reserve_slots == 2


def test_slot_turnover_is_the_mean_hold_over_the_cap() -> None:
    """Slot turnover = mean (finished - created) of finished videos, in sim s, / the cap."""
    reqs = [Request(A, 0, 1000, 3000), Request(A, 0, 1000, 5000), Request(A, 0, 2000, None)]
    assert hold(_run(reqs)) == {"finished": 2, "mean_hold_s": 30.0, "slot_turnover_s": 15.0}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_admission_part_smoke(tmp_path: Path) -> None:
    """The admission part runs end to end at toy size on every side, each side's processes on
    its own code, and writes every figure and the RESULTS.md section."""
    out, md = tmp_path / "results.json", tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "--smoke", "--only", "admission"),
            *("--out", str(out), "--md", str(md), "--log-dir", str(tmp_path / "logs")),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    adm = json.loads(out.read_text())["admission"]
    assert adm["smoke"] is True
    cfg = adm["config"]
    cap = cfg["cap"]
    assert set(adm["sides"]) == {"fcfs", "fair", "reserve"}
    assert adm["sides"]["fcfs"]["git"] != adm["sides"]["fair"]["git"]
    assert adm["sides"]["reserve"]["git"] == adm["sides"]["fair"]["git"]
    assert set(adm["shares"]) == {"1:1:1", "3:1:1"}
    assert set(adm["shares"]["1:1:1"]) == {"fcfs", "fair", "reserve"}
    assert set(adm["shares"]["3:1:1"]) == {"fair", "reserve"}  # the baseline has no weights
    for wname, by_side in adm["shares"].items():
        for side, fig in by_side.items():
            assert fig["requests"] == 3 * cfg["backlog_per_tenant"], (wname, side)
            # Every create seen upstream; at most a cap's worth were mid-create when the
            # workers stopped (created upstream, not yet written to their records).
            assert 0 < fig["created"] <= fig["upstream_created"] <= fig["created"] + cap
            for sh in fig["by_weights"].values():
                rows = sh["tenants"].values()
                assert sh["creates"] == sum(r["creates"] for r in rows) > 0
                assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)
                assert sum(r["target"] for r in rows) == pytest.approx(1.0, abs=1e-3)
                assert 0 < sh["window_s"] <= cfg["window_s"]
            u = fig["utilisation"]
            assert u["samples_waiting"] > 0 and 0 <= u["fraction"] <= u["slots"] <= 1
    assert adm["shares"]["3:1:1"]["fair"]["by_weights"]["3:1:1"]["tenants"][A]["target"] == 0.6
    light = 2 * len(
        range(int(cfg["light_start_s"]), int(cfg["window_s"] - cfg["light_tail_s"]) + 1,
              int(cfg["light_every_s"]))
    )  # fmt: skip
    for side, runs in adm["latency"].items():
        assert runs["latency"]["heavy"]["requests"] == cfg["heavy"]
        nxt = runs["latency"]["light_next_slot"]
        assert nxt["requests"] == runs["latency"]["light"]["created"]
        if nxt["requests"]:
            assert 0 <= nxt["first_free_share"] <= 1 and nxt["ahead_max"] >= 0
        for kind in ("latency", "alone"):
            fig = runs[kind]
            assert fig["light"]["requests"] == light, (side, kind)
            assert fig["light"]["created"] + fig["light"]["not_created"] == light
            assert fig["light"]["p50"]["s"] <= fig["light"]["p95"]["s"] <= fig["light"]["max_s"]
            assert fig["hold"]["finished"] > 0 and fig["hold"]["slot_turnover_s"] > 0
            assert fig["worker_cpu_s_per_s"] > 0
        # Alone, the light tenants never wait for a slot: every request is created.
        assert runs["alone"]["light"]["not_created"] == 0
    for side, cost in adm["cost"].items():
        assert [s["waiting"] for s in cost["steps"]] == cfg["cost_sizes"]
        for st in cost["steps"]:
            # The cap stayed full of videos that did not end: nobody was admitted meanwhile.
            assert st["upstream_created"] == cap, (side, st)
            assert st["pending_after"] == st["waiting"], (side, st)
            assert st["commands_per_s"] >= st["script_calls_per_s"] >= 0
            assert st["worker_cpu_s_per_s"] >= 0 and st["redis_cpu_s_per_s"] >= 0
            if side == "fcfs":  # every waiting request asks again every cap_wait_s
                assert st["script_calls_per_s"] > 0, st
    assert set(adm["summary"]) == {"fcfs", "fair", "reserve"}
    text = md.read_text()
    for heading in (
        "## Admission",
        "### Shares under contention",
        "### A light tenant's admission wait",
        "### Backlog cost",
    ):
        assert heading in text
