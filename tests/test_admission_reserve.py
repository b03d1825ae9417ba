"""The admission reserve (docs/architecture.md rule 20): the last ``reserve_slots`` free
slots of the global cap go only to a tenant holding fewer slots than its weighted share, so a
light tenant beside a heavy one is admitted at once; under full contention the slot that
frees goes to a tenant below its share, and a tenant alone uses every slot."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import redis
import redis.asyncio

from genqueue.producer.admission import AsyncAdmission, _admit_call
from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import HOLDING_SLOT, Tag, tenant_field
from genqueue.producer.scripts import constants_lua, decode_reply
from genqueue.producer.tenants import set_tenant
from genqueue.worker.admission import announce_cap
from genqueue.worker.runtime import Runtime
from genqueue.worker.upstream import UpstreamClient
from tests.conftest import worker_config
from tests.test_admission import admitted, first_admitted, sub, to_polling, waiting
from tests.test_transitions import Scripts

REPO = Path(__file__).resolve().parents[1]
#: The last commit before the reserve (main when it was built): its admission fills every slot.
PREVIOUS = "e25de32"


async def announce(s: Scripts, cap: int, reserve: int) -> None:
    """The cap and the reserve, as a worker announces them at its start."""
    await AsyncAdmission(s.redis, s.keys).announce_cap(cap, reserve)


async def held(s: Scripts, tenant: str | None = None) -> int:
    """Slots held (reserved or in flight) by ``tenant``, or by everybody."""
    fields = [f if tenant is None else tenant_field(tenant, f) for f in HOLDING_SLOT]
    return sum(int(v or 0) for v in await s.redis.hmget(s.keys.counts, fields))


async def oldest_reservation(s: Scripts) -> str:
    ((_, rid),) = [k.split("|") for k in await s.redis.zrange(s.keys.admission_reserved, 0, 0)]
    return rid


async def heavy_beside_light(
    client: AsyncClient, s: Scripts, conn: redis.Redis, *, cap: int, heavy_weight: float = 1.0
) -> tuple[str, list[str]]:
    """``light`` holds one slot (nothing waiting), then ``heavy`` submits a backlog of 20."""
    set_tenant(conn, s.keys, "heavy", weight=heavy_weight)
    set_tenant(conn, s.keys, "light")
    await announce(s, cap, 1)
    light = await sub(client, tenant="light")
    heavy = [await sub(client, tenant="heavy") for _ in range(20)]
    return light, heavy


async def test_the_reserve_is_kept_from_a_tenant_above_its_share(
    client: AsyncClient,
    s: Scripts,
    conn: redis.Redis,
) -> None:
    """A heavy tenant above its share takes every slot but the reserved one, and a heavy slot
    freeing goes back to it only down to the reserve."""
    light, heavy = await heavy_beside_light(client, s, conn, cap=6)
    assert await admitted(s, light)
    assert (await held(s, "heavy"), await held(s)) == (4, 5)  # share 3: the 6th kept
    assert {await waiting(s, r) for r in heavy if not await admitted(s, r)} == {"cap"}
    assert await client.cancel(await first_admitted(s, heavy)) == "cancelled"
    assert (await held(s, "heavy"), await held(s)) == (4, 5)


async def test_the_reserve_goes_at_once_to_a_tenant_below_its_share(
    client: AsyncClient,
    s: Scripts,
    conn: redis.Redis,
) -> None:
    """A light tenant's request arriving while the heavy one waits takes the reserved slot in
    its own submit: admitted at once, not queued."""
    await heavy_beside_light(client, s, conn, cap=6)
    arriving = await sub(client, tenant="light")
    assert await admitted(s, arriving) and await waiting(s, arriving) is None
    assert (await held(s, "light"), await held(s)) == (2, 6)
    assert (await s.begin(arriving)).tag is Tag.OK


async def test_a_light_tenant_leaving_gives_the_kept_slot_to_the_heavy_one(
    client: AsyncClient,
    s: Scripts,
    conn: redis.Redis,
) -> None:
    """When the light tenant's last request ends with nothing waiting, it no longer takes
    part: the heavy one's share is the whole cap and it fills every slot."""
    light, _ = await heavy_beside_light(client, s, conn, cap=4)
    assert (await held(s, "heavy"), await held(s)) == (2, 3)
    await to_polling(s, light)
    assert (await s.finish(light)).tag is Tag.OK
    assert (await held(s, "heavy"), await held(s)) == (4, 4)


@pytest.mark.parametrize(
    ("weights", "cap", "settled"),
    [((1.0, 1.0, 1.0), 6, (2, 2, 2)), ((3.0, 1.0, 1.0), 10, (6, 2, 2))],
)
async def test_under_full_contention_the_freed_slot_goes_below_share_and_none_idles(
    client: AsyncClient,
    s: Scripts,
    conn: redis.Redis,
    weights: tuple[float, float, float],
    cap: int,
    settled: tuple[int, int, int],
) -> None:
    """Three backlogged tenants, the first holding every slot at first: each freed slot goes
    to a tenant below its weighted share, no slot stays free, and the holdings settle at the
    weighted shares."""
    names = ("a", "b", "c")
    for name, weight in zip(names, weights, strict=True):
        set_tenant(conn, s.keys, name, weight=weight)
    await announce(s, cap, 1)
    for name in names:  # "a" alone first: it takes the whole cap
        for _ in range(40):
            await sub(client, tenant=name)
    assert await held(s, "a") == cap
    for _ in range(3 * cap):
        assert await client.cancel(await oldest_reservation(s)) == "cancelled"
        assert await held(s) == cap, [await held(s, n) for n in names]
    assert tuple([await held(s, n) for n in names]) == settled


