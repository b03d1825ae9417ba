"""The Lua scripts: loading, assembling and running them.

Every script lives in ``producer/lua/<name>.lua``. A script is assembled by replacing each
``--- @include "x"`` line with the helper file ``lua/_x.lua`` (each helper once per script,
helpers may include others) or, for ``"constants"``, with a chunk generated from
``producer/keys.py`` (statuses, the totals separator, the inline-arm marker), so the Lua
never repeats a definition the Python owns. What each script takes and answers is in
``producer/contracts.py`` (one builder per script) and ``producer/replies.py`` (one reply
type per script).

redis-py ``Script`` objects send ``EVALSHA`` and reload on ``NOSCRIPT``, so a Redis restart
(which forgets ``SCRIPT LOAD``) heals itself (architecture rule 6).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Generic, Literal, TypeVar, get_args

import redis
import redis.asyncio

from genqueue.producer.evalsha import script_caller
from genqueue.producer.keys import (
    ADMIT_TASK,
    BUDGET_SUFFIX,
    COUNTS_SUFFIX,
    DEFAULT_COST_ESTIMATE_MICRO_USD,
    DEFAULT_TENANT,
    HOLDING_SLOT,
    INLINE_ARM_MARKER,
    NON_TERMINAL,
    PRIORITY_BAND,
    RECORD_INFIX,
    SCHEMA_VERSION,
    SUBMIT_TASK,
    TENANT_FIELD_PREFIX,
    TOTALS_SEP,
    WAITING_FIELD,
    WAITING_INFIX,
    WAKE_AT_SUFFIX,
    WAKE_SUFFIX,
)

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
    "track_extra",
    "expire_waiting",
]
#: The transition scripts (the ones that change a record); registered by ``AsyncScripts``.
SCRIPT_NAMES: tuple[ScriptName, ...] = get_args(ScriptName)
#: The other scripts, each registered by the one module that runs it.
OTHER_SCRIPT_NAMES: tuple[str, ...] = (
    "arm",
    "claim_due",
    "record_duration",
    "pause",
    "pause_streak",
    "tenant_delete",
    "admit",
    "gateway_limit",
)

_INCLUDE = re.compile(r'^--- @include "([a-z_]+)"[ \t]*$', re.MULTILINE)


def _lua_str(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_:|]*", value):
        raise ValueError(f"not a plain Lua string: {value!r}")
    return f"'{value}'"


def constants_lua() -> str:
    """The Lua of ``--- @include "constants"``: the Python definitions the scripts use."""
    non_terminal = ", ".join(f"{s} = true" for s in NON_TERMINAL)
    holding = ", ".join(_lua_str(s) for s in HOLDING_SLOT)
    return (
        "-- Generated from producer/keys.py by producer/scripts.py (constants_lua).\n"
        f"local NON_TERMINAL = {{{non_terminal}}}\n"
        f"local HOLDING_SLOT = {{{holding}}}\n"
        f"local SEP = {_lua_str(TOTALS_SEP)}\n"
        f"local TENANT_FIELD_PREFIX = {_lua_str(TENANT_FIELD_PREFIX)}\n"
        f"local INLINE_ARM_MARKER = {_lua_str(INLINE_ARM_MARKER)}\n"
        f"local WAKE_SUFFIX = {_lua_str(WAKE_SUFFIX)}\n"
        f"local WAKE_AT_SUFFIX = {_lua_str(WAKE_AT_SUFFIX)}\n"
        f"local DEFAULT_TENANT = {_lua_str(DEFAULT_TENANT)}\n"
        f"local COUNTS_SUFFIX = {_lua_str(COUNTS_SUFFIX)}\n"
        f"local BUDGET_SUFFIX = {_lua_str(BUDGET_SUFFIX)}\n"
        f"local BUDGET_DEFAULT_ESTIMATE_MICRO_USD = {DEFAULT_COST_ESTIMATE_MICRO_USD:d}\n"
        f"local WAITING_INFIX = {_lua_str(WAITING_INFIX)}\n"
        f"local RECORD_INFIX = {_lua_str(RECORD_INFIX)}\n"
        f"local WAITING_FIELD = {_lua_str(WAITING_FIELD)}\n"
        f"local SUBMIT_TASK = {_lua_str(SUBMIT_TASK)}\n"
        f"local ADMIT_TASK = {_lua_str(ADMIT_TASK)}\n"
        f"local SCHEMA_VERSION = {int(SCHEMA_VERSION)}\n"
        f"local PRIORITY_BAND = {int(PRIORITY_BAND)}\n"
    )


def _read(file_name: str) -> str:
    return (files("genqueue.producer") / "lua" / file_name).read_text()


def assemble(text: str) -> str:
    """Lua text with its ``--- @include`` lines replaced (each helper at most once)."""
    seen: set[str] = set()

    def expand(chunk: str) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in seen:
                return f"-- (included above: {name})"
            seen.add(name)
            body = constants_lua() if name == "constants" else _read(f"_{name}.lua")
            return f"-- >>> {name}\n{expand(body).rstrip()}\n-- <<< {name}"

        return _INCLUDE.sub(one, chunk)

    return expand(text)


@cache
def source(name: str) -> str:
    """The assembled Lua source of the script ``lua/<name>.lua``."""
    return assemble(_read(f"{name}.lua"))


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ScriptCall(Generic[R]):
    """Everything one script invocation sends (keys and arguments, as strings) and how its
    reply is read. Built by ``producer/contracts.py`` only."""

    name: ScriptName
    keys: list[str]
    args: list[str]
    parse: Callable[[list[str]], R]


def ms(seconds: float) -> int:
    """Seconds to whole milliseconds (the unit every script speaks)."""
    return max(0, round(seconds * 1000))


def decode_reply(reply: Any) -> list[str]:
    """A script reply (nested bytes/ints) as a flat list of strings."""
    out = []
    for item in reply:
        out.append(item.decode() if isinstance(item, bytes) else str(item))
    return out


class AsyncScripts:
    """The transition scripts registered on one asyncio client."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._scripts = {n: client.register_script(source(n)) for n in SCRIPT_NAMES}
        self._call = script_caller(client)

    async def run(self, c: ScriptCall[R]) -> R:
        return c.parse(decode_reply(await self._call(self._scripts[c.name], c.keys, c.args)))

    async def queue(self, pipe: redis.asyncio.client.Pipeline, c: ScriptCall[Any]) -> None:
        """Queue the script on a pipeline (the pipeline loads it if Redis forgot it)."""
        await self._scripts[c.name](keys=c.keys, args=c.args, client=pipe)


class SyncScripts:
    """The transition scripts registered on one blocking client."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts = {n: client.register_script(source(n)) for n in SCRIPT_NAMES}

    def run(self, c: ScriptCall[R]) -> R:
        return c.parse(decode_reply(self._scripts[c.name](keys=c.keys, args=c.args)))
