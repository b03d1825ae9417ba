"""One typed builder per transition script: its named inputs, and the KEYS/ARGV they become.

Each builder is a frozen dataclass of keyword-only fields named as the script names them
(``lua/<script>.lua`` declares the same inputs as locals, in the same order, in its header);
``.call(settings)`` gives the ``ScriptCall`` to run, which also knows how to read the reply
(``producer/replies.py``). Nothing else in the code base lays out a script's KEYS or ARGV.

KEYS 1..8 and ARGV 1..4 are shared by every transition script (``common_keys``,
``common_args``); a script's own follow; an optional timer step to enqueue (``arm``) comes
last (``producer/timers.py``: ``inline_arm``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, Literal, TypeVar

from genqueue.producer.admission import admission_args, admission_keys
from genqueue.producer.keys import DEFAULT_TENANT, Keys
from genqueue.producer.replies import (
    BeginPollReply,
    BeginSubmitReply,
    CancelReply,
    CreateReply,
    ExpireWaitingReply,
    FinishReply,
    SideAttemptReply,
    SideEffectReply,
    StepReply,
    WebhookReplayReply,
    parse_begin_poll,
    parse_begin_submit,
    parse_cancel,
    parse_create,
    parse_expire_waiting,
    parse_finish,
    parse_poll_update,
    parse_side_attempt,
    parse_side_effect,
    parse_submit_release,
    parse_submitted,
    parse_track_extra,
    parse_webhook_replay,
)
from genqueue.producer.scripts import ScriptCall, ScriptName, ms
from genqueue.producer.settings import Settings
from genqueue.producer.timers import Timer, inline_arm

R = TypeVar("R")

AmbiguousPolicy = Literal["resubmit", "fail"]
SIDE_EFFECTS: Final = ("download", "webhook")
SIDE_EFFECT_RESULTS: Final = ("done", "retry", "dead")
#: No shared rate limit: ``interval_us`` 0 (the limit's keys are then passed, never touched).
NO_LIMIT_US: tuple[int, int] = (0, 0)


def common_keys(
    settings: Settings,
    request_id: str,
    idempotency_key: str | None,
    tenant: str = DEFAULT_TENANT,
) -> list[str]:
    """KEYS 1..8 of every transition script (``K_REC`` .. ``K_SPEC`` in the Lua; the
    idempotency mapping is the tenant's)."""
    return settings.keys.script_keys(request_id, idempotency_key, tenant)


def common_args(settings: Settings, request_id: str) -> list[str]:
    """ARGV 1..4 of every transition script (``ID``, ``EVENTS_MAXLEN``, ``CHANNEL``,
    ``RETENTION_MS`` in the Lua)."""
    return [
        request_id,
        str(settings.events_maxlen),
        settings.keys.done_channel(request_id),
        str(ms(settings.retention_s)),
    ]


def _arg(x: str | int | bool) -> str:
    if isinstance(x, bool):
        return "1" if x else "0"
    if isinstance(x, float):  # a float here is a unit bug: scripts take whole milliseconds
        raise TypeError(f"script arguments are str or int, got float {x!r}")
    return str(x)


def _time(value: float | None) -> str:
    """An upstream timestamp (epoch seconds) as the scripts store it ('' when unknown)."""
    return "" if value is None else repr(value)


@lru_cache(maxsize=16)
def _fixed(keys: Keys, events_maxlen: int, retention_s: float) -> _Fixed:
    """The parts of a call that depend on the deployment only, built once (they were a
    third of the CPU of building a call, built every status check)."""
    return _Fixed(
        queue=keys.queue,
        events_maxlen=str(events_maxlen),
        retention_ms=str(ms(retention_s)),
        adm_keys=tuple(admission_keys(keys)),
        adm_args=tuple(admission_args(keys)),
    )


@dataclass(frozen=True, slots=True)
class _Fixed:
    queue: str
    events_maxlen: str
    retention_ms: str
    adm_keys: tuple[str, ...]
    adm_args: tuple[str, ...]


def _build(
    settings: Settings,
    name: ScriptName,
    base: _Transition,
    parse: Callable[[list[str]], R],
    args: tuple[str | int | bool, ...],
    keys: tuple[str, ...] = (),
    *,
    admits: bool = False,
) -> ScriptCall[R]:
    """``admits``: the script may admit waiting requests (the admission block of KEYS and
    ARGV follows its own, ``producer/admission.py``)."""
    k = settings.keys
    fixed = _fixed(k, settings.events_maxlen, settings.retention_s)
    rid = base.request_id
    all_keys = k.script_keys(rid, base.idempotency_key, base.tenant)
    all_keys += keys
    all_args = [rid, fixed.events_maxlen, k.done_channel(rid), fixed.retention_ms]
    all_args += map(_arg, args)
    if admits:
        all_keys += fixed.adm_keys
        all_args += fixed.adm_args
    if base.arm is not None:
        arm_keys, arm_args = inline_arm(fixed.queue, base.arm)
        all_keys += arm_keys
        all_args += arm_args
    return ScriptCall(name, all_keys, all_args, parse)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Transition:
    """What every transition script is called with: the request, the idempotency key the
    record names (a script ending the request expires its mapping), and optionally the timer
    step the caller expects the script to move to (enqueued by the script if it does).
    ``tenant``: the record's (``keys.tenant_of``), which names its idempotency mapping."""

    request_id: str
    idempotency_key: str | None = None
    tenant: str = DEFAULT_TENANT
    arm: Timer | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Create(_Transition):
    """``create``: write a new pending record (``fields``: initial record fields, empty ones
    not stored, ``tenant`` among them for any tenant but ``default``; ``spec``: the encoded
    spec) unless the idempotency key names one or the tenant is not configured."""

    fields: Mapping[str, str]
    deadline_ms: int
    spec: str

    def call(self, settings: Settings) -> ScriptCall[CreateReply]:
        args = (json.dumps(dict(self.fields)), self.deadline_ms, bool(self.idempotency_key))
        keys = (settings.keys.tenants, settings.keys.accepted_models)
        return _build(settings, "create", self, parse_create, (*args, self.spec), keys, admits=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginSubmit(_Transition):
    """``begin_submit``: take the submit lease of timer step ``expected_seq`` if the pause,
    admission (the in-flight cap: ``max_inflight``, 0 = none, unless the deployment's is
    known) and the shared rate limit admit it."""

    expected_seq: int
    max_inflight: int
    lease_ms: int
    lease_owner: str
    ambiguous_policy: AmbiguousPolicy | str
    #: The shared rate limit's two keys and (interval, tolerance) in µs; interval 0 = none.
    limit_keys: tuple[str, str]
    limit_us: tuple[int, int] = NO_LIMIT_US

    def call(self, settings: Settings) -> ScriptCall[BeginSubmitReply]:
        interval_us, tolerance_us = self.limit_us
        args = (
            self.expected_seq,
            self.max_inflight,
            self.lease_ms,
            self.lease_owner,
            self.ambiguous_policy,
            interval_us,
            tolerance_us,
            ms(settings.unsubmitted_retention_s),
        )
        keys = (settings.keys.pause, *self.limit_keys)
        return _build(settings, "begin_submit", self, parse_begin_submit, args, keys, admits=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginPoll(_Transition):
    """``begin_poll``: start the status check of timer step ``expected_seq`` if the shared
    rate limit admits it; answers the record."""

    expected_seq: int
    limit_keys: tuple[str, str]
    limit_us: tuple[int, int] = NO_LIMIT_US

    def call(self, settings: Settings) -> ScriptCall[BeginPollReply]:
        args = (self.expected_seq, *self.limit_us)
        return _build(settings, "begin_poll", self, parse_begin_poll, args, self.limit_keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class Submitted(_Transition):
    """``submitted``: record the upstream id create answered for lease ``submit_seq``."""

    submit_seq: int
    upstream_id: str
    upstream_status: str
    upstream_created_at: float | None
    upstream_started_at: float | None
    first_poll_delay_ms: int
    tracking_limit_ms: int
    tracking_poll_delay_ms: int

    def call(self, settings: Settings) -> ScriptCall[StepReply]:
        args = (
            self.submit_seq,
            self.upstream_id,
            self.upstream_status,
            _time(self.upstream_created_at),
            _time(self.upstream_started_at),
            self.first_poll_delay_ms,
            self.tracking_limit_ms,
            self.tracking_poll_delay_ms,
            settings.max_models,
        )
        keys = (settings.keys.pause_streak, settings.keys.accepted_models)
        return _build(settings, "submitted", self, parse_submitted, args, keys, admits=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRelease(_Transition):
    """``submit_release``: create gave no upstream id; fail the request or retry later."""

    submit_seq: int
    mode: Literal["fail", "retry"]
    ambiguous: bool
    retry_delay_ms: int
    error: str
    ambiguous_policy: AmbiguousPolicy | str

    def call(self, settings: Settings) -> ScriptCall[StepReply]:
        args = (
            self.submit_seq,
            self.mode,
            self.ambiguous,
            self.retry_delay_ms,
            self.error,
            self.ambiguous_policy,
            ms(settings.unsubmitted_retention_s),
        )
        return _build(settings, "submit_release", self, parse_submit_release, args, admits=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PollUpdate(_Transition):
    """``poll_update``: a check that did not find the job finished (``upstream_status`` ''
    when the check failed with ``poll_error``); move to the next check."""

    expected_seq: int
    upstream_status: str
    upstream_started_at: float | None
    next_delay_ms: int
    tracking_poll_delay_ms: int
    tracking_limit_ms: int
    poll_error: str = ""
    not_found: bool = False

    def call(self, settings: Settings) -> ScriptCall[StepReply]:
        args = (
            self.expected_seq,
            self.upstream_status,
            _time(self.upstream_started_at),
            self.next_delay_ms,
            self.tracking_poll_delay_ms,
            self.tracking_limit_ms,
            self.poll_error,
            self.not_found,
        )
        return _build(settings, "poll_update", self, parse_poll_update, args, admits=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish(_Transition):
    """``finish``: the upstream job ended as ``outcome``; record outputs and cost, end."""

    expected_seq: int
    outcome: str
    cost_micro_usd: int | None
    video_url: str = ""
    error: str = ""
    upstream_created_at: float | None = None
    upstream_started_at: float | None = None
    upstream_done_at: float | None = None
    owe_download: bool = False
    #: The job completed but its cost was missing or unusable: recorded as unknown, not zero.
    cost_unknown: bool = False

    def call(self, settings: Settings) -> ScriptCall[FinishReply]:
        args = (
            self.expected_seq,
            self.outcome,
            "" if self.cost_micro_usd is None else self.cost_micro_usd,
            self.video_url,
            self.error,
            _time(self.upstream_created_at),
            _time(self.upstream_started_at),
            _time(self.upstream_done_at),
            self.owe_download,
            self.cost_unknown,
        )
        return _build(settings, "finish", self, parse_finish, args, admits=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel(_Transition):
    """``cancel``: ask for a cancel (a billed job is then tracked up to the limit)."""

    tracking_limit_ms: int

    def call(self, settings: Settings) -> ScriptCall[CancelReply]:
        args = (self.tracking_limit_ms, ms(settings.unsubmitted_retention_s))
        return _build(settings, "cancel", self, parse_cancel, args, admits=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireWaiting(_Transition):
    """``expire_waiting``: end a request whose deadline passed while it waited for admission."""

    def call(self, settings: Settings) -> ScriptCall[ExpireWaitingReply]:
        args = (ms(settings.unsubmitted_retention_s),)
        return _build(settings, "expire_waiting", self, parse_expire_waiting, args, admits=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackExtra(_Transition):
    """``track_extra``: one check of superseded job ``upstream_id`` at timer step
    ``expected_seq`` (``ended``: '' while it runs, else its end: completed, failed,
    cancelled, or gone when the upstream no longer knows it; ``not_found_streak``: its 404s in
    a row after this check, 0 once an answer found it: while above 0 it keeps its turn)."""

    expected_seq: int
    upstream_id: str
    ended: str
    cost_micro_usd: int | None
    next_delay_ms: int
    tracking_limit_ms: int
    not_found_streak: int = 0

    def call(self, settings: Settings) -> ScriptCall[StepReply]:
        args = (
            self.expected_seq,
            self.upstream_id,
            self.ended,
            "" if self.cost_micro_usd is None else self.cost_micro_usd,
            self.next_delay_ms,
            self.tracking_limit_ms,
            self.not_found_streak,
        )
        return _build(settings, "track_extra", self, parse_track_extra, args, admits=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class SideEffect(_Transition):
    """``side_effect``: the ``result`` of one owed ``effect`` at side step ``expected_side_seq``
    (``fields``: record fields to set; a dead webhook joins the dead letters, which are then
    trimmed to ``dead_max_age_ms`` and ``dead_max`` entries, each ``None``: not trimmed so).
    The attempt itself was counted before it was made (``SideAttempt``)."""

    expected_side_seq: int
    #: ``SIDE_EFFECTS``: which effect.
    effect: str
    #: ``SIDE_EFFECT_RESULTS``: done, retry later, or given up on.
    result: str
    retry_delay_ms: int
    fields: Mapping[str, str] = field(default_factory=dict)
    dead_max_age_ms: int | None = None
    dead_max: int | None = None

    def call(self, settings: Settings) -> ScriptCall[SideEffectReply]:
        if self.effect not in SIDE_EFFECTS or self.result not in SIDE_EFFECT_RESULTS:
            raise ValueError(f"side effect {self.effect!r} {self.result!r}")
        args = (
            self.expected_side_seq,
            self.effect,
            self.result,
            self.retry_delay_ms,
            json.dumps(dict(self.fields)),
            settings.keys.dead_letters,
            "" if self.dead_max_age_ms is None else self.dead_max_age_ms,
            "" if self.dead_max is None else self.dead_max,
        )
        return _build(settings, "side_effect", self, parse_side_effect, args)


@dataclass(frozen=True, slots=True, kw_only=True)
class SideAttempt(_Transition):
    """``side_attempt``: count an attempt of the owed ``effect`` at side step
    ``expected_side_seq`` before it is made (an attempt killed midway still counts)."""

    expected_side_seq: int
    #: ``SIDE_EFFECTS``: which effect.
    effect: str

    def call(self, settings: Settings) -> ScriptCall[SideAttemptReply]:
        if self.effect not in SIDE_EFFECTS:
            raise ValueError(f"side effect {self.effect!r}")
        args = (self.expected_side_seq, self.effect)
        return _build(settings, "side_attempt", self, parse_side_attempt, args)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookReplay(_Transition):
    """``webhook_replay``: owe a dead-lettered webhook again (a fresh retry window, the same
    webhook-id) and take it off the dead letters."""

    def call(self, settings: Settings) -> ScriptCall[WebhookReplayReply]:
        args = (settings.keys.dead_letters,)
        return _build(settings, "webhook_replay", self, parse_webhook_replay, args)
