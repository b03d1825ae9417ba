"""Operators list dead-lettered webhooks and replay them from the command line."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio
from click.testing import CliRunner

import genqueue.cli
from genqueue.cli import main
from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field
from genqueue.producer.settings import Settings
from tests.test_side_effects import HOOK, REQ, StartSide, rec, start_side, until_webhook


@pytest.fixture(autouse=True)
def _no_global_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)


__all__ = ["start_side"]  # the fixture, shared with test_side_effects.py


def cli(settings: Settings, *args: str) -> Any:
    env = {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_KEY_PREFIX": settings.key_prefix,
           "COLUMNS": "250"}  # fmt: skip
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


async def test_dead_letters_are_listed_and_replayed_with_the_same_webhook_id(
    client: AsyncClient,
    start_side: StartSide,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """`genqueue webhooks dead --json` lists a given-up webhook with its reason and last HTTP
    status; `genqueue webhooks replay ID` delivers it again with the same webhook-id."""
    receiver = await start_side([500] * 1000, webhook_retry_s=0.05, webhook_max_age_s=0.3)
    rid = await client.submit(REQ, webhook_url=HOOK)
    await until_webhook(aredis, settings, rid, "dead", 30)

    listed = cli(settings, "webhooks", "dead", "--json")
    assert listed.exit_code == 0, listed.output
    (entry,) = [json.loads(line) for line in listed.output.splitlines()]
    assert entry["request_id"] == rid and entry["status"] == "completed"
    assert entry["last_status"] == "500" and "HTTP 500" in entry["reason"]
    assert entry["webhook_host"] == "hooks.test" and "token" not in listed.output
    assert entry["attempts"] == len(receiver.received)
    table = cli(settings, "webhooks", "dead")
    assert rid in table.output and "HTTP 500" in table.output

    receiver.statuses.clear()  # the receiver is fixed: it answers 200 from now on
    before = len(receiver.received)
    replayed = cli(settings, "webhooks", "replay", rid)
    assert replayed.exit_code == 0 and f"replayed {rid}" in replayed.output
    await until_webhook(aredis, settings, rid, "done", 30)
    ids = {r["headers"]["webhook-id"] for r in receiver.received}
    assert len(receiver.received) == before + 1 and ids == {f"wh_{rid}"}
    assert not await aredis.zcard(settings.keys.dead_letters)
    assert cli(settings, "webhooks", "dead", "--json").output == ""
    again = cli(settings, "webhooks", "replay", rid)
    assert again.exit_code == 1 and "not dead-lettered" in again.output


async def test_replay_all_and_records_from_before_last_status(
    client: AsyncClient,
    start_side: StartSide,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """`replay --all` replays every dead letter; a record dead-lettered by the previous
    version (no last-status field) is listed with an empty last status."""
    receiver = await start_side([410, 410])
    ids = [await client.submit(REQ, webhook_url=HOOK) for _ in range(2)]
    for rid in ids:
        await until_webhook(aredis, settings, rid, "dead", 30)
    await aredis.hdel(settings.keys.record(ids[0]), Field.WEBHOOK_LAST_STATUS)  # type: ignore[misc]
    listed = [
        json.loads(x) for x in cli(settings, "webhooks", "dead", "--json").output.splitlines()
    ]
    assert {e["request_id"]: e["last_status"] for e in listed} == {ids[0]: "", ids[1]: "410"}

    out = cli(settings, "webhooks", "replay", "--all")
    assert out.exit_code == 0 and "replayed 2" in out.output
    for rid in ids:
        await until_webhook(aredis, settings, rid, "done", 30)
        assert (await rec(aredis, settings, rid))[Field.WEBHOOK_ATTEMPTS] == "1"
    assert len(receiver.received) == 4
    assert cli(settings, "webhooks", "replay").exit_code == 2  # neither an id nor --all