async def test_the_share_is_weighted(
    client: AsyncClient,
    s: Scripts,
    conn: redis.Redis,
) -> None:
    """A heavy tenant whose weight gives it a share above what it holds (7 of 8) takes the
    last slot that weight 1 (share 4) keeps free."""
    await heavy_beside_light(client, s, conn, cap=8, heavy_weight=7.0)
    assert (await held(s, "heavy"), await held(s)) == (7, 8)


async def test_with_weight_one_the_same_holdings_keep_the_slot(
    client: AsyncClient,
    s: Scripts,
    conn: redis.Redis,
) -> None:
    """The same heavy tenant at weight 1 (share 4 of 8) stops at the reserve."""
    await heavy_beside_light(client, s, conn, cap=8, heavy_weight=1.0)
    assert (await held(s, "heavy"), await held(s)) == (6, 7)


async def test_no_reserve_for_a_tenant_alone_or_under_a_cap_of_one(
    client: AsyncClient,
    s: Scripts,
    conn: redis.Redis,
) -> None:
    """A tenant alone (another configured but idle) takes every slot whatever the reserve;
    under a cap of 1 the only slot never idles while anyone waits."""
    set_tenant(conn, s.keys, "solo")
    set_tenant(conn, s.keys, "idle")
    await announce(s, 4, 2)
    solo = [await sub(client, tenant="solo") for _ in range(6)]
    assert (await held(s, "solo"), await held(s)) == (4, 4)
    for rid in solo:
        await client.cancel(rid)
    await announce(s, 1, 1)
    first = await sub(client, tenant="solo")
    other = await sub(client, tenant="idle")
    assert await admitted(s, first) and await waiting(s, other) == "cap"
    await client.cancel(first)
    assert await admitted(s, other)


async def test_a_worker_announces_its_reserve_with_its_cap(s: Scripts) -> None:
    """A worker's start writes ``GENQUEUE_ADMISSION_RESERVE_SLOTS`` (default 1) beside its
    cap into the admission hash."""
    rt = Runtime(
        config=worker_config(s.settings, max_inflight=50),
        redis=s.redis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    try:
        await announce_cap(rt)
    finally:
        await rt.upstream.aclose()
        await rt.webhook_http.aclose()
        await rt.download_http.aclose()
    got = await s.redis.hmget(s.keys.admission, ["max_inflight", "reserve_slots"])
    assert got == ["50", "1"]


# --- rolling deploy: the previous version's admission beside this one --------------------


_INCLUDE = re.compile(r'^--- @include "([a-z_]+)"[ \t]*$', re.MULTILINE)


def previous_script(name: str) -> str:
    """``lua/<name>.lua`` of ``PREVIOUS``, assembled (the generated constants are today's:
    the reserve changed none)."""

    def read(path: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), "show", f"{PREVIOUS}:producer/lua/{path}"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip

    seen: set[str] = set()

    def expand(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(1) in seen:
                return ""
            seen.add(m.group(1))
            return expand(
                constants_lua() if m.group(1) == "constants" else read(f"_{m.group(1)}.lua")
            )

        return _INCLUDE.sub(one, text)

    return expand(read(f"{name}.lua"))


async def test_an_old_workers_admission_may_take_the_reserved_slot_harmlessly(
    client: AsyncClient,
    s: Scripts,
    conn: redis.Redis,
) -> None:
    """During a rolling deploy the previous version's admission (which knows no reserve)
    fills the kept slot; the counts stay exact and the new version keeps the reserve again
    from the next freed slot, the light tenant still admitted at once."""
    old = previous_script("admit")
    assert "reserve_slots" not in old
    _, heavy = await heavy_beside_light(client, s, conn, cap=6)
    assert (await held(s, "heavy"), await held(s)) == (4, 5)
    k, a = _admit_call(s.keys, expired_run=False)
    reply = decode_reply(await s.redis.eval(old, len(k), *k, *a))  # type: ignore[misc]
    assert reply[1] == "1"  # the old version took the kept slot for the heavy tenant
    assert (await held(s, "heavy"), await held(s)) == (5, 6)
    reserved = await s.redis.zcard(s.keys.admission_reserved)
    assert int(await s.redis.hget(s.keys.counts, "admitted") or 0) == reserved  # type: ignore[misc]
    assert await client.cancel(await first_admitted(s, heavy)) == "cancelled"
    assert (await held(s, "heavy"), await held(s)) == (4, 5)  # kept again
    arriving = await sub(client, tenant="light")
    assert await admitted(s, arriving)
