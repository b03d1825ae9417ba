"""The script fast path (``producer/evalsha.py``): the same bytes, replies and errors as
redis-py's ``Script``, and connections that never hand a stale reply to the next call."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio
from redis.exceptions import ResponseError

from genqueue.producer.evalsha import ScriptRunner, pack_evalsha, script_caller

ECHO = "return {KEYS[1], ARGV[1], #KEYS, #ARGV}"


def test_pack_matches_redis_py() -> None:
    """The packed command is byte for byte what redis-py sends for the same call."""
    conn = redis.asyncio.Connection()
    keys = ["gq:record:r1", "gq:é-tenant"]
    for args in (
        ["plain", "", "ünïcode ✓", 7, -3, 0.25],
        [b"\xff\x00raw", "x", 12],
    ):
        expected = b"".join(conn.pack_command("EVALSHA", "a" * 40, len(keys), *keys, *args))
        assert pack_evalsha("a" * 40, keys, args) == expected


def test_pack_refuses_a_bool() -> None:
    """A bool is refused, as redis-py's encoder refuses it (a unit or flag bug)."""
    with pytest.raises(TypeError):
        pack_evalsha("a" * 40, [], [True])


async def test_same_reply_as_redis_py(aredis: redis.asyncio.Redis) -> None:
    """A script run through the runner answers what redis-py's own call answers."""
    script = aredis.register_script(ECHO)
    runner = ScriptRunner(aredis)
    keys, args = ["k1", "k2"], ["a1", 2, "ü"]
    assert await runner.run(script, keys, args) == await script(keys=keys, args=args)
    assert await runner.run(script, keys, args) == ["k1", "a1", 2, 3]


async def test_noscript_heals(aredis: redis.asyncio.Redis) -> None:
    """A Redis that forgot its scripts (restart, flush) gets the script loaded again."""
    script = aredis.register_script(ECHO)
    runner = ScriptRunner(aredis)
    assert (await runner.run(script, ["k"], ["v"]))[:2] == ["k", "v"]
    await aredis.script_flush()
    assert (await runner.run(script, ["k"], ["w"]))[:2] == ["k", "w"]


async def test_error_reply_raises_and_connection_stays_usable(
    aredis: redis.asyncio.Redis,
) -> None:
    """A script error is raised as redis-py raises it, and the next call gets its own reply."""
    failing = aredis.register_script("return redis.error_reply('nope')")
    echo = aredis.register_script(ECHO)
    runner = ScriptRunner(aredis)
    with pytest.raises(ResponseError, match="nope"):
        await runner.run(failing, [], [])
    assert (await runner.run(echo, ["k"], ["after"]))[:2] == ["k", "after"]


async def test_cancelled_call_leaves_no_stray_reply(aredis: redis.asyncio.Redis) -> None:
    """A call cancelled while its reply is on the way leaves no reply for the next call."""
    slow = aredis.register_script(
        "local t = redis.call('TIME'); local until_us = t[1] * 1e6 + t[2] + 200000 "
        "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= until_us "
        "return 'slow'"
    )
    echo = aredis.register_script(ECHO)
    runner = ScriptRunner(aredis)
    await runner.run(echo, ["warm"], ["up"])  # one connection, reused below
    task = asyncio.ensure_future(runner.run(slow, [], []))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await runner.run(echo, ["k"], ["mine"]))[:2] == ["k", "mine"]


async def test_one_runner_per_client_and_bounded_pools_left_alone(redis_url: str) -> None:
    """Every module of a client shares one runner; a bounded pool keeps redis-py's path."""
    plain = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    pool = redis.asyncio.BlockingConnectionPool.from_url(redis_url, max_connections=2)
    bounded = redis.asyncio.Redis.from_pool(pool)
    try:
        assert script_caller(plain) == script_caller(plain)
        assert isinstance(getattr(script_caller(plain), "__self__", None), ScriptRunner)
        assert not isinstance(getattr(script_caller(bounded), "__self__", None), ScriptRunner)
        script = bounded.register_script(ECHO)
        assert (await script_caller(bounded)(script, ["k"], ["v"]))[:2] == [b"k", b"v"]
    finally:
        await plain.aclose()
        await bounded.aclose()


async def test_a_connection_the_server_closed_is_replaced_before_use(
    aredis: redis.asyncio.Redis, redis_url: str
) -> None:
    """A held connection that Redis closed meanwhile (a restart, a kill) is reconnected
    before the call, as redis-py's pool does: the call does not fail."""
    script = aredis.register_script(ECHO)
    runner = ScriptRunner(aredis)
    await runner.run(script, ["k"], ["before"])
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        await admin.client_kill_filter(_type="normal", skipme=True)
    finally:
        await admin.aclose()
    await asyncio.sleep(0.1)  # the close reaches this side
    assert (await runner.run(script, ["k"], ["after"]))[:2] == ["k", "after"]
