"""Spend budgets: per tenant and for the whole deployment, reserved before a video is bought.

A budget is an amount of US dollars per UTC calendar day or month. Admission reserves each
video's estimated cost against its tenant's budget and the deployment's in the same atomic
step that admits it (``lua/_budget.lua``); the finish settles the reservation with the real
cost, in the period the video was admitted in. A request its budget cannot cover waits (or
fails, by the tenant's ``over_budget`` policy) until the period rolls over or the budget is
raised.

**The estimate** is the highest cost among the model's last ``COST_SAMPLES`` completed videos
once ``MIN_COSTS`` are known, else the tenant's configured estimate, else
``GENQUEUE_COST_ESTIMATE_USD`` (written to Redis by every worker at start), else
``DEFAULT_COST_ESTIMATE_MICRO_USD``. Why 20 and 50: if a model's costs are exchangeable, the
chance that the next video costs more than the highest of the last *n* is at most 1/(n+1):
under 5 % from 20 completions on; a window of 50 follows a price change within 50 videos
while keeping that chance near 2 %.

**The bound.** Admission only admits when ``spent + reserved + estimate <= budget`` (each of
the tenant's and the deployment's ledgers), and a ledger's total changes otherwise only when a
video settles (its reservation ``R`` becomes its charge ``C``: real cost, or ``R`` when the
cost is unknown, plus superseded jobs' costs and ``R`` per attempt that may have bought a
video). So at every moment, for each budget ``B`` of a period ``P``::

    spent(P) + reserved(P) <= B + sum over videos v admitted in P of max(0, C_v - R_v)

With every real cost at or below its estimate, spend never passes the budget; each video
whose charge exceeds its reservation can push it over by exactly that excess, no more
(``tests/test_budgets.py`` checks both). Lowering a budget below what is already spent or
reserved admits nothing more; it never cancels what was admitted.

**Amounts** are integer micro-dollars everywhere (as the totals), shown as dollars.

**The clock** is Redis ``TIME``, in Lua (one clock for every worker and producer). Tests move
it with ``test_clock_offset_ms`` in the budget hash, honoured only while present; a worker
started without ``budget_test_clock`` deletes it (no production input writes it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

import redis
import redis.asyncio

from genqueue.producer.admission import admit_all_sync
from genqueue.producer.keys import (
    DEFAULT_COST_ESTIMATE_MICRO_USD,
    DEFAULT_TENANT,
    TENANT_FIELD_PREFIX,
    TOTALS_SEP,
    Keys,
)
from genqueue.producer.record import micro_to_usd
from genqueue.producer.tenants import TenantConfig, TenantError, check_tenant_name

Period = Literal["day", "month"]
OverBudget = Literal["hold", "fail"]
PERIODS: Final[tuple[Period, ...]] = ("day", "month")
OVER_BUDGET_POLICIES: Final[tuple[OverBudget, ...]] = ("hold", "fail")
#: See the module docstring (also in ``lua/_budget.lua``: ``BUDGET_COST_SAMPLES``,
#: ``BUDGET_MIN_COSTS``; ``tests/test_budgets.py`` checks they agree).
COST_SAMPLES: Final = 50
MIN_COSTS: Final = 20
#: Ledger fields (``lua/_budget.lua``).
LEDGER_FIELDS: Final = ("reserved_micro", "spent_micro", "estimated_micro", "admitted")
#: The share of a budget at which the alert rule fires (``deploy/prometheus``).
ALERT_SHARE: Final = 0.8
DAY_MS: Final = 86_400_000
#: The key of a tenant's budget settings in its JSON (``TenantConfig.other``).
TENANT_JSON_KEY: Final = "budget"
#: The budget hash's field of the test clock offset (ms added to Redis TIME).
TEST_CLOCK_FIELD: Final = "test_clock_offset_ms"

_AMOUNT = re.compile(r"^\$?\s*([0-9]+(?:\.[0-9]{1,6})?)\s*/\s*(day|month)$")


class BudgetError(TenantError):
    """A budget setting is malformed."""


@dataclass(frozen=True, slots=True)
class Budget:
    """An amount of micro-USD per UTC ``day`` or ``month``."""

    micro_usd: int
    period: Period

    def __str__(self) -> str:
        return f"{short_usd(self.micro_usd)}/{self.period}"


def short_usd(micro: int) -> str:
    """Micro-dollars as ``$20.00`` (cents) or ``$0.123456`` (only the digits needed)."""
    text = f"{micro_to_usd(abs(micro)):f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{'-' if micro < 0 else ''}${whole}.{frac.ljust(2, '0')}"


def usd_to_micro_exact(text: str) -> int:
    """A decimal dollar amount (at most 6 decimals) as integer micro-dollars."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BudgetError(f"not an amount of dollars: {text!r}") from None
    micro = value * 1_000_000
    if value < 0 or micro != micro.to_integral_value():
        raise BudgetError(f"an amount of dollars is >= 0 with at most 6 decimals: {text!r}")
    return int(micro)


