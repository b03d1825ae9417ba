"""Redis URLs (plain and ``redis+sentinel://``), their redaction, arq's pool, and the
choice of wait after a critical write: no Redis needed."""

from __future__ import annotations

import pytest
import redis.asyncio

from genqueue.logs import secrets_in_env
from genqueue.producer.connections import (
    BlockingSentinelConnectionPool,
    SentinelTarget,
    async_redis,
    is_sentinel_url,
    parse_sentinel_url,
)
from genqueue.producer.durability import DurabilityPolicy, WaitPlan
from genqueue.producer.settings import Settings, redact_url

URL = "redis+sentinel://app:s3cret@h1:26379,h2:26380/genqueue/2"


def test_sentinel_url_is_parsed_into_sentinels_service_db_and_credentials() -> None:
    """Every part of the documented form is read: hosts with ports, service, db, user, password."""
    t = parse_sentinel_url(URL)
    assert t == SentinelTarget(
        sentinels=(("h1", 26379), ("h2", 26380)),
        service="genqueue",
        db=2,
        username="app",
        password="s3cret",
        ssl=False,
    )
    assert t.data_kwargs() == {"db": 2, "username": "app", "password": "s3cret"}
    assert "s3cret" not in repr(t)


def test_sentinel_url_defaults_and_tls() -> None:
    """No port means 26379, no db means 0, ``rediss+sentinel`` means TLS, IPv6 in brackets."""
    t = parse_sentinel_url("rediss+sentinel://:pw@[::1],h2/svc")
    assert t.sentinels == (("::1", 26379), ("h2", 26379))
    assert (t.service, t.db, t.ssl, t.username, t.password) == ("svc", 0, True, None, "pw")
    assert t.data_kwargs()["ssl"] is True


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://u:topsecret@/svc/0",
        "redis+sentinel://u:topsecret@h1:26379",
        "redis+sentinel://u:topsecret@h1:port/svc/0",
        "redis+sentinel://u:topsecret@h1/svc/notadb",
        "redis+sentinel://u:topsecret@h1/svc/0/extra",
    ],
)
def test_malformed_sentinel_urls_are_refused_without_echoing_the_password(url: str) -> None:
    """A bad URL raises ValueError whose message never contains the password."""
    with pytest.raises(ValueError) as info:
        parse_sentinel_url(url)
    assert "topsecret" not in str(info.value)


def test_only_sentinel_schemes_are_sentinel_urls() -> None:
    """Plain redis:// and rediss:// URLs stay plain."""
    assert is_sentinel_url(URL) and is_sentinel_url("REDISS+SENTINEL://h/s")
    assert not is_sentinel_url("redis://h:6379/0") and not is_sentinel_url("rediss://h/0")


def test_redact_url_hides_the_password_of_a_sentinel_url() -> None:
    """The sentinel form keeps its hosts, service and db, and loses its password."""
    assert redact_url(URL) == "redis+sentinel://app:***@h1:26379,h2:26380/genqueue/2"
    assert redact_url("redis+sentinel://h1,h2/genqueue/0") == "redis+sentinel://h1,h2/genqueue/0"
    assert Settings(redis_url=URL).redis_url_redacted.count("s3cret") == 0


def test_redact_url_hides_query_passwords_of_either_form() -> None:
    """main's ``?password=`` redaction and the sentinel form's userinfo redaction together."""
    assert redact_url("redis://h:6379/0?password=hunter22") == "redis://h:6379/0?password=***"
    assert (
        redact_url(URL + "?password=hunter22")
        == "redis+sentinel://app:***@h1:26379,h2:26380/genqueue/2?password=***"
    )


def test_secret_scrubber_finds_the_password_of_a_sentinel_url() -> None:
    """``secrets_in_env`` (the log scrubber's registration) reads a ``redis+sentinel://``
    password, percent-encoded or not."""
    assert "s3cret" in secrets_in_env({"GENQUEUE_REDIS_URL": URL})
    found = secrets_in_env({"GENQUEUE_REDIS_URL": "rediss+sentinel://:p%40ss@[::1],h2/svc/0"})
    assert "p@ss" in found


