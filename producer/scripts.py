"""The Lua transition scripts: the only code that changes a record's status.

redis-py ``Script`` objects send ``EVALSHA`` and reload on ``NOSCRIPT``, so a Redis restart
(which forgets ``SCRIPT LOAD``) heals itself (DESIGN.md rule 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Literal

import redis
import redis.asyncio

from genqueue.producer.keys import Keys
from genqueue.producer.settings import Settings
from genqueue.producer.timers import Timer, inline_arm

ScriptName = Literal[
    "create",
    "begin_submit",
    "begin_poll",
    "submitted",
    "submit_release",
    "poll_update",
    "finish",
    "cancel",
    "side_effect",
    "side_attempt",
    "webhook_replay",
]
SCRIPT_NAMES: tuple[ScriptName, ...] = (
    "create",
    "begin_submit",
    "begin_poll",
    "submitted",
    "submit_release",
    "poll_update",
    "finish",
    "cancel",
    "side_effect",
    "side_attempt",
    "webhook_replay",
)


@cache
def source(name: str) -> str:
    """The full Lua source of a script: its name (``SCRIPT``), the shared prelude, its body."""
    lua = files("genqueue.producer") / "lua"
    prelude = (lua / "_prelude.lua").read_text()
    return f"local SCRIPT = '{name}'\n{prelude}\n" + (lua / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """Everything one script invocation sends: keys and arguments, as strings."""

    name: ScriptName
    keys: list[str]
    args: list[str]


def call(
    settings: Settings,
    name: ScriptName,
    request_id: str,
    *extra: str | int,
    idempotency_key: str | None = None,
    extra_keys: tuple[str, ...] = (),
    arm: Timer | None = None,
) -> ScriptCall:
    """Build a script call with the shared leading arguments (see ``_prelude.lua``).

    ``arm``: the timer step the caller expects the script to move to; the script enqueues it
    if it does (the caller checks the reply's seq and arms any other step itself).
    """
    keys: Keys = settings.keys
    common = [
        request_id,
        str(settings.events_maxlen),
        keys.done_channel(request_id),
        str(ms(settings.retention_s)),
    ]
    arm_keys, arm_args = inline_arm(keys.queue, arm) if arm is not None else ([], [])
    return ScriptCall(
        name,
        keys.script_keys(request_id, idempotency_key) + list(extra_keys) + arm_keys,
        common + [_arg(x) for x in extra] + arm_args,
    )


def ms(seconds: float) -> int:
    """Seconds to whole milliseconds (the unit every script speaks)."""
    return max(0, round(seconds * 1000))


def _arg(x: str | int) -> str:
    if isinstance(x, float):  # a float here is a unit bug: scripts take whole milliseconds
        raise TypeError(f"script arguments are str or int, got float {x!r}")
    return str(x)


def decode_reply(reply: Any) -> list[str]:
    """A script reply (nested bytes/ints) as a flat list of strings."""
    out = []
    for item in reply:
        out.append(item.decode() if isinstance(item, bytes) else str(item))
    return out


class AsyncScripts:
    """The scripts registered on one asyncio client."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._scripts = {n: client.register_script(source(n)) for n in SCRIPT_NAMES}

    async def run(self, c: ScriptCall) -> list[str]:
        return decode_reply(await self._scripts[c.name](keys=c.keys, args=c.args))

    async def queue(self, pipe: redis.asyncio.client.Pipeline, c: ScriptCall) -> None:
        """Queue the script on a pipeline (the pipeline loads it if Redis forgot it)."""
        await self._scripts[c.name](keys=c.keys, args=c.args, client=pipe)


class SyncScripts:
    """The scripts registered on one blocking client."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts = {n: client.register_script(source(n)) for n in SCRIPT_NAMES}

    def run(self, c: ScriptCall) -> list[str]:
        return decode_reply(self._scripts[c.name](keys=c.keys, args=c.args))


async def run_with(
    client: redis.asyncio.Redis, scripts: AsyncScripts, c: ScriptCall, *command: str | int
) -> tuple[list[str], Any]:
    """Run a script and then ``command`` on the same connection (``WAIT``/``WAITAOF`` only
    count the writes of their own connection)."""
    async with client.pipeline(transaction=False) as pipe:
        await scripts.queue(pipe, c)
        pipe.execute_command(*command)
        reply, extra = await pipe.execute()
    return decode_reply(reply), extra