def parse_budget(text: str) -> Budget | None:
    """``AMOUNT/day`` or ``AMOUNT/month`` (dollars, e.g. ``20/day``, ``$150.50/month``);
    ``none`` removes the budget (None)."""
    if text.strip().lower() == "none":
        return None
    m = _AMOUNT.match(text.strip())
    if not m:
        raise BudgetError(f"a budget is AMOUNT/day or AMOUNT/month (or none), not {text!r}")
    return Budget(usd_to_micro_exact(m.group(1)), m.group(2))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC day and month of a budget-clock time, and when each ends (ms)."""

    day: str
    month: str
    day_end_ms: int
    month_end_ms: int

    def key(self, period: Period) -> str:
        return self.day if period == "day" else self.month

    def end_ms(self, period: Period) -> int:
        return self.day_end_ms if period == "day" else self.month_end_ms


def periods_at(clock_ms: int) -> Periods:
    """The periods ``lua/_budget.lua`` (``budget_periods``) computes for the same time."""
    t = dt.datetime.fromtimestamp(clock_ms // 1000, dt.UTC)
    day_start = dt.datetime(t.year, t.month, t.day, tzinfo=dt.UTC)
    nxt = dt.datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=dt.UTC)
    return Periods(
        day=f"{t.year:04d}-{t.month:02d}-{t.day:02d}",
        month=f"{t.year:04d}-{t.month:02d}",
        day_end_ms=int(day_start.timestamp() * 1000) + DAY_MS,
        month_end_ms=int(nxt.timestamp() * 1000),
    )


@dataclass(frozen=True, slots=True)
class TenantBudget:
    """A tenant's budget settings (the ``budget`` object of its JSON in the tenants hash)."""

    budget: Budget | None = None
    over_budget: OverBudget = "hold"
    #: The estimate of its videos until their model's costs are known (None: the
    #: deployment's ``GENQUEUE_COST_ESTIMATE_USD``).
    estimate_micro_usd: int | None = None

    @classmethod
    def of(cls, config: TenantConfig) -> TenantBudget:
        raw = config.other.get(TENANT_JSON_KEY)
        if not isinstance(raw, Mapping):
            return cls()
        budget = None
        if raw.get("micro_usd") is not None and raw.get("period") in PERIODS:
            budget = Budget(int(raw["micro_usd"]), raw["period"])
        est = raw.get("estimate_micro_usd")
        over = raw.get("over", "hold")
        return cls(
            budget,
            over if over in OVER_BUDGET_POLICIES else "hold",
            int(est) if est is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"over": self.over_budget}
        if self.budget is not None:
            out["micro_usd"] = self.budget.micro_usd
            out["period"] = self.budget.period
        if self.estimate_micro_usd is not None:
            out["estimate_micro_usd"] = self.estimate_micro_usd
        return out

    def public_dict(self) -> dict[str, Any]:
        """As ``tenant list`` shows it."""
        return {
            "budget": str(self.budget) if self.budget else None,
            "over_budget": self.over_budget,
            "cost_estimate_usd": (
                str(micro_to_usd(self.estimate_micro_usd))
                if self.estimate_micro_usd is not None
                else None
            ),
        }


