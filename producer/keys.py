"""The Redis wire contract shared by producers and workers.

Every key name, queue name, timer job id and record field lives here, so both sides agree
on one definition (the worker imports this module; the producer never imports the worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

#: Version of the record layout and of every task's arguments. Deferred timers outlive
#: rolling deploys, so a worker checks this before acting on a payload.
SCHEMA_VERSION: Final = 2

Status = Literal[
    "pending", "submitting", "queued", "in_progress", "completed", "failed", "cancelled", "expired"
]
NON_TERMINAL: Final[tuple[str, ...]] = ("pending", "submitting", "queued", "in_progress")
TERMINAL: Final[tuple[str, ...]] = ("completed", "failed", "cancelled", "expired")
ALL_STATUSES: Final[tuple[str, ...]] = NON_TERMINAL + TERMINAL
#: Fields of the counts hash that hold an upstream slot: their sum is what the in-flight cap
#: limits (``tracking``: a cancelled or expired request whose billed job is still watched).
#: ``superseded``: upstream jobs created by an attempt whose answer came after another attempt
#: went out, until they are seen to end (``lua/track_extra.lua``).
#: ``admitted``: pending requests admission has given a slot to (their submit timer is armed;
#: ``producer/admission.py``): reserved, so nobody else takes it.
HOLDING_SLOT: Final[tuple[str, ...]] = (
    "admitted",
    "submitting",
    "queued",
    "in_progress",
    "tracking",
    "superseded",
)


class Tag(StrEnum):
    """The first element of every transition script's reply (``producer/replies.py`` says
    which script answers which; ``tests/unit/test_lua_names.py`` checks the Lua uses no other)."""

    CREATED = "CREATED"
    EXISTS = "EXISTS"
    OK = "OK"
    GO = "GO"
    LEASED = "LEASED"
    PAUSED = "PAUSED"
    LIMITED = "LIMITED"
    RETRY = "RETRY"
    NEXT = "NEXT"
    CLEAR = "CLEAR"
    REQUESTED = "REQUESTED"
    ALREADY = "ALREADY"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"
    ABANDONED = "ABANDONED"
    DONE = "DONE"
    #: ``webhook_replay``: the webhook is not dead-lettered (delivered or still pending).
    NOT_DEAD = "NOT_DEAD"
    STALE = "STALE"
    MISSING = "MISSING"
    #: ``create``: the request names a tenant that is not configured (nothing written).
    NO_TENANT = "NO_TENANT"
    #: ``tenant_delete``: the tenant still has requests in flight.
    BUSY = "BUSY"
    #: ``begin_submit``: the request joined its tenant's admission queue (no timer); a freed
    #: slot admits it (``producer/admission.py``).
    WAITING = "WAITING"
    #: ``create``: the tenant's admission queue is full (``max_waiting``): nothing written.
    QUEUE_FULL = "QUEUE_FULL"


TimerKind = Literal["submit", "poll"]
SUBMIT_TASK: Final = "submit"
#: Deployment-wide admission timers (``admit:{what}:{at_ms}``): a pause's end, the earliest
#: waiting deadline (``producer/admission.py``).
ADMIT_TASK: Final = "admit"
POLL_TASK: Final = "poll"
RECONCILE_TASK: Final = "reconcile"
SIDE_TASK: Final = "side"
DISPATCH_TASK: Final = "dispatch_outbox"

#: The last ARGV of a transition script whose caller passed the timer step to enqueue
#: (``producer/timers.py``: ``inline_arm``; ``lua/_transition.lua``: ``ARM``).
INLINE_ARM_MARKER: Final = "genqueue:arm"

#: A sorted set of due times ``Z`` (a queue, the outbox) has a wake list ``Z:wake`` (at most
#: one token: a worker blocked on it wakes and looks) and a wake-at key ``Z:wake:at`` (the due
#: time one waiting worker will look at): ``worker/wakeup.py``, ``lua/_wake.lua``.
WAKE_SUFFIX: Final = ":wake"
WAKE_AT_SUFFIX: Final = ":wake:at"

#: The last part of ``Keys.counts``: a transition script finds the deployment's prefix (and so
#: the budget keys, ``Keys.budget``) from the counts key it is given (``lua/_budget.lua``).
COUNTS_SUFFIX: Final = ":counts"
#: ``Keys.budget`` is the prefix + this; ledgers and cost samples are under it.
BUDGET_SUFFIX: Final = ":budget"

#: The estimate a budget reserves for a video when nothing better is known (no completions
#: of its model yet, no ``GENQUEUE_COST_ESTIMATE_USD`` written by a worker, none for the
#: tenant): one dollar, above any video price Together lists today (cents to tens of cents).
DEFAULT_COST_ESTIMATE_MICRO_USD: Final = 1_000_000

#: ``{prefix}{WAITING_INFIX}{tenant}``: a tenant's admission queue; ``{prefix}{RECORD_INFIX}{id}``:
#: a record (both built by ``lua/_admit.lua`` for keys it cannot be given in advance).
WAITING_INFIX: Final = ":waiting:"
RECORD_INFIX: Final = ":req:"

#: Separator inside fields of the totals hash: model ids contain "/" and ":" but never "|".
TOTALS_SEP: Final = "|"

#: The tenant of every request that names none, and of every record written before tenants
#: existed (those records have no ``tenant`` field).
DEFAULT_TENANT: Final = "default"
#: First part of a tenant's own fields in the counts and totals hashes:
#: ``t|{tenant}|{field}`` beside the cluster-wide ``{field}`` (``default`` has none: its
#: figures are the cluster's minus every other tenant's, exact for records of any version).
TENANT_FIELD_PREFIX: Final = "t"


#: Why a request waits in its admission queue (``Field.WAITING``; counts hash field
#: ``waiting|{reason}``): the global in-flight cap, its tenant's own ``max_inflight``,
#: creates paused (circuit breaker), or a spend budget that cannot cover its estimate
#: (``producer/budgets.py``: while its tenant is held for budget, all its waiting requests
#: are shown as waiting for ``budget``).
WAIT_REASONS: Final[tuple[str, ...]] = ("cap", "tenant_cap", "paused", "budget")
#: First part of the counts hash fields of waiting requests (``waiting|{reason}``).
WAITING_FIELD: Final = "waiting"
#: A request's priority orders admission within its tenant (then the earliest deadline):
#: band of the admission queue's score (``band * PRIORITY_BAND + deadline_at_ms``).
PRIORITIES: Final[tuple[str, ...]] = ("high", "normal", "low")
DEFAULT_PRIORITY: Final = "normal"
PRIORITY_BAND: Final = 10**13


def waiting_field(reason: str) -> str:
    """The counts hash field of requests waiting for ``reason`` (``WAIT_REASONS``)."""
    return f"{WAITING_FIELD}{TOTALS_SEP}{reason}"


def tenant_field(tenant: str, name: str) -> str:
    """A tenant's own field of the counts or totals hash."""
    return f"{TENANT_FIELD_PREFIX}{TOTALS_SEP}{tenant}{TOTALS_SEP}{name}"


