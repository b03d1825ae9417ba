"""``genqueue webhooks``: list and replay dead-lettered webhooks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
import redis
from rich.console import Console
from rich.table import Table

from genqueue.producer.dead_letters import list_dead, replay, replay_all
from genqueue.producer.settings import Settings
from genqueue.terminal import escape_controls, inert


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(f"configuration error: {exc}") from None


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=5)


@click.group()
def webhooks() -> None:
    """Webhooks given up on (dead letters): list them, replay them."""


@webhooks.command()
@click.option("--limit", default=100, show_default=True, help="Newest N dead letters.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def dead(limit: int, as_json: bool) -> None:
    """List dead-lettered webhooks, newest first, with the reason and last HTTP status."""
    settings = _settings()
    with _redis(settings) as conn:
        letters = list_dead(conn, settings, limit)
    if as_json:
        for d in letters:
            click.echo(json.dumps(d.to_json_dict()))
        return
    table = Table(
        "request", "tenant", "dead at", "status", "host", "attempts", "last HTTP", "reason"
    )
    for d in letters:
        at = datetime.fromtimestamp(d.dead_at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        # Hosts and reasons come from submitted URLs and receivers' answers: shown as data.
        table.add_row(inert(d.request_id), d.tenant, at, inert(d.status), inert(d.webhook_host),
                      str(d.attempts), inert(d.last_status or "-"), inert(d.reason))  # fmt: skip
    Console().print(table if letters else "no dead-lettered webhooks")


@webhooks.command(name="replay")
@click.argument("request_id", required=False)
@click.option("--all", "replay_every", is_flag=True, help="Replay every dead letter.")
def replay_cmd(request_id: str | None, replay_every: bool) -> None:
    """Give a dead webhook a fresh attempt (the same webhook-id, so receivers can dedupe)."""
    if bool(request_id) == replay_every:
        raise click.UsageError("give a REQUEST_ID or --all")
    settings = _settings()
    with _redis(settings) as conn:
        if replay_every:
            counts = replay_all(conn, settings)
            others = [f"{n} {k.lower().replace('_', ' ')}" for k, n in counts.items() if k != "OK"]
            click.echo(", ".join([f"replayed {counts.get('OK', 0)}", *others]))
            return
        outcome = replay(conn, settings, str(request_id))
    if outcome == "OK":
        click.echo(f"replayed {escape_controls(str(request_id))}")
    elif outcome == "NOT_DEAD":
        raise click.ClickException(
            f"{escape_controls(str(request_id))}: its webhook is not dead-lettered"
        )
    else:
        raise click.ClickException(
            f"{escape_controls(str(request_id))}: no such request (expired?)"
        )
