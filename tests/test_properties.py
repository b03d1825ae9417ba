"""Property test: any interleaving of transitions keeps the record, indexes and totals
consistent, and a terminal status never changes (e.g. a cancel racing a completion); with an
in-flight cap changing underneath, admission wastes no slot while anyone waits."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import redis
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from genqueue.producer.admission import admit_all_sync
from genqueue.producer.keys import HOLDING_SLOT, NON_TERMINAL, TERMINAL, Field, waiting_field
from genqueue.producer.scripts import SyncScripts
from genqueue.producer.settings import Settings
from genqueue.producer.sync_client import Client
from tests.conftest import (
    bare_finish,
    begin_submit,
    happy_step,
    poll_update,
    submit_release,
    submitted,
)

MODEL = "minimax/video-01-director"


def make_machine(redis_url: str) -> type[RuleBasedStateMachine]:
    class Transitions(RuleBasedStateMachine):
        @initialize(cap=st.sampled_from([0, 1, 1, 2]))
        def setup(self, cap: int) -> None:
            self.settings = Settings(redis_url=redis_url, key_prefix=f"p{uuid.uuid4().hex[:8]}")
            self.r = redis.Redis.from_url(redis_url, decode_responses=True)
            self.client = Client(self.settings, client=self.r)
            self.scripts = SyncScripts(self.r)
            self.ids: list[str] = []
            self.terminal_seen: dict[str, str] = {}
            # The cap the first worker announced (0: none).
            self.r.hset(self.settings.keys.admission, "max_inflight", str(cap))

        def teardown(self) -> None:
            keys = list(self.r.scan_iter(f"{self.settings.key_prefix}:*"))
            if keys:
                self.r.delete(*keys)
            self.r.close()

        def run(self, builder: Any) -> Any:
            return self.scripts.run(builder.call(self.settings))

        def rec(self, rid: str) -> dict[str, str]:
            return self.r.hgetall(self.settings.keys.record(rid))  # type: ignore[return-value]

        def pick(self, i: int, timer: str | None = None) -> str | None:
            """The i-th request (mod) among those whose current timer is ``timer``."""
            pool = [r for r in self.ids if timer is None or self.rec(r).get(Field.TIMER) == timer]
            return pool[i % len(pool)] if pool else None

        @rule()
        def submit(self) -> None:
            if len(self.ids) < 6:
                self.ids.append(self.client.submit({"model": MODEL, "prompt": "x"}))

        @rule(cap=st.sampled_from([0, 1, 2, 3]))
        def set_cap(self, cap: int) -> None:
            """A worker starts with another cap: it becomes the deployment's, then admits."""
            self.r.hset(self.settings.keys.admission, "max_inflight", str(cap))
            admit_all_sync(self.r, self.settings.keys)

        @rule(i=st.integers(0, 3), cap=st.sampled_from([0, 1, 2]))
        def begin(self, i: int, cap: int) -> None:
            rid = self.pick(i, "submit")
            if rid:
                seq = int(self.rec(rid).get(Field.SEQ, "0"))
                self.run(begin_submit(self.settings, rid, seq=seq, cap=cap))

        @rule(i=st.integers(0, 3), status=st.sampled_from(["queued", "in_progress"]))
        def submitted(self, i: int, status: str) -> None:
            rid = self.pick(i, "submit")
            if rid:
                ss = int(self.rec(rid).get(Field.SUBMIT_SEQ, "0"))
                self.run(
                    dataclasses.replace(
                        submitted(rid, ss, f"up-{rid[:6]}", status, first_poll_delay_ms=10),
                        upstream_created_at=None,
                        tracking_poll_delay_ms=10,
                    )
                )

        @rule(i=st.integers(0, 3), retry=st.booleans())
        def release(self, i: int, retry: bool) -> None:
            rid = self.pick(i, "submit")
            if rid:
                ss = int(self.rec(rid).get(Field.SUBMIT_SEQ, "0"))
                self.run(submit_release(rid, ss, "retry" if retry else "fail", 10, "e"))

        @rule(i=st.integers(0, 3), status=st.sampled_from(["queued", "in_progress", ""]))
        def poll(self, i: int, status: str) -> None:
            rid = self.pick(i, "poll")
            if rid:
                seq = int(self.rec(rid).get(Field.SEQ, "0"))
                self.run(poll_update(rid, seq, status, next_delay_ms=10, tracking_poll_delay_ms=10))

        @rule(
            i=st.integers(0, 3),
            outcome=st.sampled_from(["completed", "failed", "cancelled"]),
            cost=st.sampled_from([None, 280_000, 100_000]),
        )
        def finish(self, i: int, outcome: str, cost: int | None) -> None:
            rid = self.pick(i, "poll")
            if rid:
                seq = int(self.rec(rid).get(Field.SEQ, "0"))
                self.run(bare_finish(rid, seq, outcome, cost))

        @rule(i=st.integers(0, 5))
        def drive(self, i: int) -> None:
            """One request's next step on the happy path (creates, then completes): frees
            slots often, so admission's events come up in short sequences."""
            rid = self.pick(i)
            step = None if rid is None else happy_step(self.settings, rid, self.rec(rid), 100_000)
            if step is not None:
                self.run(step)

        @rule(i=st.integers(0, 3), name=st.sampled_from(["begin_submit", "poll_update", "finish"]))
        def stale_timer(self, i: int, name: str) -> None:
            """A duplicate/superseded timer: an old seq must change nothing."""
            rid = self.pick(i)
            if rid:
                before = self.rec(rid)
                old = int(before.get(Field.SEQ, "0")) - 1
                builders: dict[str, Any] = {
                    "begin_submit": begin_submit(self.settings, rid, seq=old),
                    "poll_update": poll_update(
                        rid, old, "in_progress", next_delay_ms=10, tracking_poll_delay_ms=10
                    ),
                    "finish": bare_finish(rid, old, "completed", 280_000),
                }
                self.run(builders[name])
                assert self.rec(rid) == before

        @rule(i=st.integers(0, 3))
        def cancel(self, i: int) -> None:
            if self.ids:
                self.client.cancel(self.ids[i % len(self.ids)])

        @invariant()
        def consistent(self) -> None:
            if not hasattr(self, "ids"):
                return
            keys = self.settings.keys
            recs = {rid: self.rec(rid) for rid in self.ids}
            by_status: dict[str, int] = {}
            live: set[str] = set()
            tracking = 0
            waiting: dict[str, int] = {}
            for rid, rec in recs.items():
                status = rec[Field.STATUS]
                if rec.get(Field.WAITING):
                    # Waiting: pending, no timer, no reservation, out of the in-flight index.
                    assert status == "pending" and rec[Field.TIMER] == ""
                    assert rec.get(Field.ADMITTED) is None
                    waiting[rec[Field.WAITING]] = waiting.get(rec[Field.WAITING], 0) + 1
                if rid in self.terminal_seen:
                    assert status == self.terminal_seen[rid], "a terminal status changed"
                elif status in TERMINAL:
                    self.terminal_seen[rid] = status
                by_status[status] = by_status.get(status, 0) + 1
                if (status in NON_TERMINAL and not rec.get(Field.WAITING)) or rec.get(
                    Field.TRACKING
                ) in ("1", "extra"):
                    live.add(rid)
                tracking += rec.get(Field.TRACKING) == "1"
            counts = {k: int(v) for k, v in self.r.hgetall(keys.counts).items()}  # type: ignore[union-attr]
            for s in NON_TERMINAL:
                assert counts.get(s, 0) == by_status.get(s, 0), s
            assert counts.get("tracking", 0) == tracking
            assert set(self.r.zrange(keys.inflight, 0, -1)) == live  # type: ignore[arg-type]
            holding = sum(
                1
                for rec in recs.values()
                if rec[Field.STATUS] in ("submitting", "queued", "in_progress")
                or rec.get(Field.TRACKING) == "1"
                or rec.get(Field.ADMITTED) == "1"
            )
            # Each superseded job not yet seen to end holds a slot of its own.
            holding += sum(len(json.loads(r.get(Field.EXTRA_IDS) or "[]")) for r in recs.values())
            assert sum(counts.get(s, 0) for s in HOLDING_SLOT) == holding
            for reason in ("cap", "tenant_cap", "paused"):
                assert counts.get(waiting_field(reason), 0) == waiting.get(reason, 0), reason
            queued = self.r.zrange(keys.waiting("default"), 0, -1)
            assert set(queued) == {r for r, rec in recs.items() if rec.get(Field.WAITING)}  # type: ignore[arg-type]
            # Work-conserving: nobody waits while the cap leaves a slot free.
            cap = int(self.r.hget(keys.admission, "max_inflight") or 0)  # type: ignore[arg-type]
            if waiting:
                assert cap > 0 and holding >= cap, (cap, holding, waiting)
            totals = self.r.hgetall(keys.totals)
            finished = sum(int(v) for k, v in totals.items() if k.startswith("finished|"))  # type: ignore[union-attr]
            assert finished == sum(by_status.get(s, 0) for s in TERMINAL)
            cost = sum(int(v) for k, v in totals.items() if k.startswith("cost_micro|"))  # type: ignore[union-attr]
            assert cost == sum(int(r.get(Field.COST_MICRO_USD) or 0) for r in recs.values())

    return Transitions


def test_any_interleaving_keeps_records_and_totals_consistent(redis_url: str) -> None:
    """Random sequences of submit/begin/submitted/release/poll/finish/cancel never break the
    invariants: terminal is final, counts, indexes and totals match the records."""
    machine = make_machine(redis_url)
    machine.TestCase.settings = hsettings(max_examples=150, stateful_step_count=25, deadline=None)
    machine.TestCase().runTest()
