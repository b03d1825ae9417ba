"""``EVALSHA`` without redis-py's generic command path: the transition scripts' hot path.

A worker's status check is two script calls and its share of a look, and redis-py spent
more worker CPU around each call than the upstream's HTTP exchange: ``execute_command``,
the pool's lock, its deprecation wrapper and its zero-timeout read that checks a connection
has no stray reply before handing it out, a release event, the retry wrapper, and
``pack_command``, which encodes the ~25 keys and arguments one at a time into a growing
buffer (py-spy on the comparison's workers: ~27 % of their CPU in ``execute_command``).

Here a script call packs its command in one pass and runs on a connection this module holds
for good (taken from the client's own pool, so closing the client closes it): no lock, no
check for a stray reply, because a connection is never left holding one — redis-py's
``send_packed_command`` and ``read_response`` disconnect on any exception, a cancellation
included, and a disconnected connection reconnects on its next command; one Redis closed
while it was held (a restart) is reconnected before use, as the pool would. Replies are read and
decoded by the connection's own parser (hiredis), as before; ``NOSCRIPT`` (Redis restarted and
forgot its scripts) loads the script and sends it again, as redis-py's ``Script`` does
(architecture rule 6). A bounded pool (``BlockingConnectionPool``) is left to redis-py: a
connection held for good would be one fewer for everything else.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Arg = str | bytes | int | float

_HEAD = "$7\r\nEVALSHA\r\n"


def _text(x: Arg) -> str:
    """A non-``str`` key or argument as redis-py's encoder writes it (``bytes`` aside)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"script keys and arguments are str, bytes, int or float, not {x!r}")
    return repr(x) if isinstance(x, float) else str(x)


def _pack_bytes(items: list[Arg]) -> bytes:
    parts = [
        x if isinstance(x, bytes) else (x if isinstance(x, str) else _text(x)).encode()
        for x in items
    ]
    out = [b"*%d\r\n" % (len(parts) + 1), _HEAD.encode()]
    out += [b"$%d\r\n%s\r\n" % (len(p), p) for p in parts]
    return b"".join(out)


def pack_evalsha(sha: str, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
    """The RESP bytes of ``EVALSHA sha len(keys) *keys *args`` (what redis-py would send),
    built as one text and encoded once (UTF-8, as the client's encoder)."""
    items: list[Arg] = [sha, str(len(keys)), *keys, *args]
    out = [f"*{len(items) + 1}\r\n{_HEAD}"]
    for x in items:
        if type(x) is not str:
            if isinstance(x, bytes):
                return _pack_bytes(items)  # any bytes (maybe not UTF-8): packed as bytes
            x = x if isinstance(x, str) else _text(x)
        out.append(f"${len(x) if x.isascii() else len(x.encode())}\r\n{x}\r\n")
    return "".join(out).encode()


def fast_path_for(client: Any) -> bool:
    """True if ``client`` can take this module's path (a plain asyncio client whose pool is
    not bounded); else its scripts go through redis-py's own ``Script``."""
    return isinstance(client, redis.asyncio.Redis) and not isinstance(
        client.connection_pool, redis.asyncio.BlockingConnectionPool
    )


def _closed_by_peer(conn: AbstractConnection) -> bool:
    """The server's end of the connection has closed (its end of stream has arrived)."""
    reader, writer = getattr(conn, "_reader", None), getattr(conn, "_writer", None)
    if reader is None or writer is None:
        return False  # not connected: the send connects it
    return bool(writer.transport.is_closing() or reader.at_eof())


class ScriptRunner:
    """Runs registered scripts of one asyncio client on connections it keeps."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._idle: list[AbstractConnection] = []

    async def _connection(self) -> AbstractConnection:
        if self._idle:
            conn = self._idle.pop()
            if _closed_by_peer(conn):
                # Redis closed it while it was held (a restart, a kill): reconnected by the
                # send, as redis-py's pool checks before handing one out, rather than
                # failing the call.
                await conn.disconnect(nowait=True)
            return conn
        # From the client's pool (counted there as in use), so closing the client closes it.
        fresh: AbstractConnection = await self._client.connection_pool.get_connection()
        return fresh

    async def _exchange(self, packed: bytes) -> Any:
        conn = await self._connection()
        try:
            await conn.send_packed_command(packed)
            return await conn.read_response()
        finally:
            # Also after an error: the connection then holds no reply (see the module).
            self._idle.append(conn)

    async def run(self, script: AsyncScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """``script(keys=keys, args=args)``, the same reply and errors."""
        try:
            return await self._exchange(pack_evalsha(script.sha, keys, args))
        except NoScriptError:
            script.sha = await self._client.script_load(script.script)
            return await self._exchange(pack_evalsha(script.sha, keys, args))


ScriptCaller = Callable[[AsyncScript, Sequence[Arg], Sequence[Arg]], Awaitable[Any]]

#: One runner per client: every module's scripts share its connections.
_RUNNERS: weakref.WeakKeyDictionary[redis.asyncio.Redis, ScriptRunner] = weakref.WeakKeyDictionary()


async def _through_redis_py(script: AsyncScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
    return await script(keys=keys, args=args)  # type: ignore[arg-type]


def script_caller(client: Any) -> ScriptCaller:
    """How to run ``client``'s registered scripts: its shared ``ScriptRunner`` where
    :func:`fast_path_for` allows, else redis-py's ``Script`` call."""
    if not fast_path_for(client):
        return _through_redis_py
    runner = _RUNNERS.get(client)
    if runner is None:
        runner = _RUNNERS[client] = ScriptRunner(client)
    return runner.run
