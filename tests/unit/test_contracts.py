"""Script builders lay out KEYS/ARGV as the Lua names them (the wire layout of the previous,
positional version), and reply parsers read each script's answer."""

from __future__ import annotations

import pytest

from genqueue.producer.contracts import (
    BeginSubmit,
    Cancel,
    Finish,
    SideAttempt,
    SideEffect,
    WebhookReplay,
)
from genqueue.producer.keys import INLINE_ARM_MARKER, Tag
from genqueue.producer.replies import (
    NextStep,
    ScriptReplyError,
    parse_begin_poll,
    parse_begin_submit,
    parse_cancel,
    parse_finish,
    parse_side_attempt,
    parse_webhook_replay,
)
from genqueue.producer.settings import Settings
from genqueue.producer.timers import Timer

SETTINGS = Settings(redis_url="redis://unused", key_prefix="gq")


def _common(rid: str) -> list[str]:
    s = SETTINGS
    return [rid, str(s.events_maxlen), f"gq:done:{rid}", str(round(s.retention_s * 1000))]


def test_begin_submit_layout() -> None:
    """begin_submit: shared KEYS then pause and the limit's keys, then the admission block;
    ARGV 5..12 in order, then the admission block."""
    c = BeginSubmit(
        request_id="r",
        idempotency_key="k",
        expected_seq=3,
        max_inflight=5,
        lease_ms=60_000,
        lease_owner="w",
        ambiguous_policy="resubmit",
        limit_keys=("gq:rl", "gq:rl:turn"),
        limit_us=(100, 200),
    ).call(SETTINGS)
    assert c.name == "begin_submit"
    assert c.keys == [
        *SETTINGS.keys.script_keys("r", "k"),
        *("gq:pause", "gq:rl", "gq:rl:turn"),
        *("gq:admission", "gq:admission:ready", "gq:admission:deadlines"),
        *("gq:tenants", "gq:pause", "gq:queue"),
    ]
    assert c.keys[5] == "gq:idem:k"
    assert c.args == [
        *_common("r"),
        *("3", "5", "60000", "w", "resubmit", "100", "200"),
        str(int(SETTINGS.unsubmitted_retention_s * 1000)),
        *("gq", "arq:job:", "86400000", "8"),
    ]


def test_finish_layout_and_inline_arm() -> None:
    """finish: an unknown cost and unknown times are '', a flag is '1'/'0'; an inline-arm
    step adds 5 KEYS (job, result, queue, its wake list and wake-at key) and 4 ARGV at the
    very end, the marker last."""
    c = Finish(
        request_id="r",
        expected_seq=7,
        outcome="completed",
        cost_micro_usd=None,
        upstream_done_at=3.5,
        owe_download=True,
        arm=Timer("poll", "r", 8),
    ).call(SETTINGS)
    assert c.args[4:14] == ["7", "completed", "", "", "", "", "", "3.5", "1", "0"]
    assert len(c.keys) == 8 + 6 + 5
    assert c.keys[-3:] == ["gq:queue", "gq:queue:wake", "gq:queue:wake:at"]
    assert len(c.args) == 14 + 4 + 4 and c.args[-1] == INLINE_ARM_MARKER
    assert c.args[-2] == "poll:r:8"


def test_side_effect_names_the_dead_letters_and_refuses_unknown_effects() -> None:
    c = SideEffect(
        request_id="r", expected_side_seq=2, effect="webhook", result="dead", retry_delay_ms=0
    ).call(SETTINGS)
    assert c.args[4:] == ["2", "webhook", "dead", "0", "{}", "gq:webhooks:dead", "", ""]
    with pytest.raises(ValueError):
        SideEffect(
            request_id="r", expected_side_seq=2, effect="fax", result="done", retry_delay_ms=0
        ).call(SETTINGS)


def test_side_effect_passes_the_dead_letters_bounds() -> None:
    """The dead letters' maximum age (ms) and count are ARGV 11 and 12 ('' = no bound)."""
    c = SideEffect(
        request_id="r",
        expected_side_seq=2,
        effect="webhook",
        result="dead",
        retry_delay_ms=0,
        dead_max_age_ms=604_800_000,
        dead_max=10,
    ).call(SETTINGS)
    assert c.args[9:] == ["gq:webhooks:dead", "604800000", "10"]


def test_side_attempt_and_webhook_replay_layouts() -> None:
    c = SideAttempt(request_id="r", idempotency_key="k", expected_side_seq=4, effect="download")
    call = c.call(SETTINGS)
    assert call.name == "side_attempt"
    assert call.keys == SETTINGS.keys.script_keys("r", "k")
    assert call.args == [*_common("r"), "4", "download"]
    with pytest.raises(ValueError):
        SideAttempt(request_id="r", expected_side_seq=4, effect="fax").call(SETTINGS)
    replay = WebhookReplay(request_id="r").call(SETTINGS)
    assert replay.name == "webhook_replay"
    assert replay.args == [*_common("r"), "gq:webhooks:dead"]
    assert parse_side_attempt(["OK", "3"]).attempts == 3
    assert parse_side_attempt(["STALE"]).tag is Tag.STALE
    assert parse_webhook_replay(["OK", "5"]).side_seq == 5
    assert parse_webhook_replay(["NOT_DEAD", "pending"]).state == "pending"


def test_a_float_argument_is_a_unit_bug() -> None:
    """Scripts take whole milliseconds: a float where an int belongs raises."""
    with pytest.raises(TypeError):
        Cancel(request_id="r", tracking_limit_ms=1.5).call(SETTINGS)  # type: ignore[arg-type]


def test_replies_are_parsed_per_script() -> None:
    ok = parse_begin_submit(["OK", "2", "1", "0"])
    assert (ok.tag, ok.submit_seq, ok.ambiguous, ok.probe) == (Tag.OK, 2, True, False)
    assert parse_begin_submit(["PAUSED", "4", "10"]).step == NextStep(4, 10)
    assert parse_begin_submit(["WAITING", "tenant_cap"]).waiting == "tenant_cap"
    go = parse_begin_poll(["GO", "status", "queued", "seq", "3"])
    assert go.tag is Tag.GO and go.record == {"status": "queued", "seq": "3"}
    done = parse_finish(["OK", "cancelled", "1700000000000", "0"])
    assert (done.status, done.now_ms, done.ended_now) == ("cancelled", 1_700_000_000_000, False)
    assert parse_cancel(["ALREADY", "completed"]).status == "completed"


def test_a_tag_the_script_never_answers_is_refused() -> None:
    with pytest.raises(ScriptReplyError):
        parse_cancel(["GO"])
    with pytest.raises(ScriptReplyError):
        parse_finish([])


def test_begin_poll_answers_redis_clock_after_the_record() -> None:
    """``GO`` ends with Redis' clock (ms) after the field/value pairs; a reply without it (an
    older script) parses with none."""
    go = parse_begin_poll(["GO", "status", "queued", "seq", "3", 1_700_000_000_123])
    assert go.record == {"status": "queued", "seq": "3"} and go.now_ms == 1_700_000_000_123
    assert parse_begin_poll(["GO", "status", "queued"]).now_ms is None
