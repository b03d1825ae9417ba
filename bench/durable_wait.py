"""``python -m bench.durable_wait``: what waiting for a replica costs per create and per
submit (``make bench-durable``).

A Sentinel deployment on this machine (a primary, two replicas, three sentinels; AOF
``everysec``). One producer makes ``--n`` creates in a row with ``durable_creates`` off, then
auto (``WAIT 1`` after each); for each request a worker's durable step then records an
upstream id (the ``submitted`` script) with the wait off, then on. Writes
``bench/durable_wait.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from genqueue.local_sentinel import LocalSentinelCluster
from genqueue.producer import AsyncClient, Settings
from genqueue.producer.connections import async_redis
from genqueue.producer.contracts import BeginSubmit, Submitted
from genqueue.producer.keys import Tag
from genqueue.producer.scripts import AsyncScripts
from genqueue.worker.config import WorkerConfig
from genqueue.worker.durability import Durability, policy_for

REQ: dict[str, Any] = {"model": "openai/sora-2", "prompt": "a tram in the rain"}


def _summary(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {
        "mean_ms": round(statistics.fmean(ms), 3),
        "p50_ms": round(ms[len(ms) // 2], 3),
        "p95_ms": round(ms[int(len(ms) * 0.95)], 3),
    }


async def _creates(settings: Settings, n: int) -> tuple[list[str], list[float]]:
    ids, took = [], []
    async with AsyncClient(settings) as client:
        await client.submit(REQ)  # warm: connection, script load, detection
        for _ in range(n):
            t = time.perf_counter()
            ids.append(await client.submit(REQ))
            took.append(time.perf_counter() - t)
    return ids, took


async def _submits(settings: Settings, ids: list[str], mode: str) -> list[float]:
    """Record an upstream id for each request as a worker does (``begin_submit`` untimed)."""
    config = WorkerConfig(settings=settings, api_key="k", durable_writes=mode)
    client = async_redis(settings.redis_url, decode_responses=True)
    scripts = AsyncScripts(client)
    durability = Durability(client, policy_for(config))
    await durability.detect()
    keys = settings.keys
    limit_keys = (keys.rate_limit("none"), keys.rate_turns("none"))
    took = []
    try:
        for rid in ids:
            begin = await scripts.run(
                BeginSubmit(
                    request_id=rid,
                    expected_seq=0,
                    max_inflight=0,
                    lease_ms=60_000,
                    lease_owner="w",
                    ambiguous_policy="resubmit",
                    limit_keys=limit_keys,
                ).call(settings)
            )
            c = Submitted(
                request_id=rid,
                submit_seq=begin.submit_seq,
                upstream_id=f"up-{rid[:8]}",
                upstream_status="queued",
                upstream_created_at=None,
                upstream_started_at=None,
                first_poll_delay_ms=10,
                tracking_limit_ms=3_600_000,
                tracking_poll_delay_ms=10,
            ).call(settings)
            t = time.perf_counter()
            reply = await durability.run(client, scripts, c)
            took.append(time.perf_counter() - t)
            assert reply.tag is Tag.OK, reply
    finally:
        await client.aclose()
    return took


async def measure(url: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n}
    for mode in ("off", "auto"):
        settings = Settings(
            redis_url=url, key_prefix=f"dw-{uuid.uuid4().hex[:6]}", durable_creates=mode
        )
        ids, create_s = await _creates(settings, n)
        submit_s = await _submits(settings, ids, mode)
        out[f"create_wait_{mode}"] = _summary(create_s)
        out[f"submit_wait_{mode}"] = _summary(submit_s)
    for op in ("create", "submit"):
        out[f"{op}_wait_cost_ms"] = round(
            out[f"{op}_wait_auto"]["mean_ms"] - out[f"{op}_wait_off"]["mean_ms"], 3
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("durable_wait.json"))
    args = p.parse_args()
    with LocalSentinelCluster() as cluster:
        result = asyncio.run(measure(cluster.url, args.n))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
