"""Spend budgets (issue 26): tenants with a $20/day budget submit $100 of videos each; a
tenant without one shares the deployment.

* ``acme``: $20/day, its videos cost $0.49 (``minimax/hailuo-02``), its own estimate $0.50
  (conservative): spend must end at or below $20;
* ``hooli``: $20/day, its videos cost $0.40 (``google/veo-3.0-fast``), its own estimate
  $0.25 (too low until 20 of the model's costs are known): spend may pass $20 by at most the
  documented bound, the sum over its videos of (real cost - reserved estimate), computed
  here from the records;
* ``globex``: no budget, videos at $0.30: every one must complete, none held.

Two ``genqueue worker`` processes, the simulator in its own process, global cap
``GENQUEUE_MAX_INFLIGHT``. The run ends when every video that was admitted has settled and
the rest wait; the figures are the ledgers' (``genqueue budget show``) and the records'.
"""

from __future__ import annotations

import asyncio
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from bench.procs import Child, python_child, start_genqueue_workers, stop_all, wait_http
from bench.workload import API_KEY
from genqueue.producer.budgets import (
    budget_status_async,
    parse_budget,
    set_tenant_budget,
    short_usd,
    usd_to_micro_exact,
)
from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import TERMINAL, Field
from genqueue.producer.record import micro_to_usd
from genqueue.producer.settings import Settings
from genqueue.producer.tenants import set_tenant