#: "Leave as it is" for ``set_tenant_budget``'s optional settings.
KEEP: Final = "keep"


def set_tenant_budget(
    conn: redis.Redis,
    keys: Keys,
    name: str,
    *,
    budget: Budget | str | None = KEEP,
    over_budget: OverBudget | None = None,
    estimate_micro_usd: int | str | None = KEEP,
) -> TenantBudget:
    """Change a configured tenant's budget settings (``KEEP``: unchanged; None: removed),
    keeping every other setting of its JSON (even ones this version does not know), then run
    admission (a raised budget admits at once)."""
    check_tenant_name(name)
    if over_budget is not None and over_budget not in OVER_BUDGET_POLICIES:
        raise BudgetError("over-budget policy is 'hold' or 'fail'")
    if isinstance(estimate_micro_usd, int) and estimate_micro_usd <= 0:
        raise BudgetError("a cost estimate is above zero")
    with conn.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.tenants)  # type: ignore[no-untyped-call]
                raw = pipe.hget(keys.tenants, name)
                if raw is None and name != DEFAULT_TENANT:
                    raise TenantError(f"unknown tenant {name!r}")
                config = TenantConfig.from_json(name, raw)  # type: ignore[arg-type]
                current = TenantBudget.of(config)
                new = TenantBudget(
                    current.budget if isinstance(budget, str) else budget,
                    over_budget or current.over_budget,
                    current.estimate_micro_usd
                    if isinstance(estimate_micro_usd, str)
                    else estimate_micro_usd,
                )
                other = {**config.other, TENANT_JSON_KEY: new.to_dict()}
                stored = dataclasses.replace(config, other=other)
                pipe.multi()
                pipe.hset(keys.tenants, name, stored.to_json())
                pipe.execute()
                break
            except redis.WatchError:
                continue
    budget_changed(conn, keys)
    return new


def set_deployment_budget(conn: redis.Redis, keys: Keys, budget: Budget | None) -> int:
    """Set (or remove, None) the budget of the whole deployment, then run admission (a raised
    budget admits what it now covers); returns how many were admitted."""
    if budget is None:
        conn.hdel(keys.budget, "micro_usd", "period")
    else:
        conn.hset(keys.budget, mapping={"micro_usd": budget.micro_usd, "period": budget.period})
    return budget_changed(conn, keys)


def budget_changed(conn: redis.Redis, keys: Keys) -> int:
    """After any budget changed: no tenant is held for budget until admission looks again
    (it marks again the ones still held), and admission runs; returns how many it admitted."""
    conn.delete(keys.budget_held)
    return admit_all_sync(conn, keys)


def held_tenants(raw: Mapping[str, str], now_ms: int) -> frozenset[str]:
    """The tenants held for budget at Redis time ``now_ms``, from the ``budget_held`` hash."""
    return frozenset(t for t, until in raw.items() if int(until) > now_ms)


def with_budget_holds(
    waiting: Mapping[tuple[str, str], int], held: frozenset[str]
) -> dict[tuple[str, str], int]:
    """Waiting requests by (tenant, reason), a held tenant's all counted as ``budget``: they
    queued for another reason, but none of them goes before its tenant's budget covers the
    next one (admission keeps a tenant's order)."""
    out: dict[tuple[str, str], int] = {}
    for (tenant, reason), n in waiting.items():
        key = (tenant, "budget" if tenant in held else reason)
        out[key] = out.get(key, 0) + n
        out.setdefault((tenant, reason), 0)
    return out


def waiting_reason(reason: str | None, tenant: str, held: frozenset[str]) -> str | None:
    """What a waiting request waits for (None: it does not wait)."""
    if reason and tenant in held:
        return "budget"
    return reason