async def test_bounded_async_clients_keep_their_bound_for_both_url_forms() -> None:
    """The gateway's pool bound (``max_connections``, a blocking wait) holds for a plain URL
    and for a Sentinel URL (no connection is made here)."""
    plain = async_redis("redis://h:6379/0", max_connections=7, pool_timeout_s=1.5)
    sentinel = async_redis(URL, max_connections=7, pool_timeout_s=1.5)
    try:
        assert isinstance(plain.connection_pool, redis.asyncio.BlockingConnectionPool)
        assert isinstance(sentinel.connection_pool, BlockingSentinelConnectionPool)
        for client in (plain, sentinel):
            pool = client.connection_pool
            assert pool.max_connections == 7
            assert pool.timeout == 1.5  # type: ignore[attr-defined]
        assert sentinel.connection_pool.service_name == "genqueue"  # type: ignore[attr-defined]
    finally:
        await plain.aclose()
        await sentinel.aclose()


async def test_arq_pool_names_the_sentinels_and_the_service() -> None:
    """arq's pool asks the URL's sentinels for its service, with the data nodes' credentials
    from the userinfo or the query string; it is an ``ArqRedis`` closing its sentinels."""
    from arq.connections import ArqRedis

    from genqueue.worker.arq_redis import arq_pool

    pool = arq_pool(URL, queue_name="q")
    plain = arq_pool("redis://:pw@h:6390/3", queue_name="q")
    query = arq_pool("redis://h:6390/3?username=u&password=qpw", queue_name="q")
    try:
        assert isinstance(pool, ArqRedis) and pool.default_queue_name == "q"
        manager = pool.connection_pool.sentinel_manager  # type: ignore[attr-defined]
        assert [
            (
                s.connection_pool.connection_kwargs["host"],
                s.connection_pool.connection_kwargs["port"],
            )
            for s in manager.sentinels
        ] == [("h1", 26379), ("h2", 26380)]
        assert pool.connection_pool.service_name == "genqueue"  # type: ignore[attr-defined]
        kwargs = pool.connection_pool.connection_kwargs
        assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (2, "app", "s3cret")
        kwargs = plain.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
            "h",
            6390,
            3,
            "pw",
        )
        kwargs = query.connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"]) == ("u", "qpw")
    finally:
        for client in (pool, plain, query):
            await client.aclose()


INFO_70 = {"redis_version": "7.0.15", "aof_enabled": 1, "connected_slaves": 0}


def test_wait_plan_waits_for_a_replica_when_attached_or_expected() -> None:
    """WAIT 1 follows a critical write when replicas are attached or the URL is a Sentinel's;
    a lone Redis 7.0 gets no wait (it has no WAITAOF)."""
    assert WaitPlan.from_info(INFO_70, expect_replicas=False, timeout_ms=500).commands == ()
    with_replica = {**INFO_70, "connected_slaves": 2}
    assert WaitPlan.from_info(with_replica, expect_replicas=False, timeout_ms=500).commands == (
        ("WAIT", 1, 500),
    )
    assert WaitPlan.from_info(INFO_70, expect_replicas=True, timeout_ms=500).commands == (
        ("WAIT", 1, 500),
    )


def test_wait_plan_adds_waitaof_where_the_primary_offers_it() -> None:
    """Redis >= 7.2 with AOF on also waits for the local fsync (WAITAOF 1 0)."""
    info = {"redis_version": "7.2.4", "aof_enabled": 1, "connected_slaves": 1}
    plan = WaitPlan.from_info(info, expect_replicas=False, timeout_ms=300)
    assert plan.commands == (("WAIT", 1, 300), ("WAITAOF", 1, 0, 300))
    assert plan.acknowledged([1, [1, 0]])
    assert not plan.acknowledged([0, [1, 0]])
    assert not plan.acknowledged([1, [0, 0]])
    assert not plan.acknowledged([1, RuntimeError("ERR WAITAOF cannot be used")])


def test_policy_is_detected_again_after_its_recheck_interval_or_an_invalidation() -> None:
    """The plan goes stale after ``recheck_s`` and at once after ``invalidate()``; "off"
    never waits and never looks."""
    now = [100.0]
    policy = DurabilityPolicy(recheck_s=10, clock=lambda: now[0])
    assert policy.stale()
    policy.update({**INFO_70, "connected_slaves": 1})
    assert not policy.stale()
    now[0] += 10
    assert policy.stale()
    policy.update(INFO_70)
    policy.invalidate()
    assert policy.stale()
    off = DurabilityPolicy(mode="off")
    assert not off.stale() and off.plan == WaitPlan()


def test_settings_refuse_an_unknown_durable_creates_mode() -> None:
    """``durable_creates`` is "auto" or "off"; timeouts must be positive."""
    with pytest.raises(ValueError):
        Settings(durable_creates="always")
    with pytest.raises(ValueError):
        Settings(durable_create_timeout_s=0)
    assert Settings.from_env({"GENQUEUE_DURABLE_CREATES": "off"}).durable_creates == "off"
