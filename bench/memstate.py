"""Redis bytes per in-flight request, apart from what Redis spends once per deployment.

``used_memory`` also holds memory that does not grow with the requests stored, and that
moved the sweep's polling figure by tens of bytes per request between runs (issue 19):

* client buffers (``mem_clients_normal``): each connection's query and reply buffers, as
  large as what is in flight on it when ``INFO`` is read;
* the AOF buffer (``mem_aof_buffer``): writes not yet flushed to the file;
* the Lua script cache (``used_memory_scripts``): each script once, as first run;
* the event stream: a log capped at ``GENQUEUE_EVENTS_MAXLEN`` entries (reported apart);
* Redis 7's per-command latency histograms (``latency-tracking``, on by default): about
  24 KB the first time a command name runs, commands run inside scripts included, then
  never again. ``INFO`` shows them only as ``used_memory_dataset`` growth, with no key.

The first four are read from ``INFO memory`` and taken out (:func:`state_bytes`). The last
is not reported by Redis: the per-request figure is the slope between two sizes of the
active set (:func:`polling_memory`), so that whatever the first requests set up once (a
histogram, a script, a connection) lands in the intercept, which is reported with the
number of command names first run and the measured size of one histogram
(:func:`histogram_bytes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio

#: ``INFO memory`` fields of ``used_memory`` that are per connection or per deployment.
NOT_PER_REQUEST = ("mem_clients_normal", "mem_clients_slaves", "mem_aof_buffer")


def state_bytes(mem: Mapping[str, Any], events_bytes: int = 0) -> int:
    """``used_memory`` without client and AOF buffers, the script cache and the event
    stream (``events_bytes``, its ``MEMORY USAGE``)."""
    other = sum(int(mem.get(f, 0)) for f in NOT_PER_REQUEST)
    return int(mem["used_memory"]) - other - int(mem.get("used_memory_scripts", 0)) - events_bytes


def commands_run(commandstats: Mapping[str, Any]) -> set[str]:
    """The command names Redis has run (each holds a latency histogram), from ``INFO
    commandstats``."""
    return {k.removeprefix("cmdstat_") for k in commandstats if k.startswith("cmdstat_")}


@dataclass(frozen=True)
class Snapshot:
    """What the figures need at one moment: ``INFO memory``, ``INFO commandstats`` and the
    event stream's ``MEMORY USAGE``; ``requests`` is how many active requests exist."""

    requests: int
    mem: Mapping[str, Any]
    commandstats: Mapping[str, Any]
    events_bytes: int

    @property
    def state(self) -> int:
        return state_bytes(self.mem, self.events_bytes)


async def snapshot(r: redis.asyncio.Redis, events_key: str, requests: int) -> Snapshot:
    """Read one :class:`Snapshot` (three commands)."""
    # MEMORY USAGE first: its own latency histogram must not fall between two readings.
    events = await r.memory_usage(events_key, samples=0) or 0
    mem = await r.info("memory")
    stats = await r.info("commandstats")
    return Snapshot(requests, mem, stats, int(events))


async def histogram_bytes(r: redis.asyncio.Redis) -> int | None:
    """The ``used_memory`` one command name's first run adds (its latency histogram; 0 with
    ``latency-tracking no``), measured on a quiet server with ``ECHO``, which nothing else
    runs; None if ``ECHO`` has already run on this server (nothing left to measure)."""
    await r.info("memory")  # INFO's own histogram exists before the first reading
    if "echo" in commands_run(await r.info("commandstats")):
        return None
    before = state_bytes(await r.info("memory"))
    await r.echo("latency histogram")
    after = state_bytes(await r.info("memory"))
    return max(0, after - before)


def polling_memory(
    base: Snapshot, half: Snapshot, full: Snapshot, histogram: int | None = None
) -> dict[str, Any]:
    """Bytes per polling request: the slope between ``half`` and ``full`` (the figure), the
    average over the whole active set from ``base`` (as earlier sweeps reported it, without
    client and AOF buffers), and the intercept (fixed, once per deployment) with what
    explains it: command names first run x ``histogram``, and the script cache loaded."""
    n = full.requests - half.requests
    if n <= 0 or full.requests <= base.requests:
        raise ValueError("the snapshots must be taken at growing numbers of requests")
    slope = (full.state - half.state) / n
    whole = (full.state - base.state) / (full.requests - base.requests)
    intercept = full.state - base.state - slope * (full.requests - base.requests)
    first_half = commands_run(half.commandstats) - commands_run(base.commandstats)
    second_half = commands_run(full.commandstats) - commands_run(half.commandstats)
    scripts = int(full.mem.get("used_memory_scripts", 0)) - int(
        base.mem.get("used_memory_scripts", 0)
    )
    out: dict[str, Any] = {
        "bytes_per_request": round(slope),
        "bytes_per_request_whole_set": round(whole),
        "fixed_bytes": round(intercept),
        "commands_first_run": sorted(first_half | second_half),
        "commands_first_run_in_second_step": sorted(second_half),
        "script_cache_bytes": scripts,
        "client_buffer_bytes": {
            "base": int(base.mem.get("mem_clients_normal", 0)),
            "full": int(full.mem.get("mem_clients_normal", 0)),
        },
    }
    if histogram is not None:
        out["latency_histogram_bytes"] = histogram
        out["fixed_bytes_from_histograms"] = histogram * len(first_half | second_half)
    return out