PREFIX = "bench-budget"
PROMPT = "a lighthouse at dusk"
#: tenant -> (model, its price in the simulator, the tenant's own estimate or None, budget).
TENANTS: dict[str, tuple[str, str, str | None, str | None]] = {
    "acme": ("minimax/hailuo-02", "0.49", "0.50", "20/day"),
    "hooli": ("google/veo-3.0-fast", "0.40", "0.25", "20/day"),
    "globex": ("pixverse/pixverse-v5", "0.30", None, None),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _usd(micro: int) -> str:
    return str(micro_to_usd(micro))


async def _submit_all(client: AsyncClient, plan: dict[str, int]) -> dict[str, list[str]]:
    """Submit every tenant's videos interleaved (as backends would), 20 at a time."""
    ids: dict[str, list[str]] = {t: [] for t in plan}
    order = [t for i in range(max(plan.values())) for t in plan if i < plan[t]]
    for start in range(0, len(order), 20):
        batch = order[start : start + 20]
        got = await asyncio.gather(
            *(client.submit({"model": TENANTS[t][0], "prompt": PROMPT}, tenant=t) for t in batch)
        )
        for t, rid in zip(batch, got, strict=True):
            ids[t].append(rid)
    return ids


async def _records(r: redis.asyncio.Redis, prefix: str, ids: list[str]) -> list[dict[str, str]]:
    async with r.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.hgetall(f"{prefix}:req:{rid}")
        out: list[dict[str, str]] = await pipe.execute()
    return out


async def _settled(
    r: redis.asyncio.Redis, ids: dict[str, list[str]]
) -> tuple[bool, dict[str, Any]]:
    """Whether every admitted video has ended (the rest waiting), and the counts by state."""
    done = True
    counts: dict[str, Any] = {}
    for tenant, rids in ids.items():
        recs = await _records(r, PREFIX, rids)
        terminal = sum(1 for x in recs if x.get(Field.STATUS) in TERMINAL)
        waiting = sum(1 for x in recs if x.get(Field.STATUS) == "pending" and x.get(Field.WAITING))
        counts[tenant] = {"terminal": terminal, "waiting": waiting, "submitted": len(rids)}
        done = done and terminal + waiting == len(rids)
    return done, counts


async def _run(
    redis_url: str,
    log_dir: Path,
    *,
    dollars_each: int,
    budget_scale: float,
    time_scale: float,
    max_inflight: int,
    timeout_s: float,
    progress: Any,
) -> dict[str, Any]:
    settings = Settings(redis_url=redis_url, key_prefix=PREFIX)
    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    children: list[Child] = []
    plan: dict[str, int] = {}
    budgets: dict[str, int] = {}
    try:
        for tenant, (_model, price, estimate, budget) in TENANTS.items():
            set_tenant(sync, settings.keys, tenant)
            plan[tenant] = int(Decimal(dollars_each) / Decimal(price))
            if budget is not None:
                amount, per = budget.split("/")
                scaled = parse_budget(f"{Decimal(amount) * Decimal(repr(budget_scale))}/{per}")
                assert scaled is not None
                budgets[tenant] = scaled.micro_usd
                set_tenant_budget(
                    sync,
                    settings.keys,
                    tenant,
                    budget=scaled,
                    estimate_micro_usd=usd_to_micro_exact(estimate) if estimate else None,
                )
        port = _free_port()
        sim = python_child(
            "budget-sim",
            [
                "bench.simserver",
                *("--port", str(port), "--time-scale", repr(time_scale)),
                *("--median-s", "60", "--sigma", "0.3", "--seed", "26"),
            ],
            {"PYTHONUNBUFFERED": "1"},
            log_dir,
        )
        children.append(sim)
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/_sim/stats", sim)
        env = {
            "GENQUEUE_LOG_FORMAT": "json",
            "GENQUEUE_LOG_LEVEL": "WARNING",
            "GENQUEUE_REDIS_URL": redis_url,
            "GENQUEUE_KEY_PREFIX": PREFIX,
            "GENQUEUE_UPSTREAM_URL": f"http://127.0.0.1:{port}",
            "TOGETHER_API_KEY": API_KEY,
            "GENQUEUE_TIME_SCALE": repr(time_scale),
            "GENQUEUE_POLL_DELAY_S": "0.01",
            "GENQUEUE_MAX_INFLIGHT": str(max_inflight),
            "GENQUEUE_COST_ESTIMATE_USD": "1.0",
            "PYTHONUNBUFFERED": "1",
        }
        children += await start_genqueue_workers(
            ["budget-w1", "budget-w2"], env, log_dir, r, PREFIX
        )
        progress(f"budget: submitting {sum(plan.values())} videos ({plan})")
        t0 = time.monotonic()
        async with AsyncClient(settings) as client:
            ids = await _submit_all(client, plan)
        counts: dict[str, Any] = {}
        while time.monotonic() - t0 < timeout_s:
            done, counts = await _settled(r, ids)
            if done:
                break
            await asyncio.sleep(0.5)
        else:
            raise TimeoutError(f"budget part did not settle in {timeout_s:g} s: {counts}")
        wall_s = time.monotonic() - t0
        status = await budget_status_async(r, settings.keys)
        out: dict[str, Any] = {
            "videos_submitted": plan,
            "time_scale": time_scale,
            "max_inflight": max_inflight,
            "wall_s": round(wall_s, 1),
            "tenants": {},
        }
        for tenant, rids in ids.items():
            recs = await _records(r, PREFIX, rids)
            line = status.tenants[tenant]
            spent_records = sum(int(x.get(Field.COST_MICRO_USD) or 0) for x in recs)
            excess = sum(
                max(
                    0,
                    int(x.get(Field.COST_MICRO_USD) or 0) - int(x[Field.BUDGET_ESTIMATE_MICRO_USD]),
                )
                for x in recs
                if x.get(Field.COST_MICRO_USD) and x.get(Field.BUDGET_ESTIMATE_MICRO_USD)
            )
            waiting = [x for x in recs if x.get(Field.STATUS) == "pending"]
            by_field: dict[str, int] = {}
            for x in waiting:
                by_field[x.get(Field.WAITING, "")] = by_field.get(x.get(Field.WAITING, ""), 0) + 1
            statuses: dict[str, int] = {}
            for x in recs:
                statuses[x[Field.STATUS]] = statuses.get(x[Field.STATUS], 0) + 1
            row: dict[str, Any] = {
                "model": TENANTS[tenant][0],
                "price_usd": TENANTS[tenant][1],
                "estimate_usd": TENANTS[tenant][2],
                "submitted_usd": _usd(len(rids) * usd_to_micro_exact(TENANTS[tenant][1])),
                "budget_usd": _usd(budgets[tenant]) if tenant in budgets else None,
                "statuses": statuses,
                "spent_usd": _usd(line.day.spent),
                "spent_by_records_usd": _usd(spent_records),
                "reserved_usd": _usd(line.day.reserved),
                "held": len(waiting),
                "held_reason_derived": "budget" if tenant in status.held else None,
                "held_reason_on_record": by_field,
                "excess_over_estimates_usd": _usd(excess),
            }
            if tenant in budgets:
                bound = budgets[tenant] + excess
                row["bound_usd"] = _usd(bound)
                row["within_budget"] = line.day.spent <= budgets[tenant]
                row["within_bound"] = line.day.spent <= bound
            out["tenants"][tenant] = row
        return out
    finally:
        stop_all(children)
        await r.aclose()
        sync.close()


def run_budget(
    redis_url: str,
    log_dir: Path,
    *,
    dollars_each: int = 100,
    budget_scale: float = 1.0,
    time_scale: float = 0.02,
    max_inflight: int = 50,
    timeout_s: float = 600.0,
    progress: Any = print,
) -> dict[str, Any]:
    """The ``budget`` part (``bench/__main__.py``): each budget tenant submits
    ``dollars_each`` dollars of videos against ``20 * budget_scale`` dollars per day."""
    return asyncio.run(
        _run(
            redis_url,
            log_dir,
            dollars_each=dollars_each,
            budget_scale=budget_scale,
            time_scale=time_scale,
            max_inflight=max_inflight,
            timeout_s=timeout_s,
            progress=progress,
        )
    )


def _d(usd: str | None) -> str:
    return "-" if usd is None else short_usd(usd_to_micro_exact(usd))


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "**no**")


