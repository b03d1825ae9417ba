"""The learned durations are a uniform sample of recent completions (reservoir sampling)."""

from __future__ import annotations

import math
import random
import statistics

import redis.asyncio

from genqueue.producer.settings import Settings
from genqueue.worker.drift import settled
from genqueue.worker.durations import LEFTOVER_IDLE_S, DurationModel, _pair

MODEL = "m/x"


async def test_a_batch_ending_in_order_keeps_its_spread(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Completions that arrive sorted by duration (a batch submitted at once ends that way)
    leave a sample of the whole batch, not of its slowest videos."""
    model = DurationModel(
        aredis, settings.keys, samples=100, horizon=10_000, min_samples=1, cache_s=0,
        rng=random.Random(3),
    )  # fmt: skip
    for d in range(1, 5001):
        await model.record(MODEL, 0.0, float(d), generation_s=float(d) - 1)
    learned = await model.get(MODEL)
    assert learned is not None and len(learned.total) == len(learned.generation) == 100
    assert 1500 < statistics.median(learned.total) < 3500  # the last 100 would give ~4950
    assert learned.total[0] < 500 and learned.total[-1] > 4500


async def test_the_sample_forgets_what_is_past_its_horizon(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Once past the horizon, new completions keep entering: a model that became slower is
    learned again."""
    model = DurationModel(
        aredis, settings.keys, samples=50, horizon=500, min_samples=1, cache_s=0,
        rng=random.Random(4),
    )  # fmt: skip
    for _ in range(500):
        await model.record(MODEL, 0.0, 10.0)
    for _ in range(3000):
        await model.record(MODEL, 0.0, 20.0)
    learned = await model.get(MODEL)
    assert learned is not None and learned.generation == []
    assert sum(d == 20.0 for d in learned.total) >= 45


async def test_the_first_completions_are_all_kept(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Until the sample is full every completion is in it; a model with too few is unknown."""
    model = DurationModel(aredis, settings.keys, samples=10, min_samples=5, cache_s=0)
    for d in (3.0, 1.0, 2.0, 5.0):
        await model.record(MODEL, 0.0, d)
    assert await model.get(MODEL) is None
    await model.record(MODEL, 0.0, 4.0)
    learned = await model.get(MODEL)
    assert learned is not None and learned.total == [1.0, 2.0, 3.0, 4.0, 5.0]


async def test_the_worker_keeps_the_configured_number_of_durations(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A worker's duration sample holds ``adaptive_samples`` completions of a model, no more
    (GENQUEUE_ADAPTIVE_SAMPLES)."""
    from genqueue.worker.runtime import Runtime
    from genqueue.worker.upstream import UpstreamClient
    from tests.conftest import worker_config

    rt = Runtime(
        config=worker_config(settings, adaptive_samples=7, adaptive_min_samples=1),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    for d in range(30):
        await rt.durations.record(MODEL, 0.0, float(d))
    learned = await rt.durations.get(MODEL)
    assert learned is not None and len(learned.total) == 7
    await rt.upstream.aclose()


async def test_a_shift_of_recent_completions_moves_the_learned_durations(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """The last completions are kept beside the long sample: once their durations have moved
    (here +30 s from video 1,000 on), the model reports the shift; before, none."""
    model = DurationModel(
        aredis, settings.keys, samples=2000, recent=100, min_samples=1, cache_s=0,
        rng=random.Random(5),
    )  # fmt: skip
    rng = random.Random(6)
    jobs = [
        (float(i), i + rng.lognormvariate(4.8, 0.2) + (30.0 if i >= 1000 else 0.0))
        for i in range(1400)
    ]
    jobs.sort(key=lambda j: j[1])
    for n, (created, done) in enumerate(jobs, 1):
        await model.record(MODEL, created, done)
        if n == 900:
            learned = await model.get(MODEL)
            assert learned is not None and learned.total_shift.shift_s == 0.0
    learned = await model.get(MODEL)
    assert learned is not None and len(learned.recent_total) == 100
    # The long sample holds the 400 shifted ones too: measured from it, the shift is smaller.
    assert 15.0 < learned.total_shift.shift_s < 32.0, learned.total_shift


async def test_durations_written_by_the_previous_version_are_read(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Lists the previous version wrote (totals and generations only, no recent completions
    nor clock bounds) are used as they are: no shift, no offset estimate yet."""
    await aredis.rpush(settings.keys.durations(MODEL, "total"), *[str(float(d)) for d in range(30)])
    await aredis.rpush(settings.keys.durations(MODEL, "generation"), "1.5", "2.5")
    model = DurationModel(aredis, settings.keys, min_samples=10, cache_s=0)
    learned = await model.get(MODEL)
    assert learned is not None and len(learned.total) == 30 and learned.generation == [1.5, 2.5]
    assert learned.recent_total == [] and learned.offset_s is None
    assert learned.total_shift.shift_s == 0.0 and learned.total_shift.stretch == 0.0


async def test_the_previous_versions_recent_lists_neither_break_nor_steer_the_new_one(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """The last-seen lists an older worker keeps beside the new sets (same model, a rolling
    deploy) are left to it: the new worker records into its own sets and reads only them."""
    old_recent = [f"{i}.000:{i + 300}.000" for i in range(100)]  # 300 s: far off the sample
    await aredis.lpush(settings.keys.durations(MODEL, "recent_total"), *old_recent)
    model = DurationModel(aredis, settings.keys, min_samples=10, cache_s=0, settle_s=0.0)
    for i in range(30):
        await model.record(MODEL, float(i), i + 100.0 + i % 7)
    learned = await model.get(MODEL)
    assert learned is not None and len(learned.recent_total) == 30
    assert all(done - start < 110 for start, done in learned.recent_total)
    assert learned.total_shift.shift_s == 0.0
    assert await aredis.llen(settings.keys.durations(MODEL, "recent_total")) == 100


def _seen_in_order(
    rate_per_s: float, until_s: float, seed: int
) -> list[tuple[float, float, float]]:
    """A steady stream's completions ``(seen, created, done)`` in the order a worker sees
    them: checks every 4.7 s from a first check at the 4 % quantile, so the fastest videos,
    done before their first check, are seen up to ~25 s after they ended."""
    rng = random.Random(seed)

    def duration() -> float:
        return rng.lognormvariate(math.log(5), 0.5) + rng.lognormvariate(math.log(120), 0.2)

    q04 = sorted(duration() for _ in range(5000))[200]
    jobs = []
    for i in range(int(rate_per_s * until_s)):
        created = i / rate_per_s
        done = created + duration()
        first = created + q04 + 4.7 + rng.uniform(-2.35, 2.35)
        seen = first if done <= first else first + math.ceil((done - first) / 4.7) * 4.7
        if seen <= until_s:
            jobs.append((seen, created, done))
    return sorted(jobs)


async def test_many_completions_a_second_of_a_steady_model_are_not_read_as_a_shift(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """At 40 completions a second the last ones *seen* span seconds of checks but the early
    videos seen late stretch their completion times back ~25 s: chosen by completion time,
    with every neighbour seen, they leave a steady model's schedule where it is."""
    model = DurationModel(
        aredis, settings.keys, samples=2000, recent=100, recent_kept=4000, settle_s=34.7,
        min_samples=10, cache_s=0, rng=random.Random(7),
    )  # fmt: skip
    checked = 0
    for seen, created, done in _seen_in_order(40.0, 280.0, seed=3):
        await model.record(MODEL, created, done)
        if seen >= 200.0 + 40.0 * checked:  # at 200, 240 and 280 s
            learned = await model.get(MODEL)
            assert learned is not None and len(learned.recent_total) == 100
            assert learned.total_shift.shift_s == 0.0, (seen, learned.total_shift)
            checked += 1
    assert checked == 2


def test_settled_entries_are_drifts_settled_of_the_whole_set(settings: Settings) -> None:
    """The refresh's newest-first scan keeps exactly what ``drift.settled`` keeps of the
    whole recent set (ties, a full set's floor and a short set included)."""
    rng = random.Random(7)
    client = redis.asyncio.Redis.from_url(settings.redis_url)  # never used: no Redis call
    for case in range(300):
        kept_max = rng.choice([5, 50, 400])
        model = DurationModel(
            client,
            settings.keys,
            recent=rng.choice([1, 3, 20, 100]),
            recent_kept=kept_max,
            settle_s=rng.choice([0.0, 0.5, 3.0, 40.0]),
        )
        n = rng.randint(0, kept_max)
        dones = [round(rng.uniform(0, 30), rng.choice([0, 1, 3])) for _ in range(n)]
        # A sorted set's order: by score (the completion time), then by member.
        by_done = sorted((f"{d - rng.uniform(1, 9):.3f}:{d:.3f}" for d in dones), key=_order)
        expected = settled(
            [_pair(x) for x in by_done],
            full=len(by_done) >= model._recent_kept,
            settle_s=model._settle_s,
            used=model._recent,
        )
        assert model._settled(by_done) == expected, case


def _order(entry: str) -> tuple[float, str]:
    return float(entry.partition(":")[2]), entry


def test_incremental_sort_equals_a_full_sort(settings: Settings) -> None:
    """Refresh after refresh, the sample's sorted values are those of a full sort, whether a
    few slots changed (updated in place), many did, or the sample grew."""
    rng = random.Random(11)
    client = redis.asyncio.Redis.from_url(settings.redis_url)  # never used: no Redis call
    model = DurationModel(client, settings.keys)
    raw = [f"{rng.uniform(1, 300):.3f}" for _ in range(500)]
    for refresh in range(60):
        raw = list(raw)  # each refresh reads a new list from Redis
        for _ in range(rng.choice([0, 1, 5, 20, 200])):
            raw[rng.randrange(len(raw))] = f"{rng.uniform(1, 300):.3f}"
        if refresh % 17 == 0:
            raw.append(f"{rng.choice([1.0, 5.5, 299.0]):.3f}")
        if refresh % 5 == 0:  # duplicates of values already there
            raw[rng.randrange(len(raw))] = raw[rng.randrange(len(raw))]
        assert model._sorted(("m", "total"), raw) == sorted(map(float, raw)), refresh


async def test_the_previous_versions_idle_recent_lists_are_deleted(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A refresh deletes a previous version's recent list untouched for LEFTOVER_IDLE_S (no
    worker of that version left), and keeps one a worker of it touched since."""
    idle_k = settings.keys.durations(MODEL, "recent_total")
    busy_k = settings.keys.durations(MODEL, "recent_generation")
    await aredis.lpush(idle_k, "1.000:301.000")
    dumped = await aredis.dump(idle_k)
    await aredis.execute_command(
        "RESTORE", idle_k, 0, dumped, "REPLACE", "IDLETIME", LEFTOVER_IDLE_S + 60
    )
    await aredis.lpush(busy_k, "1.000:301.000")
    model = DurationModel(aredis, settings.keys, min_samples=10, cache_s=0)
    await model.get(MODEL)
    assert await aredis.exists(idle_k) == 0
    assert await aredis.llen(busy_k) == 1