def deployment_budget(raw: Mapping[str, str]) -> Budget | None:
    """The deployment's budget from its hash (None: no budget)."""
    micro, period = raw.get("micro_usd"), raw.get("period")
    if micro is None or period not in PERIODS:
        return None
    return Budget(int(micro), period)


async def publish_worker_settings(
    client: redis.asyncio.Redis, keys: Keys, estimate_micro_usd: int, *, test_clock: bool
) -> None:
    """At a worker's start: the deployment's default cost estimate (last started wins), and
    the test clock dropped unless this worker was started to honour it."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.budget, "cost_estimate_micro_usd", str(estimate_micro_usd))
        if not test_clock:
            pipe.hdel(keys.budget, TEST_CLOCK_FIELD)
        await pipe.execute()


@dataclass(frozen=True, slots=True)
class Ledger:
    """One scope's figures in one period (micro-USD)."""

    spent: int = 0
    reserved: int = 0
    #: The part of ``spent`` counted at an estimate (unknown costs, possibly billed attempts).
    estimated: int = 0
    admitted: int = 0

    @property
    def used(self) -> int:
        return self.spent + self.reserved

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "spent_usd": str(micro_to_usd(self.spent)),
            "reserved_usd": str(micro_to_usd(self.reserved)),
            "estimated_usd": str(micro_to_usd(self.estimated)),
            "admitted": self.admitted,
        }


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """A scope (a tenant, or None: the deployment): its budget and its day's and month's
    ledgers."""

    tenant: str | None
    budget: Budget | None
    day: Ledger
    month: Ledger
    over_budget: OverBudget = "hold"

    @property
    def current(self) -> Ledger:
        """The ledger of the budget's period (the day's when there is no budget)."""
        return self.month if self.budget and self.budget.period == "month" else self.day

    @property
    def left_micro_usd(self) -> int | None:
        return None if self.budget is None else self.budget.micro_usd - self.current.used

    @property
    def used_share(self) -> float | None:
        """Spent plus reserved over the budget (None without one; inf for a zero budget
        with anything used)."""
        if self.budget is None:
            return None
        if self.budget.micro_usd == 0:
            return 0.0 if self.current.used == 0 else float("inf")
        return self.current.used / self.budget.micro_usd

    def to_json_dict(self) -> dict[str, Any]:
        left = self.left_micro_usd
        return {
            "tenant": self.tenant,
            "budget": str(self.budget) if self.budget else None,
            "budget_usd": str(micro_to_usd(self.budget.micro_usd)) if self.budget else None,
            "period": self.budget.period if self.budget else None,
            "over_budget": self.over_budget if self.tenant is not None else None,
            "left_usd": str(micro_to_usd(left)) if left is not None else None,
            "day": self.day.to_json_dict(),
            "month": self.month.to_json_dict(),
        }


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Budgets, spend and reservations now: the deployment's and each tenant's."""

    periods: Periods
    deployment: BudgetLine
    tenants: dict[str, BudgetLine] = field(default_factory=dict)
    #: The deployment's default estimate as the workers wrote it (None: no worker yet).
    cost_estimate_micro_usd: int | None = None
    #: Non-zero only in tests (``TEST_CLOCK_FIELD``).
    test_clock_offset_ms: int = 0
    #: Tenants held for budget now: their waiting requests wait for budget.
    held: frozenset[str] = frozenset()

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "day": self.periods.day,
            "month": self.periods.month,
            "deployment": self.deployment.to_json_dict(),
            "tenants": {t: line.to_json_dict() for t, line in self.tenants.items()},
            "held_for_budget": sorted(self.held),
            "cost_estimate_usd": (
                str(micro_to_usd(self.cost_estimate_micro_usd))
                if self.cost_estimate_micro_usd is not None
                else str(micro_to_usd(DEFAULT_COST_ESTIMATE_MICRO_USD))
            ),
        }
        if self.test_clock_offset_ms:
            out["test_clock_offset_ms"] = self.test_clock_offset_ms
        return out


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _pairs(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {_s(k): _s(v) for k, v in raw.items()}
    items = list(raw or [])
    return {_s(items[i]): _s(items[i + 1]) for i in range(0, len(items), 2)}


def budget_commands(keys: Keys, clock_ms: int) -> list[tuple[str, ...]]:
    """The reads of one budget snapshot at budget-clock time ``clock_ms`` (one pipeline)."""
    p = periods_at(clock_ms)
    return [
        ("HGETALL", keys.budget),
        ("HGETALL", keys.tenants),
        ("HGETALL", keys.budget_ledger("day", p.day)),
        ("HGETALL", keys.budget_ledger("month", p.month)),
        ("HGETALL", keys.budget_held),
    ]


def _ledger(raw: Mapping[str, str], tenant: str | None) -> Ledger:
    head = "" if tenant is None else f"{TENANT_FIELD_PREFIX}{TOTALS_SEP}{tenant}{TOTALS_SEP}"
    vals = [int(raw.get(head + f, "0")) for f in LEDGER_FIELDS]
    return Ledger(spent=vals[1], reserved=vals[0], estimated=vals[2], admitted=vals[3])


def parse_budgets(replies: Sequence[Any], clock_ms: int, now_ms: int) -> BudgetStatus:
    """:class:`BudgetStatus` from the replies to :func:`budget_commands` (``clock_ms``: the
    budget clock they were sent for; ``now_ms``: Redis' time)."""
    budget_raw, tenants_raw, day_raw, month_raw, held_raw = (_pairs(r) for r in replies)
    tenants: dict[str, BudgetLine] = {}
    names = [DEFAULT_TENANT, *sorted(set(tenants_raw) - {DEFAULT_TENANT})]
    for name in names:
        tb = TenantBudget.of(TenantConfig.from_json(name, tenants_raw.get(name)))
        tenants[name] = BudgetLine(
            name, tb.budget, _ledger(day_raw, name), _ledger(month_raw, name), tb.over_budget
        )
    est = budget_raw.get("cost_estimate_micro_usd")
    return BudgetStatus(
        periods=periods_at(clock_ms),
        deployment=BudgetLine(
            None, deployment_budget(budget_raw), _ledger(day_raw, None), _ledger(month_raw, None)
        ),
        tenants=tenants,
        cost_estimate_micro_usd=int(est) if est is not None else None,
        test_clock_offset_ms=int(budget_raw.get("test_clock_offset_ms", "0") or 0),
        held=held_tenants(held_raw, now_ms),
    )


def budget_status(conn: redis.Redis, keys: Keys) -> BudgetStatus:
    """Budgets, spend and reservations now (two round trips: the clock, then the ledgers)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.hget(keys.budget, TEST_CLOCK_FIELD)
        (secs, micros), offset = pipe.execute()
    now = int(secs) * 1000 + int(micros) // 1000
    clock = now + int(offset or 0)
    with conn.pipeline(transaction=False) as pipe:
        for cmd in budget_commands(keys, clock):
            pipe.execute_command(*cmd)  # type: ignore[no-untyped-call]
        replies = pipe.execute()
    return parse_budgets(replies, clock, now)


async def budget_status_async(client: redis.asyncio.Redis, keys: Keys) -> BudgetStatus:
    """:func:`budget_status` on an asyncio client."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.hget(keys.budget, TEST_CLOCK_FIELD)
        (secs, micros), offset = await pipe.execute()
    now = int(secs) * 1000 + int(micros) // 1000
    clock = now + int(offset or 0)
    async with client.pipeline(transaction=False) as pipe:
        for cmd in budget_commands(keys, clock):
            pipe.execute_command(*cmd)
        replies = await pipe.execute()
    return parse_budgets(replies, clock, now)


def describe(status: BudgetStatus) -> str:
    """A short JSON of the status (logs, ``budget show --json``)."""
    return json.dumps(status.to_json_dict(), separators=(",", ":"))