def tenant_of(raw: dict[str, str]) -> str:
    """The tenant a record belongs to (no field: written before tenants, or ``default``)."""
    return raw.get(Field.TENANT) or DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class WakeKeys:
    """The wake list and wake-at key of a sorted set of due times (``WAKE_SUFFIX``)."""

    wake: str
    wake_at: str

    @classmethod
    def of(cls, zset: str) -> WakeKeys:
        return cls(zset + WAKE_SUFFIX, zset + WAKE_AT_SUFFIX)


def timer_job_id(kind: str, request_id: str, seq: int) -> str:
    """The arq job id of a timer: deterministic, so arming the same step twice is a no-op."""
    return f"{kind}:{request_id}:{seq}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (several deployments can share a Redis)."""

    prefix: str = "genqueue"

    def record(self, request_id: str) -> str:
        return f"{self.prefix}{RECORD_INFIX}{request_id}"

    def spec(self, request_id: str) -> str:
        """String: the request as submitted (JSON: body, metadata, webhook URL), written once.

        Kept apart from the record so the record's values stay short and Redis stores the
        hash as a compact listpack (any value over ``hash-max-listpack-value``, 64 bytes by
        default, would turn the whole hash into a hashtable, about 2.3 times the size)."""
        return f"{self.prefix}:spec:{request_id}"

    def idempotency(self, key: str, tenant: str = DEFAULT_TENANT) -> str:
        """String: the request id an idempotency key names, per tenant. ``default``'s name is
        the one used before tenants existed (mappings in flight across an upgrade keep
        working); a tenant name never contains ":", so ``idem@{tenant}:`` cannot collide."""
        if tenant == DEFAULT_TENANT:
            return f"{self.prefix}:idem:{key}"
        return f"{self.prefix}:idem@{tenant}:{key}"

    @property
    def tenants(self) -> str:
        """Hash: tenant name -> its settings (JSON, ``producer/tenants.py``)."""
        return f"{self.prefix}:tenants"

    @property
    def api_keys(self) -> str:
        """Hash: SHA-256 (hex) of an API key -> the key's owner (JSON, ``producer/api_keys.py``);
        a key is never stored in clear."""
        return f"{self.prefix}:apikeys"

    def done_channel(self, request_id: str) -> str:
        return f"{self.prefix}:done:{request_id}"

    @property
    def done_pattern(self) -> str:
        return f"{self.prefix}:done:*"

    @property
    def inflight(self) -> str:
        """Sorted set: request id scored by its next check time (Redis ms)."""
        return f"{self.prefix}:inflight"

    @property
    def counts(self) -> str:
        """Hash: non-terminal status -> number of records in it."""
        return f"{self.prefix}{COUNTS_SUFFIX}"

    @property
    def budget(self) -> str:
        """Hash: the deployment's spend budget (``micro_usd``, ``period``), the default cost
        estimate workers wrote (``cost_estimate_micro_usd``), and a test clock offset
        (``producer/budgets.py``)."""
        return f"{self.prefix}{BUDGET_SUFFIX}"

    def budget_ledger(self, kind: str, period: str) -> str:
        """Hash: reserved and spent micro-USD of one UTC ``day`` (``YYYY-MM-DD``) or ``month``
        (``YYYY-MM``), deployment-wide and per tenant (``t|{tenant}|{field}``); expires a
        little after the period (``lua/_budget.lua``)."""
        return f"{self.prefix}{BUDGET_SUFFIX}:{kind}:{period}"

    @property
    def budget_held(self) -> str:
        """Hash: tenant -> until when (Redis ms, the end of the period that held it) its next
        request cannot be covered by a budget: every waiting request of the tenant waits for
        budget meanwhile (``lua/_admit.lua``). A field goes when one of the tenant's requests
        is admitted; the hash when a budget changes."""
        return f"{self.prefix}{BUDGET_SUFFIX}:held"

    def budget_costs(self, model: str) -> str:
        """List: the last costs (micro-USD) of a model's completed videos, newest first: the
        estimate a budget reserves is their highest (``lua/_budget.lua``)."""
        return f"{self.prefix}{BUDGET_SUFFIX}:costs:{model}"

    @property
    def totals(self) -> str:
        """Hash: ``finished|{model}|{outcome}`` and ``cost_micro|{model}`` cluster totals."""
        return f"{self.prefix}:totals"

    @property
    def events(self) -> str:
        """Capped stream of every transition."""
        return f"{self.prefix}:events"

    @property
    def outbox(self) -> str:
        """Sorted set: request id -> when its owed side effects (download, webhook) are due."""
        return f"{self.prefix}:outbox"

    @property
    def dead_letters(self) -> str:
        """Sorted set: request ids whose webhook was given up on, scored by when."""
        return f"{self.prefix}:webhooks:dead"

    @property
    def queue_wake(self) -> WakeKeys:
        """How a waiting main worker is woken (arms of status timers)."""
        return WakeKeys.of(self.queue)

    @property
    def side_wake(self) -> WakeKeys:
        """How a waiting side worker is woken: by an owed side effect (``lua/_transition.lua``
        ``owe``, which knows only the outbox key) or an armed side job; so the outbox's."""
        return WakeKeys.of(self.outbox)

    @property
    def reconcile_lock(self) -> str:
        """String (expiring): one worker reconciles per interval (``worker/wakeup.py``)."""
        return f"{self.prefix}:reconcile:lock"

    @property
    def side_queue(self) -> str:
        """The arq queue of side effects (downloads, webhooks): slow receivers never delay
        status checks, and their timeouts never lengthen the main queue's crash recovery."""
        return f"{self.prefix}:side"

    def durations(self, model: str, kind: str) -> str:
        """List: a sample of one model's recent upstream durations (seconds), ``total``
        (created to done) or ``generation`` (observed start to done); ``recent_total_by_done``
        / ``recent_generation_by_done``: sorted sets of the latest-done of them as
        ``start:done`` scored by ``done``; ``offset``: recent upper bounds of Redis' clock
        minus the upstream's; ``kind="count"``: a counter of the completions offered to the
        sample (see ``worker/durations.py``). ``recent_total`` / ``recent_generation``: lists
        the previous version kept (last seen first), no longer read; a durations refresh
        deletes one untouched for an hour (``worker/durations.py: LEFTOVER_IDLE_S``)."""
        return f"{self.prefix}:durations:{kind}:{model}"

    @property
    def pause(self) -> str:
        """Hash describing a pause of upstream creates (circuit breaker), absent when running."""
        return f"{self.prefix}:pause"

    def rate_limit(self, identity: str) -> str:
        """String: the shared rate limit's theoretical arrival time (GCRA, Redis µs) for one
        upstream and API key (``identity``: a hash of both)."""
        return f"{self.prefix}:ratelimit:{identity}"

    def rate_turns(self, identity: str) -> str:
        """String: the next free turn (Redis ms) of a call the rate limit refused."""
        return f"{self.prefix}:ratelimit:{identity}:turn"

    def gateway_rate(self, caller: str) -> str:
        """String: the gateway's request rate of one API key (GCRA TAT, Redis µs; ``caller``:
        a hash of the key's digest, never the key); TTL at most the burst's refill time."""
        return f"{self.prefix}:gw:rate:{caller}"

    def gateway_auth_failures(self, address: str) -> str:
        """String: the gateway's failed authentications of one client address (an IPv4
        address or an IPv6 /64; GCRA TAT, Redis µs); TTL at most the burst's refill time."""
        return f"{self.prefix}:gw:authfail:{address}"

    @property
    def accepted_models(self) -> str:
        """Set: models the upstream has accepted (bounded by ``Settings.max_models``); a
        request for any other is counted under ``other`` in the totals."""
        return f"{self.prefix}:models"

    @property
    def pause_streak(self) -> str:
        """Counter of creates in a row that failed like an outage, across all workers (a
        streak long enough pauses creates; any answer from the upstream ends it)."""
        return f"{self.prefix}:pause:streak"

    @property
    def queue(self) -> str:
        """The arq queue (a sorted set of job ids scored by run time)."""
        return f"{self.prefix}:queue"

    # --- admission (producer/admission.py, lua/_admit.lua) ---

    @property
    def admission(self) -> str:
        """Hash: admission state: ``max_inflight`` (the global cap) and ``reserve_slots`` (its
        last slots kept for tenants below their share; absent: 0), both written by each worker
        at start, ``vtime`` (the virtual time of the last admission), ``pass|{tenant}`` (each
        tenant's virtual time), ``expiry_at`` (when the expiry timer is armed)."""
        return f"{self.prefix}:admission"

    @property
    def admission_reserved(self) -> str:
        """Sorted set: ``{tenant}|{id}`` of each slot reserved for an admitted request, by when
        (``lua/_admit.lua`` builds the name from ``admission``'s)."""
        return f"{self.admission}:admitted"

    @property
    def admission_ready(self) -> str:
        """Sorted set: tenants with waiting requests that may be admitted, by virtual time."""
        return f"{self.prefix}:admission:ready"

    @property
    def admission_deadlines(self) -> str:
        """Sorted set: waiting request id -> its deadline (Redis ms), for the expiry timer."""
        return f"{self.prefix}:admission:deadlines"

    def waiting(self, tenant: str) -> str:
        """Sorted set: a tenant's waiting request ids by ``priority band * 1e13 + deadline``
        (``lua/_admit.lua`` builds the same name from the prefix: ``WAITING_INFIX``)."""
        return f"{self.prefix}{WAITING_INFIX}{tenant}"

    def script_keys(
        self, request_id: str, idempotency_key: str | None, tenant: str = DEFAULT_TENANT
    ) -> list[str]:
        """The KEYS every transition script takes, in this order."""
        idem = (
            self.idempotency(idempotency_key, tenant)
            if idempotency_key
            else self.record(request_id)
        )
        return [
            self.record(request_id),
            self.inflight,
            self.counts,
            self.totals,
            self.events,
            idem,
            self.outbox,
            self.spec(request_id),
        ]


