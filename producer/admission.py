"""Admission: waiting for an upstream slot in Redis, at no cost per second.

A request that cannot have a slot yet (the global in-flight cap is full, its tenant is at its
own ``max_inflight``, creates are paused) waits in its tenant's **admission queue** with no
timer of its own. The step that frees a slot (a finish, a failed create, a cancel, the end of
tracking...) admits the next request in the same atomic script (``lua/_admit.lua``): the
tenant with the lowest virtual time (weighted fair share: each admission moves the tenant on
by ``1/weight``), then its best request (``priority``, then the earliest deadline). The
admitted request's slot is reserved (``admitted`` in the counts) and its submit timer armed.

This module lays out the admission block every admitting script takes, runs the standalone
admission (``lua/admit.lua``: at a worker's start, a pause's end, the expiry timer, a tenant's
settings changed, and the reconciler's safety net), and reads what waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import redis
import redis.asyncio

from genqueue.producer.errors import GenqueueError
from genqueue.producer.keys import Keys
from genqueue.producer.scripts import decode_reply, source
from genqueue.producer.timers import JOB_EXTRA_MS, JOB_KEY_PREFIX

#: Most requests one freeing event admits (the cap stops it sooner: an event usually frees
#: one slot). Bounds each script's work whatever the backlog.
ADMIT_PER_EVENT: Final = 8
#: Most requests one standalone admission call admits (its caller calls again while a call
#: admits this many: a cap raised by thousands admits in batches, never in one long script).
ADMIT_BATCH: Final = 200
#: Most waiting requests one run of the expiry timer ends (it re-arms at once for the rest).
EXPIRE_BATCH: Final = 200
#: Calls of one standalone admission run at most (``ADMIT_BATCH`` each).
MAX_ADMIT_CALLS: Final = 100
#: Reservations older than this (ms) are checked by a standalone admission, at most
#: ``REPAIR_BATCH`` per call: one a worker of the version before admission left behind (it
#: took the request on without giving the slot back) is given back. Any age would be safe
#: (a request still pending with its reservation keeps it); this one spares the fresh ones.
REPAIR_AGE_MS: Final = 1_000
REPAIR_BATCH: Final = 100


class QueueFull(GenqueueError):
    """The tenant's admission queue holds ``max_waiting`` requests: the submit is refused and
    nothing was written. Submit again later (the gateway answers 429)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        super().__init__(
            f"tenant {tenant!r} has as many requests waiting for a slot as its max_waiting "
            "allows: submit again later"
        )


def admission_keys(keys: Keys) -> list[str]:
    """The admission block of KEYS (``K_ADM_STATE`` .. ``K_ADM_QUEUE`` in the Lua)."""
    return [
        keys.admission,
        keys.admission_ready,
        keys.admission_deadlines,
        keys.tenants,
        keys.pause,
        keys.queue,
    ]


def admission_args(keys: Keys, max_n: int = ADMIT_PER_EVENT) -> list[str]:
    """The admission block of ARGV (``ADM_PREFIX`` .. ``ADM_MAX`` in the Lua): the key
    prefix and arq's job key prefix (admission builds the names of keys it cannot be given in
    advance from them), how long a job may wait past its run time, most admissions per call."""
    return [keys.prefix, JOB_KEY_PREFIX, str(JOB_EXTRA_MS), str(max_n)]


@dataclass(frozen=True, slots=True)
class AdmitReply:
    """What one standalone admission call did: ``admitted`` requests, and the earliest
    waiting deadline (Redis ms; None: nobody waits) the expiry timer is armed for."""

    admitted: int
    earliest_deadline_ms: int | None
    #: Reservations left behind by a step of the version before admission, given back.
    repaired: int = 0


def _admit_call(keys: Keys, *, expired_run: bool) -> tuple[list[str], list[str]]:
    k = [keys.inflight, keys.counts, *admission_keys(keys)]
    a = [
        *admission_args(keys, ADMIT_BATCH),
        "1" if expired_run else "0",
        str(REPAIR_BATCH),
        str(REPAIR_AGE_MS),
    ]
    return k, a


def _parse(raw: list[str]) -> AdmitReply:
    return AdmitReply(int(raw[1]), int(raw[2]) if raw[2] else None, int(raw[3]))


class AsyncAdmission:
    """Runs the standalone admission through an asyncio client."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._script = client.register_script(source("admit"))

    async def admit_once(self, *, expired_run: bool = False) -> AdmitReply:
        """One call: at most ``ADMIT_BATCH`` admissions; the expiry timer re-armed if it was
        lost or (``expired_run``) has just run."""
        k, a = _admit_call(self._keys, expired_run=expired_run)
        return _parse(decode_reply(await self._script(keys=k, args=a)))

    async def admit_all(self, *, expired_run: bool = False) -> int:
        """Admit while slots are free and requests wait (batches of ``ADMIT_BATCH``)."""
        total = 0
        for i in range(MAX_ADMIT_CALLS):
            reply = await self.admit_once(expired_run=expired_run and i == 0)
            total += reply.admitted
            if reply.admitted < ADMIT_BATCH:
                break
        return total

    async def announce_cap(self, max_inflight: int, reserve_slots: int = 0) -> int:
        """Write this worker's in-flight cap (0: none) and its reserve for tenants below
        their share (``lua/_admit.lua`` ``reserve_slots``) as the deployment's (the last
        worker started wins) and admit what they let through; returns how many were
        admitted."""
        await self._client.hset(  # type: ignore[misc]
            self._keys.admission,
            mapping={
                "max_inflight": str(max(0, max_inflight)),
                "reserve_slots": str(max(0, reserve_slots)),
            },
        )
        return await self.admit_all()


def admit_all_sync(conn: redis.Redis, keys: Keys) -> int:
    """``AsyncAdmission.admit_all`` through a blocking client (``genqueue tenant set``,
    ``genqueue resume``)."""
    script = conn.register_script(source("admit"))
    total = 0
    for _ in range(MAX_ADMIT_CALLS):
        k, a = _admit_call(keys, expired_run=False)
        reply = _parse(decode_reply(script(keys=k, args=a)))
        total += reply.admitted
        if reply.admitted < ADMIT_BATCH:
            break
    return total
