"""Property test of admission: after any sequence of submits (three tenants, priorities),
creates, finishes, failed creates, cancels, and cap or tenant settings changing, no slot is
free while a request that could take it waits (but the reserve, rule 20, kept from a tenant at
or above its weighted share), the caps hold, and the admission keys match the records."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from genqueue.producer.admission import admit_all_sync
from genqueue.producer.keys import HOLDING_SLOT, Field, tenant_field, waiting_field
from genqueue.producer.scripts import SyncScripts
from genqueue.producer.settings import Settings
from genqueue.producer.sync_client import Client
from genqueue.producer.tenants import set_tenant
from tests.conftest import happy_step, submit_release

TENANTS = ("default", "a", "b")
MODEL = "minimax/video-01-director"


def make_machine(redis_url: str) -> type[RuleBasedStateMachine]:
    class Admission(RuleBasedStateMachine):
        @initialize(cap=st.sampled_from([1, 2, 3]), reserve=st.sampled_from([0, 0, 1, 2]))
        def setup(self, cap: int, reserve: int) -> None:
            self.settings = Settings(redis_url=redis_url, key_prefix=f"a{uuid.uuid4().hex[:8]}")
            self.r = redis.Redis.from_url(redis_url, decode_responses=True)
            self.client = Client(self.settings, client=self.r)
            self.scripts = SyncScripts(self.r)
            self.ids: list[str] = []
            for t in TENANTS[1:]:
                set_tenant(self.r, self.settings.keys, t)
            self.r.hset(
                self.settings.keys.admission,
                mapping={"max_inflight": str(cap), "reserve_slots": str(reserve)},
            )

        def teardown(self) -> None:
            if hasattr(self, "r"):
                keys = list(self.r.scan_iter(f"{self.settings.key_prefix}:*"))
                if keys:
                    self.r.delete(*keys)
                self.r.close()

        def run(self, builder: Any) -> Any:
            return self.scripts.run(builder.call(self.settings))

        def rec(self, rid: str) -> dict[str, str]:
            return self.r.hgetall(self.settings.keys.record(rid))  # type: ignore[return-value]

        def pick(self, i: int) -> str | None:
            return self.ids[i % len(self.ids)] if self.ids else None

        @rule(
            t=st.sampled_from(TENANTS),
            priority=st.sampled_from(["high", "normal", "low"]),
        )
        def submit(self, t: str, priority: str) -> None:
            if len(self.ids) < 10:
                self.ids.append(
                    self.client.submit({"model": MODEL, "prompt": "x"}, tenant=t, priority=priority)  # type: ignore[arg-type]
                )

        def active(self, i: int) -> str | None:
            """The i-th (mod) request that has a step to take (admitted, creating, polled)."""
            pool = [
                r
                for r in self.ids
                if self.rec(r).get(Field.TIMER) in ("submit", "poll")
                or self.rec(r)[Field.STATUS] == "submitting"
            ]
            return pool[i % len(pool)] if pool else None

        @rule(i=st.integers(0, 3))
        def drive(self, i: int) -> None:
            """One request's next step on the happy path: its create, then its finish."""
            rid = self.active(i)
            step = None if rid is None else happy_step(self.settings, rid, self.rec(rid), 1)
            if step is not None:
                self.run(step)

        @rule(i=st.integers(0, 3))
        def fail_create(self, i: int) -> None:
            """A create that fails for good (its slot freed)."""
            rid = self.active(i)
            if rid is not None and self.rec(rid)[Field.STATUS] == "submitting":
                ss = int(self.rec(rid).get(Field.SUBMIT_SEQ, "0"))
                self.run(submit_release(rid, ss, "fail", 0, "HTTP 400"))

        @rule(i=st.integers(0, 9))
        def cancel(self, i: int) -> None:
            rid = self.pick(i)
            if rid is not None:
                self.client.cancel(rid)

        @rule(cap=st.sampled_from([1, 2, 3, 4]))
        def set_cap(self, cap: int) -> None:
            """A worker starts with another cap: it becomes the deployment's, then admits."""
            self.r.hset(self.settings.keys.admission, "max_inflight", str(cap))
            admit_all_sync(self.r, self.settings.keys)

        @rule(t=st.sampled_from(TENANTS), n=st.sampled_from([0, 1, 2]), w=st.sampled_from([1, 3]))
        def tenant_settings(self, t: str, n: int, w: int) -> None:
            set_tenant(self.r, self.settings.keys, t, max_inflight=n, weight=float(w))

        @invariant()
        def no_free_slot_while_an_admissible_request_waits(self) -> None:
            if not hasattr(self, "ids"):
                return
            keys = self.settings.keys
            recs = {rid: self.rec(rid) for rid in self.ids}
            counts = {k: int(v) for k, v in self.r.hgetall(keys.counts).items()}  # type: ignore[union-attr]

            def holds(rec: dict[str, str]) -> bool:
                return (
                    rec[Field.STATUS] in ("submitting", "queued", "in_progress")
                    or rec.get(Field.TRACKING) == "1"
                    or rec.get(Field.ADMITTED) == "1"
                )

            held: dict[str, int] = dict.fromkeys(TENANTS, 0)
            waiting: dict[str, list[str]] = {t: [] for t in TENANTS}
            for rid, rec in recs.items():
                t = rec.get(Field.TENANT) or "default"
                held[t] += holds(rec)
                if rec.get(Field.WAITING):
                    assert rec[Field.STATUS] == "pending" and rec[Field.TIMER] == ""
                    waiting[t].append(rid)
            assert sum(counts.get(s, 0) for s in HOLDING_SLOT) == sum(held.values())
            for t in TENANTS[1:]:
                own = sum(counts.get(tenant_field(t, s), 0) for s in HOLDING_SLOT)
                assert own == held[t], t
                queued = self.r.zrange(keys.waiting(t), 0, -1)
                assert sorted(queued) == sorted(waiting[t]), t  # type: ignore[arg-type]
            total_waiting = sum(
                counts.get(waiting_field(r), 0) for r in ("cap", "tenant_cap", "paused")
            )
            assert total_waiting == sum(len(w) for w in waiting.values())
            cap = int(self.r.hget(keys.admission, "max_inflight") or 0)  # type: ignore[arg-type]
            configs = {
                t: int(json.loads(self.r.hget(keys.tenants, t) or "{}").get("max_inflight", 0))  # type: ignore[arg-type]
                for t in TENANTS
            }
            weights = {
                t: float(json.loads(self.r.hget(keys.tenants, t) or "{}").get("weight", 1))  # type: ignore[arg-type]
                for t in TENANTS
            }
            reserve = int(self.r.hget(keys.admission, "reserve_slots") or 0)  # type: ignore[arg-type]
            reserve = min(reserve, cap - 1) if cap > 1 else 0

            def full(t: str) -> bool:
                return configs[t] > 0 and held[t] >= configs[t]

            # Taking part: holding a slot or waiting, unless at its own cap (rule 20).
            wsum = sum(weights[t] for t in TENANTS if not full(t) and (held[t] or waiting[t]))
            free = cap - sum(held.values())
            for t, ids in waiting.items():
                if not ids or full(t):
                    continue
                # A free slot only within the reserve, and the tenant at or above its share.
                kept = 0 < free <= reserve and held[t] >= cap * weights[t] / wsum
                assert cap == 0 or free <= 0 or kept, (t, held, cap, reserve, configs, weights)

    return Admission


def test_admission_never_leaves_a_slot_free_while_an_admissible_request_waits(
    redis_url: str,
) -> None:
    """Random sequences over three tenants keep admission work-conserving (but the reserve kept
    from tenants at their share), within the global and the tenants' caps, its keys matching
    the records."""
    machine = make_machine(redis_url)
    machine.TestCase.settings = hsettings(max_examples=150, stateful_step_count=30, deadline=None)
    machine.TestCase().runTest()