class Field:
    """Names of the record hash's fields."""

    VERSION: Final = "v"
    #: Not stored since schema 2 (the key holds it); readers add it (``record.with_id``).
    ID: Final = "id"
    STATUS: Final = "status"
    MODEL: Final = "model"
    #: The tenant owning the request; absent for ``default`` (and in records written before
    #: tenants existed, which are ``default``'s): ``tenant_of`` reads it.
    TENANT: Final = "tenant"
    #: Spec fields: kept in the spec key since schema 2 (in the record hash in schema 1).
    REQUEST: Final = "request"
    METADATA: Final = "metadata"
    WEBHOOK_URL: Final = "webhook_url"
    #: "1" when the spec names a webhook (the terminal script owes one without reading it).
    HAS_WEBHOOK: Final = "has_webhook"
    IDEMPOTENCY_KEY: Final = "idempotency_key"
    SEQ: Final = "seq"
    #: ``high`` | ``low`` (absent: ``normal``): orders admission within the tenant.
    PRIORITY: Final = "priority"
    #: Why the request waits in its tenant's admission queue (``WAIT_REASONS``), while it does
    #: (it then has no timer and is not in the in-flight index).
    WAITING: Final = "waiting"
    #: "1" while a pending request holds a slot admission gave it (counted as ``admitted``).
    ADMITTED: Final = "admitted"
    TIMER: Final = "timer"
    NEXT_CHECK_AT_MS: Final = "next_check_at_ms"
    DEADLINE_AT_MS: Final = "deadline_at_ms"
    ENQUEUED_AT_MS: Final = "enqueued_at_ms"
    SUBMITTED_AT_MS: Final = "submitted_at_ms"
    FINISHED_AT_MS: Final = "finished_at_ms"
    SUBMIT_SEQ: Final = "submit_seq"
    LEASE_OWNER: Final = "lease_owner"
    LEASE_UNTIL_MS: Final = "lease_until_ms"
    AMBIGUOUS_SUBMITS: Final = "ambiguous_submits"
    UPSTREAM_ID: Final = "upstream_id"
    UPSTREAM_IDS: Final = "upstream_ids"
    UPSTREAM_STATUS: Final = "upstream_status"
    UPSTREAM_CREATED_AT: Final = "upstream_created_at"
    UPSTREAM_STARTED_AT: Final = "upstream_started_at"
    UPSTREAM_DONE_AT: Final = "upstream_done_at"
    #: Redis ms of the last check that saw the upstream job ``queued`` (generation started
    #: after it).
    SEEN_QUEUED_AT_MS: Final = "seen_queued_at_ms"
    #: Redis ms of the first check that saw the upstream job ``in_progress`` (generation
    #: started before it).
    SEEN_STARTED_BY_MS: Final = "seen_started_by_ms"
    POLLS: Final = "polls"
    #: "1" while a check the rate limit refused holds a turn (it then goes before new checks).
    CALL_TURN: Final = "call_turn"
    POLL_ERRORS: Final = "poll_errors"
    #: 404s in a row (answers that found the job reset it; other errors leave it alone).
    NOT_FOUND_STREAK: Final = "not_found_streak"
    CANCEL_REQUESTED: Final = "cancel_requested"
    #: "1" while a cancelled or expired request's own job is tracked; "extra" while only its
    #: superseded jobs (``EXTRA_IDS``) are.
    TRACKING: Final = "tracking"
    #: JSON list of superseded upstream ids not yet seen to end (``UPSTREAM_IDS`` keeps all).
    EXTRA_IDS: Final = "extra_ids"
    #: 404s in a row for the superseded job at the head of ``EXTRA_IDS`` (it keeps its turn
    #: until an answer finds it or the streak reaches the limit: one 404 is not "gone").
    EXTRA_NOT_FOUND_STREAK: Final = "extra_not_found_streak"
    #: Cost of the superseded jobs that ended (micro-USD), beside the request's own.
    SUPERSEDED_COST_MICRO_USD: Final = "superseded_cost_micro_usd"
    #: Attempts that may have created an upstream job genqueue will never learn of.
    POSSIBLY_BILLED: Final = "possibly_billed"
    #: "1" when the job completed but its cost was missing or unusable (never read as zero).
    COST_UNKNOWN: Final = "cost_unknown"
    #: "1" while the request's model is not one the upstream has accepted (counted as other).
    MODEL_UNVERIFIED: Final = "model_unverified"
    TRACKING_UNTIL_MS: Final = "tracking_until_ms"
    COST_MICRO_USD: Final = "cost_micro_usd"
    VIDEO_URL: Final = "video_url"
    ERROR: Final = "error"
    #: The error of a tracked job's own end, after the request already ended (cancelled or
    #: expired): ``error`` keeps what the user saw.
    UPSTREAM_ERROR: Final = "upstream_error"
    SIDE_SEQ: Final = "side_seq"
    WEBHOOK_ID: Final = "webhook_id"
    WEBHOOK_STATE: Final = "webhook_state"
    WEBHOOK_ATTEMPTS: Final = "webhook_attempts"
    WEBHOOK_DELIVERED_AT_MS: Final = "webhook_delivered_at_ms"
    WEBHOOK_ERROR: Final = "webhook_error"
    #: HTTP status of the last webhook answer ("" when none came: refused, timeout, error).
    WEBHOOK_LAST_STATUS: Final = "webhook_last_status"
    #: When an operator replayed a dead webhook (its retry window restarts then).
    WEBHOOK_REPLAYED_AT_MS: Final = "webhook_replayed_at_ms"
    DOWNLOAD_STATE: Final = "download_state"
    DOWNLOAD_ATTEMPTS: Final = "download_attempts"
    DOWNLOAD_PATH: Final = "download_path"
    DOWNLOAD_SHA256: Final = "download_sha256"
    DOWNLOAD_BYTES: Final = "download_bytes"
    DOWNLOAD_ERROR: Final = "download_error"
    #: Spend budgets (``producer/budgets.py``): the UTC day (``YYYY-MM-DD``) the request was
    #: admitted in (its reservation and spend count in that day's and month's ledgers), the
    #: estimate reserved for it (micro-USD: unknown and possibly billed costs count at it), and
    #: the reservation still outstanding (absent once settled or released).
    BUDGET_DAY: Final = "budget_day"
    BUDGET_ESTIMATE_MICRO_USD: Final = "budget_estimate_micro_usd"
    BUDGET_RESERVED_MICRO_USD: Final = "budget_reserved_micro_usd"
