"""One reply type per transition script: the raw reply (a list of strings) read once, here.

Every reply starts with a ``Tag`` (``producer/keys.py``); ``*_TAGS`` say which tags each
script answers (``tests/unit/test_lua_names.py`` checks them against the Lua). A reply with
another tag is a contract bug and raises ``ScriptReplyError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from genqueue.producer.keys import Tag


class ScriptReplyError(RuntimeError):
    """A script answered something its contract does not allow."""


def _tag(script: str, raw: list[str], allowed: frozenset[Tag]) -> Tag:
    if not raw or raw[0] not in allowed:
        raise ScriptReplyError(f"{script}: unexpected reply tag {raw[:1]!r}")
    return Tag(raw[0])


@dataclass(frozen=True, slots=True)
class NextStep:
    """The timer step a script moved the record to, and how long until it is due."""

    seq: int
    delay_ms: int


def _step(raw: list[str]) -> NextStep:
    return NextStep(int(raw[1]), int(raw[2]))


CREATE_TAGS: Final = frozenset({Tag.CREATED, Tag.EXISTS, Tag.NO_TENANT, Tag.QUEUE_FULL})


@dataclass(frozen=True, slots=True)
class CreateReply:
    """``CREATED`` a new record (``waiting``: why it waits for admission, '' if it has a slot),
    or ``EXISTS``: ``request_id`` names the one already there; ``NO_TENANT``: the request's
    tenant is not configured, ``QUEUE_FULL``: its admission queue holds its ``max_waiting``
    (``request_id``: that tenant's name), nothing written."""

    tag: Tag
    request_id: str
    waiting: str = ""

    @property
    def created(self) -> bool:
        return self.tag is Tag.CREATED


def parse_create(raw: list[str]) -> CreateReply:
    tag = _tag("create", raw, CREATE_TAGS)
    return CreateReply(tag, raw[1], raw[2] if tag is Tag.CREATED and len(raw) > 2 else "")


#: Tags of a ``begin_submit`` that put the step off to a later time.
DEFERRED_TAGS: Final = frozenset({Tag.LEASED, Tag.PAUSED, Tag.LIMITED})
#: Tags of a ``begin_submit`` that ended the request.
SUBMIT_ENDED_TAGS: Final = frozenset({Tag.CANCELLED, Tag.EXPIRED, Tag.FAILED})
BEGIN_SUBMIT_TAGS: Final = (
    frozenset({Tag.OK, Tag.STALE, Tag.MISSING, Tag.WAITING}) | DEFERRED_TAGS | SUBMIT_ENDED_TAGS
)


@dataclass(frozen=True, slots=True)
class BeginSubmitReply:
    """``OK``: the lease is taken (``submit_seq``; ``ambiguous``: an earlier attempt died
    mid-create; ``probe``: this create tests a half-open pause). A ``DEFERRED_TAGS`` tag:
    the step moved to ``step``. ``WAITING``: the request joined its tenant's admission queue
    (``waiting``: why; no timer: admission arms it). Else the request ended, is gone, or the
    step is stale."""

    tag: Tag
    submit_seq: int = 0
    ambiguous: bool = False
    probe: bool = False
    step: NextStep | None = None
    waiting: str = ""


def parse_begin_submit(raw: list[str]) -> BeginSubmitReply:
    tag = _tag("begin_submit", raw, BEGIN_SUBMIT_TAGS)
    if tag is Tag.OK:
        return BeginSubmitReply(tag, int(raw[1]), raw[2] == "1", raw[3] == "1")
    if tag in DEFERRED_TAGS:
        return BeginSubmitReply(tag, step=_step(raw))
    if tag is Tag.WAITING:
        return BeginSubmitReply(tag, waiting=raw[1])
    return BeginSubmitReply(tag)


BEGIN_POLL_TAGS: Final = frozenset({Tag.GO, Tag.LIMITED, Tag.STALE, Tag.DONE, Tag.MISSING})


@dataclass(frozen=True, slots=True)
class BeginPollReply:
    """``GO`` with the ``record`` (its hash, without the id) and Redis' clock when the check
    began (``now_ms``), ``LIMITED`` with the ``step`` put off to its turn, or ``STALE`` /
    ``DONE`` / ``MISSING``."""

    tag: Tag
    record: dict[str, str] = field(default_factory=dict)
    step: NextStep | None = None
    #: Redis ``TIME`` (ms) of a ``GO``: the schedule's "now" without a ``TIME`` round trip.
    now_ms: int | None = None


def parse_begin_poll(raw: list[str]) -> BeginPollReply:
    tag = _tag("begin_poll", raw, BEGIN_POLL_TAGS)
    if tag is Tag.GO:
        # The clock follows the field/value pairs (an odd tail); a reply without it has none.
        now_ms = int(raw[-1]) if len(raw) % 2 == 0 else None
        end = len(raw) - 1 if now_ms is not None else len(raw)
        record = dict(zip(raw[1:end:2], raw[2:end:2], strict=True))
        return BeginPollReply(tag, record, now_ms=now_ms)
    if tag is Tag.LIMITED:
        return BeginPollReply(tag, step=_step(raw))
    return BeginPollReply(tag)


STEP_TAGS: Final = frozenset({Tag.OK, Tag.STALE, Tag.MISSING})


@dataclass(frozen=True, slots=True)
class StepReply:
    """A script that moves the record to its next timer step: ``OK`` (``RETRY`` for
    ``submit_release``) with the ``step``, or another tag of the script without one."""

    tag: Tag
    step: NextStep | None = None


def _parse_step(script: str, raw: list[str], allowed: frozenset[Tag], moved: Tag) -> StepReply:
    tag = _tag(script, raw, allowed)
    return StepReply(tag, _step(raw)) if tag is moved else StepReply(tag)


SUBMITTED_TAGS: Final = STEP_TAGS


def parse_submitted(raw: list[str]) -> StepReply:
    return _parse_step("submitted", raw, SUBMITTED_TAGS, Tag.OK)


SUBMIT_RELEASE_TAGS: Final = frozenset({Tag.FAILED, Tag.RETRY, Tag.STALE, Tag.MISSING})


def parse_submit_release(raw: list[str]) -> StepReply:
    return _parse_step("submit_release", raw, SUBMIT_RELEASE_TAGS, Tag.RETRY)


POLL_UPDATE_TAGS: Final = STEP_TAGS | {Tag.ABANDONED, Tag.DONE}


def parse_poll_update(raw: list[str]) -> StepReply:
    return _parse_step("poll_update", raw, POLL_UPDATE_TAGS, Tag.OK)


TRACK_EXTRA_TAGS: Final = STEP_TAGS | {Tag.ABANDONED, Tag.DONE}


def parse_track_extra(raw: list[str]) -> StepReply:
    return _parse_step("track_extra", raw, TRACK_EXTRA_TAGS, Tag.OK)


FINISH_TAGS: Final = frozenset({Tag.OK, Tag.STALE, Tag.MISSING})


@dataclass(frozen=True, slots=True)
class FinishReply:
    """``OK``: the record's final ``status``, Redis' clock then (``now_ms``), and whether
    the visible status ended with this call (``ended_now``: not at an earlier cancel or
    deadline). Or ``STALE`` / ``MISSING``."""

    tag: Tag
    status: str = ""
    now_ms: int = 0
    ended_now: bool = False


def parse_finish(raw: list[str]) -> FinishReply:
    tag = _tag("finish", raw, FINISH_TAGS)
    if tag is Tag.OK:
        return FinishReply(tag, raw[1], int(raw[2]), raw[3] == "1")
    return FinishReply(tag)


CANCEL_TAGS: Final = frozenset({Tag.CANCELLED, Tag.REQUESTED, Tag.ALREADY, Tag.MISSING})


@dataclass(frozen=True, slots=True)
class CancelReply:
    """``CANCELLED`` now, ``REQUESTED`` (at the create's answer), ``ALREADY`` ended (as
    ``status``) or ``MISSING``."""

    tag: Tag
    status: str = ""


def parse_cancel(raw: list[str]) -> CancelReply:
    tag = _tag("cancel", raw, CANCEL_TAGS)
    return CancelReply(tag, raw[1]) if tag is Tag.ALREADY else CancelReply(tag)


EXPIRE_WAITING_TAGS: Final = frozenset({Tag.EXPIRED, Tag.STALE, Tag.MISSING})


@dataclass(frozen=True, slots=True)
class ExpireWaitingReply:
    """``EXPIRED`` now, ``STALE`` (not waiting, or its deadline not passed) or ``MISSING``."""

    tag: Tag


def parse_expire_waiting(raw: list[str]) -> ExpireWaitingReply:
    return ExpireWaitingReply(_tag("expire_waiting", raw, EXPIRE_WAITING_TAGS))


SIDE_EFFECT_TAGS: Final = frozenset({Tag.NEXT, Tag.CLEAR, Tag.STALE, Tag.MISSING})


@dataclass(frozen=True, slots=True)
class SideEffectReply:
    """``NEXT``: more is owed, as step ``side_seq`` due in ``due_in_ms``; ``CLEAR``: nothing
    is owed any more; or ``STALE`` / ``MISSING``."""

    tag: Tag
    side_seq: int = 0
    due_in_ms: int = 0


def parse_side_effect(raw: list[str]) -> SideEffectReply:
    tag = _tag("side_effect", raw, SIDE_EFFECT_TAGS)
    return (
        SideEffectReply(tag, int(raw[1]), int(raw[2])) if tag is Tag.NEXT else SideEffectReply(tag)
    )


SIDE_ATTEMPT_TAGS: Final = frozenset({Tag.OK, Tag.STALE, Tag.MISSING})


@dataclass(frozen=True, slots=True)
class SideAttemptReply:
    """``OK``: the attempt about to be made is counted, ``attempts`` with it; or ``STALE``
    (the side step moved on, or the effect is no longer pending) / ``MISSING``."""

    tag: Tag
    attempts: int = 0


def parse_side_attempt(raw: list[str]) -> SideAttemptReply:
    tag = _tag("side_attempt", raw, SIDE_ATTEMPT_TAGS)
    return SideAttemptReply(tag, int(raw[1])) if tag is Tag.OK else SideAttemptReply(tag)


WEBHOOK_REPLAY_TAGS: Final = frozenset({Tag.OK, Tag.NOT_DEAD, Tag.MISSING})


@dataclass(frozen=True, slots=True)
class WebhookReplayReply:
    """``OK``: the webhook is owed again as side step ``side_seq``; ``NOT_DEAD``: it is not
    dead-lettered (its ``webhook_state``); or ``MISSING``."""

    tag: Tag
    side_seq: int = 0
    state: str = ""


def parse_webhook_replay(raw: list[str]) -> WebhookReplayReply:
    tag = _tag("webhook_replay", raw, WEBHOOK_REPLAY_TAGS)
    if tag is Tag.OK:
        return WebhookReplayReply(tag, side_seq=int(raw[1]))
    if tag is Tag.NOT_DEAD:
        return WebhookReplayReply(tag, state=raw[1] if len(raw) > 1 else "")
    return WebhookReplayReply(tag)


#: Every script's tags, by script name (checked against the Lua by a test).
TAGS_BY_SCRIPT: Final[dict[str, frozenset[Tag]]] = {
    "create": CREATE_TAGS,
    "begin_submit": BEGIN_SUBMIT_TAGS,
    "begin_poll": BEGIN_POLL_TAGS,
    "submitted": SUBMITTED_TAGS,
    "submit_release": SUBMIT_RELEASE_TAGS,
    "poll_update": POLL_UPDATE_TAGS,
    "finish": FINISH_TAGS,
    "cancel": CANCEL_TAGS,
    "side_effect": SIDE_EFFECT_TAGS,
    "side_attempt": SIDE_ATTEMPT_TAGS,
    "webhook_replay": WEBHOOK_REPLAY_TAGS,
    "track_extra": TRACK_EXTRA_TAGS,
    "expire_waiting": EXPIRE_WAITING_TAGS,
}
