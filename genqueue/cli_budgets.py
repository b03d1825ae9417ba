"""``genqueue budget``: the deployment's spend budget, and every budget's spend now; the
options of ``genqueue tenant set`` that set a tenant's (``producer/budgets.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis
from rich.console import Console
from rich.table import Table

from genqueue.producer.budgets import (
    KEEP,
    BudgetError,
    BudgetLine,
    BudgetStatus,
    budget_status,
    parse_budget,
    set_deployment_budget,
    set_tenant_budget,
    short_usd,
    usd_to_micro_exact,
)
from genqueue.producer.keys import Keys
from genqueue.producer.tenants import TenantError

F = TypeVar("F", bound=Callable[..., Any])


def tenant_budget_options(f: F) -> F:
    """``--budget-usd``, ``--over-budget`` and ``--cost-estimate-usd`` of ``tenant set``."""
    f = click.option(
        "--cost-estimate-usd",
        help="The cost its budget reserves per video while the model's costs are not known "
        "yet (default: GENQUEUE_COST_ESTIMATE_USD; 'none' removes it).",
    )(f)
    f = click.option(
        "--over-budget",
        type=click.Choice(["hold", "fail"]),
        help="A request its budget cannot cover waits for the next period or a raised "
        "budget (hold, the default) or fails at once (fail).",
    )(f)
    f = click.option(
        "--budget-usd",
        help="Spend budget: AMOUNT/day or AMOUNT/month (UTC), e.g. 20/day; 'none' removes it.",
    )(f)
    return f


def apply_tenant_budget(
    conn: redis.Redis,
    keys: Keys,
    name: str,
    budget_usd: str | None,
    over_budget: str | None,
    cost_estimate_usd: str | None,
) -> dict[str, Any] | None:
    """Store the budget options given to ``tenant set`` (None when none was given)."""
    if budget_usd is None and over_budget is None and cost_estimate_usd is None:
        return None
    estimate: int | str | None = KEEP
    if cost_estimate_usd is not None:
        estimate = (
            None
            if cost_estimate_usd.strip().lower() == "none"
            else usd_to_micro_exact(cost_estimate_usd.strip().lstrip("$"))
        )
    result = set_tenant_budget(
        conn,
        keys,
        name,
        budget=KEEP if budget_usd is None else parse_budget(budget_usd),
        over_budget=over_budget,  # type: ignore[arg-type]
        estimate_micro_usd=estimate,
    )
    return result.public_dict()


def _usd(micro: int | None) -> str:
    return "-" if micro is None else short_usd(micro)


def _row(table: Table, name: str, line: BudgetLine) -> None:
    cur = line.current
    share = line.used_share
    table.add_row(
        name,
        str(line.budget) if line.budget else "-",
        _usd(cur.spent),
        _usd(cur.reserved),
        _usd(line.left_micro_usd),
        "-" if share is None else f"{share:.0%}",
        str(cur.admitted),
        line.over_budget if line.tenant is not None and line.budget else "",
    )


def budget_table(status: BudgetStatus, only: str | None = None) -> Table:
    """Spend against budget: the deployment, then each tenant, in its budget's period (with
    ``only``: that tenant's line alone)."""
    table = Table(
        title=f"Budgets (UTC day {status.periods.day}, month {status.periods.month})",
        title_justify="left",
    )
    for col in ("scope", "budget", "spent", "reserved", "left", "used", "admitted", "over"):
        table.add_column(col, justify="left" if col in ("scope", "budget", "over") else "right")
    if only is None:
        _row(table, "(all)", status.deployment)
    for name, line in status.tenants.items():
        if only is None or name == only:
            _row(table, name + (" (held)" if name in status.held else ""), line)
    return table


def _conn_keys() -> tuple[redis.Redis, Keys]:
    from genqueue.cli_tenants import _redis, _settings

    settings = _settings()
    return _redis(settings), settings.keys


@click.group()
def budget() -> None:
    """Spend budgets: the deployment's, and spend against every budget now."""


@budget.command(name="set")
@click.option("--usd", "amount", required=True, help="AMOUNT/day or AMOUNT/month, or none.")
def set_cmd(amount: str) -> None:
    """Set the spend budget of the whole deployment (every tenant's videos count in it)."""
    conn, keys = _conn_keys()
    with conn:
        try:
            parsed = parse_budget(amount)
            set_deployment_budget(conn, keys, parsed)
        except (BudgetError, TenantError) as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"deployment budget: {parsed if parsed else 'none'}")


@budget.command(name="show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(as_json: bool) -> None:
    """Show each budget with its spend and reservations in the current period."""
    conn, keys = _conn_keys()
    with conn:
        status = budget_status(conn, keys)
    if as_json:
        click.echo(json.dumps(status.to_json_dict()))
        return
    Console().print(budget_table(status))
    if status.test_clock_offset_ms:
        click.echo(
            f"warning: the budget test clock is set ({status.test_clock_offset_ms} ms ahead): "
            "a worker started without GENQUEUE_BUDGET_TEST_CLOCK deletes it",
            err=True,
        )
