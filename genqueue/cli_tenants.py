"""``genqueue tenant`` and ``genqueue key``: the tenants sharing a deployment and their API keys.

Both live in Redis, so every gateway and worker sees a change at once. A created key and a
generated webhook secret are printed once and never again (only a key's hash is stored).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import redis
from rich.console import Console
from rich.table import Table

from genqueue.logs import register_secrets
from genqueue.producer.api_keys import create_key, list_keys, revoke_key
from genqueue.producer.connections import sync_redis
from genqueue.producer.keys import Keys
from genqueue.producer.settings import Settings
from genqueue.producer.tenants import (
    TenantError,
    delete_tenant,
    list_tenants,
    set_tenant,
)
from genqueue.terminal import escape_controls, inert


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(f"configuration error: {exc}") from None


def _redis(settings: Settings) -> redis.Redis:
    try:
        return sync_redis(settings.redis_url, decode_responses=True, socket_connect_timeout=5)
    except ValueError as exc:  # a malformed URL (the message never holds its password)
        raise click.UsageError(f"GENQUEUE_REDIS_URL: {exc}") from None


def _run(action: Any) -> Any:
    """Run ``action(conn, keys)`` against the configured Redis; a refusal is a usage error."""
    settings = _settings()
    with _redis(settings) as conn:
        try:
            return action(conn, settings.keys)
        except TenantError as exc:
            raise click.ClickException(str(exc)) from None


@click.group()
def tenant() -> None:
    """Tenants: the backends sharing this deployment (each request belongs to one)."""


@tenant.command(name="set")
@click.argument("name")
@click.option(
    "--webhook-secret",
    help="Sign this tenant's webhooks with this Standard Webhooks secret (whsec_...; '-' "
    "reads it from stdin, out of the shell history); the previous ones keep signing too "
    "until --retire-old-secrets.",
)
@click.option(
    "--generate-webhook-secret",
    is_flag=True,
    help="Generate a webhook secret (printed once) and sign with it from now on.",
)
@click.option(
    "--retire-old-secrets",
    is_flag=True,
    help="Stop signing with every webhook secret but the newest (end of a rotation).",
)
@click.option(
    "--weight",
    type=float,
    help="Share of admissions while tenants wait for upstream slots, relative to the other "
    "tenants' (default 1).",
)
@click.option(
    "--max-inflight",
    type=click.IntRange(min=0),
    help="Most upstream slots this tenant holds at once (0: no cap of its own).",
)
@click.option(
    "--max-waiting",
    type=click.IntRange(min=0),
    help="Most requests waiting for a slot; beyond, submits are refused (0: no bound).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def set_cmd(
    name: str,
    webhook_secret: str | None,
    generate_webhook_secret: bool,
    retire_old_secrets: bool,
    weight: float | None,
    max_inflight: int | None,
    max_waiting: int | None,
    as_json: bool,
) -> None:
    """Create or update the tenant NAME (no flag needed to create it).

    Without a webhook secret of its own, its webhooks are signed with
    GENQUEUE_WEBHOOK_SECRET. A raised weight or cap admits waiting requests at once."""
    if webhook_secret == "-":
        webhook_secret = sys.stdin.readline().strip()
    if webhook_secret:
        register_secrets(webhook_secret)
    result = _run(
        lambda conn, keys: set_tenant(
            conn,
            keys,
            name,
            webhook_secret=webhook_secret,
            generate_webhook_secret=generate_webhook_secret,
            retire_old_secrets=retire_old_secrets,
            weight=weight,
            max_inflight=max_inflight,
            max_waiting=max_waiting,
        )
    )
    out: dict[str, Any] = {**result.config.public_dict(), "created": result.created}
    if result.generated_secret:
        register_secrets(result.generated_secret)
        out["webhook_secret"] = result.generated_secret  # shown once: stored for signing only
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"tenant {name} {'created' if result.created else 'updated'}")
    click.echo(f"webhook secrets signing: {out['webhook_secrets'] or 'GENQUEUE_WEBHOOK_SECRET'}")
    click.echo(
        f"weight {out['weight']:g}, max in flight {out['max_inflight'] or 'none'}, "
        f"max waiting {out['max_waiting'] or 'none'}"
    )
    if result.generated_secret:
        click.echo(f"webhook secret (shown once): {result.generated_secret}")


@tenant.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def list_cmd(as_json: bool) -> None:
    """List the tenants (`default` always exists); secrets are never shown."""
    tenants = _run(list_tenants)
    if as_json:
        for t in tenants:
            click.echo(json.dumps(t.public_dict()))
        return
    table = Table("tenant", "own webhook secrets", "weight", "max in flight", "max waiting")
    for t in tenants:
        table.add_row(
            t.name,
            str(len(t.webhook_secrets)) if t.webhook_secrets else "-",
            f"{t.weight:g}",
            str(t.max_inflight or "-"),
            str(t.max_waiting or "-"),
        )
    Console().print(table)


@tenant.command(name="delete")
@click.argument("name")
def delete_cmd(name: str) -> None:
    """Delete the tenant NAME and revoke its keys (refused while it has requests in flight)."""
    revoked = _run(lambda conn, keys: delete_tenant(conn, keys, name))
    click.echo(f"tenant {name} deleted; {revoked} API key(s) revoked")


@click.group()
def key() -> None:
    """API keys of the gateway: each belongs to a tenant, or is an admin key."""


@key.command(name="create")
@click.option("--tenant", "tenant_name", help="The tenant the key acts for (configured).")
@click.option("--admin", is_flag=True, help="An operator's key: reaches every tenant.")
@click.option("--name", "label", default="", help="A label to recognise the key by.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: key, tenant, id.")
def create_cmd(tenant_name: str | None, admin: bool, label: str, as_json: bool) -> None:
    """Create a key and print it once (only its hash is stored: it cannot be shown again)."""
    if admin == (tenant_name is not None):
        raise click.UsageError("give --tenant NAME or --admin")

    def create(conn: redis.Redis, keys: Keys) -> tuple[str, Any]:
        return create_key(conn, keys, tenant=tenant_name, name=label, admin=admin)

    secret, owner = _run(create)
    register_secrets(secret)
    if as_json:
        click.echo(json.dumps({"key": secret, "tenant": owner.tenant, "id": owner.id}))
        return
    whose = "admin" if admin else f"tenant {owner.tenant}"
    click.echo(f"key {owner.id} ({whose}); shown once, store it now:", err=True)
    click.echo(secret)


@key.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def list_keys_cmd(as_json: bool) -> None:
    """List the stored keys: id, tenant, label (never a key)."""
    owners = _run(list_keys)
    if as_json:
        for o in owners:
            click.echo(json.dumps(o.to_json_dict()))
        return
    table = Table("id", "tenant", "name")
    for o in owners:
        table.add_row(o.id, "(admin)" if o.admin else str(o.tenant), inert(o.name))
    Console().print(table if owners else "no stored API keys")


@key.command(name="revoke")
@click.argument("key_id")
def revoke_cmd(key_id: str) -> None:
    """Revoke the key KEY_ID: every gateway refuses it from its next request."""
    if not _run(lambda conn, keys: revoke_key(conn, keys, key_id)):
        raise click.ClickException(f"no API key with id {escape_controls(key_id)}")
    click.echo(f"revoked {escape_controls(key_id)}")
