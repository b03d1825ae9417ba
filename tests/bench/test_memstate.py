"""The sweep's bytes per request (``bench/memstate.py``): what Redis spends once per command
name or connection is kept out of the per-request figure, which stays the slope of what the
requests themselves store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from bench.memstate import (
    Snapshot,
    commands_run,
    histogram_bytes,
    polling_memory,
    snapshot,
    state_bytes,
)
from genqueue.local_redis import LocalRedis

EVENTS = "t:events"
#: Command names the requests below run only in their first half (each first run costs a
#: latency histogram once, never again).
FIRST_RUN_ONLY = ("hlen", "strlen", "llen", "scard", "zcard", "hstrlen", "xlen", "pttl")


def _mem(used: int, clients: int = 0, aof: int = 0, scripts: int = 0) -> dict[str, Any]:
    return {
        "used_memory": used,
        "mem_clients_normal": clients,
        "mem_aof_buffer": aof,
        "used_memory_scripts": scripts,
    }


def _cmds(*names: str) -> dict[str, Any]:
    return {f"cmdstat_{n}": {"calls": 1} for n in names}


def test_state_bytes_leaves_out_buffers_script_cache_and_event_stream() -> None:
    """Client and AOF buffers, the script cache and the event stream are not request state."""
    mem = _mem(10_000, clients=1_000, aof=200, scripts=300)
    assert state_bytes(mem) == 8_500
    assert state_bytes(mem, events_bytes=500) == 8_000


def test_commands_run_reads_commandstats_names() -> None:
    """Command names (subcommands with their ``|``) come from ``INFO commandstats``."""
    stats = {**_cmds("hset", "script|exists"), "errorstat_ERR": {"count": 1}}
    assert commands_run(stats) == {"hset", "script|exists"}


def test_a_first_half_cost_lands_in_the_intercept_not_the_slope() -> None:
    """A cost paid once while the first half is written is fixed, not per request."""
    once = 3 * 24_688
    base = Snapshot(0, _mem(1_000_000), _cmds("info"), 0)
    # 1,000 requests of 1,300 B each half; 3 command names first run (24,688 B each) in the
    # first; client buffers (part of used_memory) 400 KB, then 100 KB.
    cmds = _cmds("info", "a", "b", "c")
    half = Snapshot(1_000, _mem(1_000_000 + 1_300_000 + once + 400_000, clients=400_000), cmds, 0)
    full = Snapshot(2_000, _mem(1_000_000 + 2_600_000 + once + 100_000, clients=100_000), cmds, 0)
    pm = polling_memory(base, half, full, histogram=24_688)
    assert pm["bytes_per_request"] == 1_300
    assert pm["bytes_per_request_whole_set"] == round(1_300 + once / 2_000)
    assert pm["fixed_bytes"] == once
    assert pm["commands_first_run"] == ["a", "b", "c"]
    assert pm["commands_first_run_in_second_step"] == []
    assert pm["fixed_bytes_from_histograms"] == once


def test_snapshots_must_grow() -> None:
    """Two readings at the same number of requests have no slope."""
    s = Snapshot(1_000, _mem(1), {}, 0)
    with pytest.raises(ValueError):
        polling_memory(Snapshot(0, _mem(1), {}, 0), s, s)


@pytest.fixture
async def fresh() -> AsyncIterator[redis.asyncio.Redis]:
    """A Redis of its own: latency histograms live as long as the server, not the data."""
    server = LocalRedis(appendfsync="everysec")
    server.start()
    r = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
    try:
        yield r
    finally:
        await r.aclose()
        server.close()


async def _write(r: redis.asyncio.Redis, lo: int, hi: int, first_run: bool) -> None:
    for i in range(lo, hi):
        await r.hset(f"t:req:{i:08d}", mapping={"state": "polling", "seq": i, "model": "m" * 30})
        await r.set(f"t:spec:{i:08d}", "x" * 80)
        await r.xadd(EVENTS, {"id": str(i)})
        if first_run:
            for name in FIRST_RUN_ONLY:
                await r.execute_command(
                    name.upper(), *(("k", "f") if name == "hstrlen" else ("k",))
                )


async def test_first_run_commands_cost_a_histogram_each_and_stay_out_of_the_slope(
    fresh: redis.asyncio.Redis,
) -> None:
    """On a real Redis, command names first run in the first half cost a latency histogram
    each, left in the intercept: the slope is what the same requests cost once nothing runs
    for the first time."""
    r = fresh
    hist = await histogram_bytes(r)
    assert hist is not None and hist > 0
    assert await histogram_bytes(r) is None  # ECHO's histogram exists now

    base = await snapshot(r, EVENTS, 0)
    await _write(r, 0, 400, first_run=True)
    half = await snapshot(r, EVENTS, 400)
    await _write(r, 400, 800, first_run=False)
    full = await snapshot(r, EVENTS, 800)
    pm = polling_memory(base, half, full, hist)
    assert set(FIRST_RUN_ONLY) <= set(pm["commands_first_run"])
    assert pm["commands_first_run_in_second_step"] == []

    # The same again with every histogram there: its average is the per-request cost.
    again0 = await snapshot(r, EVENTS, 800)
    await _write(r, 800, 1_200, first_run=True)
    again1 = await snapshot(r, EVENTS, 1_200)
    await _write(r, 1_200, 1_600, first_run=False)
    again2 = await snapshot(r, EVENTS, 1_600)
    repeat = polling_memory(again0, again1, again2, hist)
    assert repeat["commands_first_run"] == []
    per_request = repeat["bytes_per_request_whole_set"]
    assert abs(pm["bytes_per_request"] - per_request) <= 0.05 * per_request
    # Averaging over the whole first set would have charged the histograms per request.
    assert pm["bytes_per_request_whole_set"] - pm["bytes_per_request"] >= (
        len(FIRST_RUN_ONLY) * hist / 800 * 0.9
    )


def test_the_newer_of_sweep_and_memory_part_gives_the_figure() -> None:
    """RESULTS.md takes bytes per polling request from whichever run measured them last."""
    from bench.report import _memory_run

    old = {"polling_memory": {"bytes_per_request": 1}, "meta": {"when": "2026-12-04 18:00:00"}}
    new = {"polling_memory": {"bytes_per_request": 2}, "meta": {"when": "2026-12-04 20:00:00"}}
    assert _memory_run({"sweep": old, "memory": new}) is new
    assert _memory_run({"sweep": new, "memory": old}) is new
    legacy = {"redis_bytes_per_inflight_polling_without_event_stream": 1419}
    assert _memory_run({"sweep": legacy}) is legacy
    assert _memory_run({"sweep": legacy, "memory": old}) is old
