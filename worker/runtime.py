"""Everything a task needs, built once per worker process and kept in arq's ``ctx``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio

from genqueue.producer.budgets import publish_worker_settings
from genqueue.producer.connections import async_redis
from genqueue.producer.keys import Keys
from genqueue.producer.scripts import AsyncScripts
from genqueue.producer.timers import AsyncTimers
from genqueue.worker.config import WorkerConfig
from genqueue.worker.critical import CriticalSections
from genqueue.worker.durability import Durability, policy_for
from genqueue.worker.durations import DurationModel
from genqueue.worker.metrics import WorkerMetrics
from genqueue.worker.outbound.guard import GuardedTransport, Origin, origin_of
from genqueue.worker.outbound.host_slots import HostSlots
from genqueue.worker.outbound.resolver import Resolver, SystemResolver
from genqueue.worker.pause import CreatePause
from genqueue.worker.ratelimit import RateLimit, limiter_identity
from genqueue.worker.targets import s3_client
from genqueue.worker.upstream import UpstreamClient, UpstreamTimeouts, make_transport

CTX_KEY = "genqueue"


class UnsafeRedis(RuntimeError):
    """Redis is configured so that records could be silently lost; workers refuse to start."""


async def check_redis(client: redis.asyncio.Redis) -> None:
    """Refuse a Redis that may evict keys: an evicted record is a lost, possibly billed, video."""
    info = await client.info("memory")
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        raise UnsafeRedis(
            f"Redis maxmemory-policy is {policy!r}: set it to 'noeviction' "
            "(an evicted record is silent data loss)"
        )


@dataclass
class Runtime:
    """Per-process state shared by every task of one worker."""

    config: WorkerConfig
    redis: redis.asyncio.Redis
    upstream: UpstreamClient
    durability: Durability = field(default_factory=Durability)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    rng: random.Random = field(default_factory=random.Random)
    unknown_statuses_seen: set[str] = field(default_factory=set)
    #: Creates in flight with the write of their answer: they outlive their task (close waits).
    creates: CriticalSections = field(default_factory=CriticalSections)

    side_transport: httpx.AsyncBaseTransport | None = None
    rate_limit: RateLimit | None = None
    #: How webhook and download hosts are looked up (None: the system's resolver).
    resolver: Resolver | None = None

    def __post_init__(self) -> None:
        self.keys: Keys = self.config.settings.keys
        self.scripts = AsyncScripts(self.redis)
        self.timers = AsyncTimers(self.redis, self.keys.queue)
        self.side_timers = AsyncTimers(self.redis, self.keys.side_queue, wake=self.keys.side_wake)
        self.pause = CreatePause(self.redis, self.keys)
        cfg = self.config
        self.durations = DurationModel(
            self.redis,
            self.keys,
            samples=cfg.schedule.adaptive_samples,
            min_samples=cfg.schedule.adaptive_min_samples,
            recent=cfg.schedule.adaptive_recent_samples,
            recent_kept=cfg.schedule.adaptive_recent_kept,
            # Every completion done this long before the newest seen has been seen: a check
            # interval at the cap, plus one at the floor for a late timer.
            settle_s=cfg.scaled(cfg.schedule.poll_cap_s + cfg.schedule.poll_floor_s),
            shift_z=cfg.schedule.adaptive_shift_z,
            # Scaled like every schedule duration: at a benchmark's time scale a change is
            # seen as soon (in simulated time) as in production.
            cache_s=cfg.scaled(30.0),
        )
        if self.rate_limit is None and cfg.rate_limit_rps > 0:
            self.rate_limit = RateLimit.of(
                self.keys,
                rps=cfg.rate_limit_rps,
                burst=cfg.rate_limit_burst,
                identity=limiter_identity(cfg.upstream_url, cfg.api_key),
            )
        self.host_slots = HostSlots(cfg.webhooks.host_concurrency)
        #: A boto3 S3 client when videos go to object storage (``downloads.s3_url``).
        self.s3: Any = (
            s3_client(cfg.downloads.s3_endpoint_url, cfg.downloads.s3_region)
            if cfg.downloads.s3_url
            else None
        )
        resolver = self.resolver or SystemResolver()
        allow = cfg.settings.allow_nets

        def guarded(trusted: tuple[Origin, ...]) -> GuardedTransport:
            inner = self.side_transport or make_transport(cfg.transport, max_connections=100)
            return GuardedTransport(inner, resolver=resolver, allow=allow, trusted=trusted)

        # Neither client follows redirects itself: a webhook gets none (a redirect could
        # bounce a signed body elsewhere); downloads follow theirs hop by hop, each checked
        # (side_effects.py). Total deadlines are set per call (asyncio.timeout).
        self.webhook_http = httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.webhooks.timeout_s, connect=cfg.upstream_timeouts.connect_s),
            follow_redirects=False,
            transport=guarded(()),
            trust_env=False,
        )
        self.download_http = httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.downloads.timeout_s, connect=cfg.upstream_timeouts.connect_s),
            follow_redirects=False,
            transport=guarded((origin_of(cfg.upstream_url),)),
            trust_env=False,
        )

    @classmethod
    async def start(
        cls,
        config: WorkerConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        side_transport: httpx.AsyncBaseTransport | None = None,
        metrics: WorkerMetrics | None = None,
        resolver: Resolver | None = None,
    ) -> Runtime:
        """Connect to Redis and the upstream (``transport`` overrides the production one)."""
        metrics = metrics or WorkerMetrics()
        client = async_redis(
            config.settings.redis_url,
            decode_responses=True,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        upstream = UpstreamClient(
            base_url=config.upstream_url,
            api_key=config.api_key,
            timeouts=UpstreamTimeouts(
                connect_s=config.upstream_timeouts.connect_s,
                read_s=config.upstream_timeouts.read_s,
                write_s=config.upstream_timeouts.read_s,
                pool_s=config.upstream_timeouts.connect_s,
                total_s=config.upstream_timeouts.connect_s + config.upstream_timeouts.read_s,
            ),
            transport=transport
            or make_transport(config.transport, max_connections=config.max_jobs),
            on_call=metrics.observe_call,
        )
        try:
            await check_redis(client)
            await publish_worker_settings(
                client,
                config.settings.keys,
                config.cost_estimate_micro_usd,
                test_clock=config.budget_test_clock,
            )
        except BaseException:
            await client.aclose()
            raise
        durability = Durability(
            client, policy_for(config), on_unacknowledged=metrics.durable_write_timeouts.inc
        )
        try:
            await durability.detect()
        except BaseException:
            await client.aclose()
            raise
        return cls(
            config=config,
            redis=client,
            upstream=upstream,
            durability=durability,
            metrics=metrics,
            side_transport=side_transport,
            resolver=resolver,
        )

    async def close(self) -> None:
        # A create answered while its task was being cancelled still needs both clients.
        await self.creates.drain()
        await self.webhook_http.aclose()
        await self.download_http.aclose()
        await self.upstream.aclose()
        await self.redis.aclose()