def budget_section(results: dict[str, Any]) -> list[str]:
    """The ``budget`` part in RESULTS.md."""
    b = results.get("budget")
    if not b:
        return []
    budgets = {r["budget_usd"] for r in b["tenants"].values() if r["budget_usd"]}
    submitted = {r["submitted_usd"] for r in b["tenants"].values()}
    out = [
        "## Spend budgets",
        "",
        f"Two tenants with a {'/'.join(_d(x) for x in sorted(budgets))}/day budget each submit "
        f"about {_d(max(submitted, key=Decimal))} of videos, beside a tenant "
        f"without a budget (`bench/budget.py`; 2 workers, global cap {b['max_inflight']}, "
        f"time scale {b['time_scale']:g}, {sum(b['videos_submitted'].values())} videos "
        "submitted at once). `acme`'s estimate ($0.50) covers its price ($0.49); `hooli`'s "
        "($0.25) is below its price ($0.40) until 20 of the model's costs are known. Spend is "
        "the day's ledger (equal to the sum of the records' costs); the bound is the budget "
        "plus the sum over the videos of (real cost - reserved estimate) "
        "(`producer/budgets.py`).",
        "",
        "| tenant | budget | submitted | bought | spent | bound | held (reason) | "
        "within budget | within bound |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tenant, row in b["tenants"].items():
        done = row["statuses"].get("completed", 0)
        held = f"{row['held']} ({row['held_reason_derived'] or '-'})" if row["held"] else "0"
        out.append(
            f"| {tenant} | {_d(row['budget_usd'])} | {_d(row['submitted_usd'])} | {done} | "
            f"{_d(row['spent_usd'])} | {_d(row.get('bound_usd'))} | {held} | "
            f"{_yes(row.get('within_budget'))} | {_yes(row.get('within_bound'))} |"
        )
    out += [
        "",
        "The tenant without a budget bought every video it submitted (none held, nothing "
        "reserved); the held requests wait in admission (no timer) for the next UTC day or a "
        "raised budget.",
        "",
    ]
    return out
