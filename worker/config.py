"""Worker configuration: one typed dataclass, read once from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from genqueue.producer import envconfig
from genqueue.producer.envconfig import meta
from genqueue.producer.settings import Settings

AmbiguousPolicy = Literal["resubmit", "fail"]
TransportKind = Literal["aiohttp", "httpx"]
DurableWrites = Literal["auto", "off"]


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """When each request is checked upstream (durations marked *scaled* follow ``time_scale``)."""

    #: ``adaptive``: once a model's recent durations are known, the first check lands one
    #: ``poll_floor_s`` after a low quantile of them, then checks come every ``poll_floor_s``
    #: until a high quantile, then back off (measured from the upstream's creation, and from
    #: the checks that saw the job ``queued`` / ``in_progress`` once generation times are
    #: known: ``worker/window.py``); ``fixed``: ``first_poll_s`` then backoff only.
    mode: Literal["adaptive", "fixed"] = field(
        default="adaptive", metadata=meta(env="GENQUEUE_POLL_SCHEDULE")
    )
    #: The share of a model's videos allowed to end more than one ``poll_floor_s`` before
    #: the adaptive schedule's first check (the only ones whose detection lag may exceed the
    #: floor before the window ends): the first check is due at this quantile + the floor.
    adaptive_quantile: float = 0.04
    #: How sure the schedule must be that no more than ``adaptive_quantile`` of the videos
    #: end that early, given that the quantile is estimated from a sample of completions:
    #: the first check uses a lower confidence bound of the quantile, which is earlier the
    #: fewer completions are known and converges on the quantile as they grow (0.5: the
    #: plain estimate). Without it a model with 200 completions missed its p95 by seconds.
    adaptive_confidence: float = 0.9
    #: Durations kept per model (a sample of about the last 10,000 completions, shared in
    #: Redis): the more, the closer the lower bound above sits to the quantile itself.
    adaptive_samples: int = 10_000
    #: The quantile up to which checks stay every ``poll_floor_s`` (the dense window; at or
    #: below ``adaptive_quantile``: no window, backoff right after the first check).
    adaptive_dense_until_quantile: float = 0.999
    #: Completions of a model needed before its durations are trusted.
    adaptive_min_samples: int = 10
    #: The last completions of a model compared with its long sample: when their median has
    #: moved by more than ``adaptive_shift_z`` standard errors (a slower model, a longer
    #: upstream queue), the whole window moves by that much (``worker/drift.py``). Fewer
    #: follow a change sooner but notice only larger ones.
    adaptive_recent_samples: int = 100
    #: Latest-done completions kept per model (Redis) to choose those recent ones from: only
    #: completions done a check interval at the cap before the newest are used (all their
    #: neighbours have been seen), so following a change needs fewer than about
    #: ``adaptive_recent_kept / (poll_cap_s + poll_floor_s)`` completions per second of one
    #: model (4,000 / 34.7 s: 115 per second); above that the schedule is not moved at all.
    adaptive_recent_kept: int = 4_000
    #: How many standard errors of the recent median a shift must exceed to be followed
    #: (0: never follow; a steady model is left exactly as its long sample places it).
    adaptive_shift_z: float = 3.0
    #: Observed generation times (start bracketed by the checks, to completion) needed before
    #: a check that saw the job ``queued`` or ``in_progress`` moves its window.
    adaptive_generation_min_samples: int = 100
    #: Probes: checks spent while a job waits in the upstream's queue, so its window is
    #: placed from the bracketed start of generation instead of from creation, planned when
    #: the learned durations say they save at least this many checks per video
    #: (``worker/window.py: probes``; a long queue wait). Only on an upstream seen reporting
    #: ``queued``; while fewer than ``adaptive_generation_min_samples`` generation times are
    #: known there, every job is probed to learn them. Negative: probe whatever the gain;
    #: ``off``: set ``adaptive_probes`` false.
    adaptive_probe_min_gain: float = 0.0
    #: Whether probes are planned at all (false: the schedule of session 9, from creation
    #: and the checks it makes anyway).
    adaptive_probes: bool = True
    #: First check after create (scaled) while a model's durations are unknown.
    first_poll_s: float = 20.0
    #: Backoff between checks after the first (scaled): floor * factor**n, at most cap.
    poll_floor_s: float = 4.7
    #: Longest interval between checks (scaled).
    poll_cap_s: float = 30.0
    #: Backoff growth per check.
    poll_factor: float = 1.5
    #: Jitter as a fraction of each delay (0 turns it off).
    poll_jitter: float = 0.1
    #: Timer slack (scaled): a check due within this is run with the ones due now, so checks
    #: due close together share one wake-up of the worker (``worker/claim.py``). Counts as at
    #: most a quarter of ``poll_floor_s``; 0 runs every check at its time.
    poll_slack_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.poll_floor_s <= self.poll_cap_s:
            raise ValueError("need 0 < poll_floor_s <= poll_cap_s")
        if self.poll_factor < 1:
            raise ValueError("poll_factor must be >= 1")
        if not 0 <= self.poll_jitter < 1:
            raise ValueError("poll_jitter must be in [0, 1)")
        if self.poll_slack_s < 0:
            raise ValueError("poll_slack_s must be >= 0")
        if self.mode not in ("adaptive", "fixed"):
            raise ValueError("poll_schedule must be 'adaptive' or 'fixed'")
        if not 0 <= self.adaptive_quantile < 1:
            raise ValueError("adaptive_quantile must be in [0, 1)")
        if self.adaptive_samples < max(1, self.adaptive_min_samples):
            raise ValueError("adaptive_samples must be >= adaptive_min_samples (and >= 1)")
        if not 0.5 <= self.adaptive_confidence < 1:
            raise ValueError("adaptive_confidence must be in [0.5, 1)")
        if not 0 <= self.adaptive_dense_until_quantile <= 1:
            raise ValueError("adaptive_dense_until_quantile must be in [0, 1]")
        if self.adaptive_recent_kept < self.adaptive_recent_samples:
            raise ValueError("adaptive_recent_kept must be >= adaptive_recent_samples")
        if self.adaptive_recent_samples < 0 or self.adaptive_shift_z < 0:
            raise ValueError("adaptive_recent_samples and adaptive_shift_z must be >= 0")

    @property
    def slack_s(self) -> float:
        """The timer slack in force (unscaled): ``poll_slack_s``, at most a quarter of
        ``poll_floor_s`` (a check may run that early; more would thin the dense checks)."""
        return min(self.poll_slack_s, self.poll_floor_s / 4)


@dataclass(frozen=True, slots=True)
class UpstreamTimeoutSettings:
    """HTTP timeouts of calls to the upstream API (like ``httpx.Timeout``)."""

    #: Connect timeout of an upstream call.
    connect_s: float = field(default=5.0, metadata=meta(env="GENQUEUE_CONNECT_TIMEOUT_S"))
    #: Read timeout of an upstream call.
    read_s: float = field(default=15.0, metadata=meta(env="GENQUEUE_READ_TIMEOUT_S"))


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Signed webhook calls (variables ``GENQUEUE_WEBHOOK_*``)."""

    #: Standard Webhooks signing secret (``whsec_...``); required when requests of a tenant
    #: without its own secret carry webhook URLs.
    secret: str = field(default="", repr=False, metadata=meta(secret=True))
    #: Total deadline of one webhook POST (connect, send, answer), whatever the receiver
    #: trickles; the answer's body is never read.
    timeout_s: float = 10.0
    #: Webhook deliveries in flight at once to one receiving host, per side worker process;
    #: a delivery finding its host full is put back a second later without an attempt.
    host_concurrency: int = 8
    #: Retries back off from ``webhook_retry_s`` to ``webhook_retry_cap_s``.
    retry_s: float = 5.0
    #: Longest delay between delivery attempts.
    retry_cap_s: float = 3600.0
    #: Retries stop (dead letter) this long after the request ended.
    max_age_s: float = 86400.0
    #: Dead-lettered webhooks kept: at most this many.
    dead_max: int = 10_000
    #: Dead-lettered webhooks kept: for at most this long.
    dead_max_age_s: float = 7 * 86400.0

    def __post_init__(self) -> None:
        if self.host_concurrency < 1:
            raise ValueError("webhook_host_concurrency must be at least 1")
        if self.dead_max < 1:
            raise ValueError("webhook_dead_max must be at least 1")


@dataclass(frozen=True, slots=True)
class DownloadSettings:
    """Downloads of finished videos (variables ``GENQUEUE_DOWNLOAD_*``)."""

    #: Download finished videos into this directory (empty = don't).
    dir: str = ""
    #: Upload finished videos to S3-compatible storage instead: ``s3://bucket/prefix``
    #: (empty = use ``download_dir``). Streamed as a multipart upload; the object is tagged
    #: with its SHA-256. Credentials come from boto3's chain (``AWS_*``), never from here.
    #: Needs ``pip install 'genqueue[s3]'``.
    s3_url: str = ""
    #: The S3 API endpoint (empty: AWS itself), e.g. a MinIO URL.
    s3_endpoint_url: str = ""
    #: The S3 region (empty: boto3's default).
    s3_region: str = ""
    #: Multipart part size: memory per upload in flight (S3's minimum is 5 MiB).
    s3_part_bytes: int = 8 << 20
    #: Larger videos are refused.
    max_bytes: int = 1 << 30
    #: Total deadline of one download attempt (every redirect hop and the whole body).
    timeout_s: float = 120.0
    #: Redirects a download may follow (each hop is checked like a webhook URL, except the
    #: upstream's own origin).
    max_redirects: int = 5
    #: Attempts before a download gives up.
    retries: int = 5

    def __post_init__(self) -> None:
        if self.s3_part_bytes < 5 << 20:
            raise ValueError("download_s3_part_bytes must be at least 5 MiB (S3's minimum)")
        if self.s3_url and not self.s3_url.startswith("s3://"):
            raise ValueError("download_s3_url must look like s3://bucket/prefix")
        if self.max_redirects < 0:
            raise ValueError("download_max_redirects must be >= 0")

    @property
    def on(self) -> bool:
        """Finished videos are downloaded (to a directory or to object storage)."""
        return bool(self.dir or self.s3_url)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How workers talk to the upstream and schedule their checks (units in the names).

    Durations marked *scaled* are multiplied by ``time_scale`` (architecture rule 14), so the
    demo and benchmarks can run a 3-minute video in seconds with the same schedule shape.
    """

    settings: Settings = field(default_factory=Settings)
    #: Upstream base URL (the simulator: ``http://127.0.0.1:8090``).
    upstream_url: str = "https://api.together.xyz"
    #: Your Together AI API key; required by ``genqueue worker``.
    api_key: str = field(default="", repr=False, metadata=meta(env="TOGETHER_API_KEY", secret=True))
    #: HTTP transport under httpx (aiohttp is cheaper per call).
    transport: TransportKind = "aiohttp"
    #: Multiplies every *scaled* duration (demo, benchmarks).
    time_scale: float = 1.0
    #: When each request is checked upstream (adaptive or fixed, backoff, jitter).
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    #: Retry delays of a create that did not happen (scaled), backoff base and cap.
    submit_retry_s: float = 2.0
    submit_retry_cap_s: float = 60.0
    #: Cap on upstream jobs in flight across all workers (0 = no cap). Each worker writes its
    #: own as the deployment's when it starts (the last one started wins); requests beyond it
    #: wait in their tenants' admission queues (``producer/admission.py``).
    max_inflight: int = 0
    #: The last free slots of that cap kept for tenants holding fewer slots than their
    #: weighted share (docs/architecture.md rule 20): a light tenant beside a heavy one is
    #: admitted at once instead of after a slot turnover. Announced with the cap (the last
    #: worker started wins); no effect without a cap, under a cap of 1, or with one tenant.
    admission_reserve_slots: int = 1
    #: The cost a spend budget reserves for a video while its model's cost is not known yet
    #: (fewer than 20 completions; then the highest of its last 50: ``producer/budgets.py``).
    #: Set it to your most expensive model's price; a tenant may have its own.
    cost_estimate_usd: float = 1.0
    #: Tests only: honour the budget clock offset tests write in Redis (a worker started
    #: without it deletes any; nothing in production writes one).
    budget_test_clock: bool = False
    #: Shared limit on upstream calls (creates and polls) across all workers: requests/s
    #: sustained, plus a burst (0 = no limit).
    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 0
    #: How long creates pause for everyone after 401/402/403 (not scaled: a human must act).
    pause_s: float = 60.0
    #: A create that may or may not have happened: create again (with the same
    #: idempotency key) or fail the request.
    ambiguous_policy: AmbiguousPolicy = "resubmit"
    #: Consecutive outage-like create failures (5xx, timeouts) across all workers that pause
    #: creates for everyone.
    breaker_failure_streak: int = 10
    #: Consecutive 404s on a poll before the request fails.
    not_found_limit: int = 3
    #: Every task's timeout; it also sets how soon arq re-runs a SIGKILLed task (+10 s).
    task_timeout_s: float = 30.0
    #: HTTP timeouts of upstream calls (their sum must stay below ``task_timeout_s``).
    upstream_timeouts: UpstreamTimeoutSettings = field(default_factory=UpstreamTimeoutSettings)
    #: Concurrent tasks per worker process.
    max_jobs: int = 100
    #: Timers read per queue poll (far above running jobs).
    queue_read_limit: int = 2000
    #: Least time between two looks of a busy worker for due timers (an idle one waits for a
    #: due time or a wake-up: ``worker/wakeup.py``): a check runs up to this late, which the
    #: dense window's lag bound pays on top of the floor. Under load 0.05 s cost no more CPU
    #: per call than 0.1 s (10k bench run).
    poll_delay_s: float = 0.05
    #: Longest a worker with nothing due waits before it looks anyway (it is woken sooner by
    #: a due time, an armed timer or an owed side effect): bounds the delay a lost wake-up or
    #: a dead worker that watched the next due time can cause.
    idle_wait_max_s: float = 60.0
    #: On SIGTERM, how long running tasks may finish before they are cancelled.
    job_completion_wait_s: float = 20.0
    #: Reconciler period (divides 60, or a multiple of 60); one worker of all runs it.
    reconcile_interval_s: int = 30
    #: A timer this overdue (scaled) is considered lost and re-armed.
    reconcile_grace_s: float = 30.0
    #: Records per reconciler batch.
    reconcile_batch: int = 1000
    #: After recording an upstream id, wait for a replica (WAIT 1, when the deployment has
    #: replicas) and for fsync (WAITAOF, Redis >= 7.2 with AOF on).
    durable_writes: DurableWrites = "auto"
    #: How long that wait may take (then logged and counted: nothing is assumed durable).
    durable_wait_timeout_s: float = 1.0
    #: Serve this process's metrics on this port (0 = don't).
    metrics_port: int = 0
    #: Signed webhook calls when a request finishes.
    webhooks: WebhookSettings = field(
        default_factory=WebhookSettings, metadata=meta(env_prefix="WEBHOOK_")
    )
    #: Downloads of finished videos.
    downloads: DownloadSettings = field(
        default_factory=DownloadSettings, metadata=meta(env_prefix="DOWNLOAD_")
    )
    #: Least time between two passes of the outbox dispatcher (a pass runs as soon as a side
    #: effect is owed; this batches the ones owed right after).
    outbox_interval_s: int = 1
    #: Lease owner name in records.
    worker_name: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
        metadata=meta(default_text="<hostname>:<pid>"),
    )

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if self.admission_reserve_slots < 0:
            raise ValueError("admission_reserve_slots must be >= 0")
        if self.cost_estimate_usd <= 0:
            raise ValueError("cost_estimate_usd must be positive")
        if self.ambiguous_policy not in ("resubmit", "fail"):
            raise ValueError("ambiguous_policy must be 'resubmit' or 'fail'")
        if self.durable_writes not in ("auto", "off"):
            raise ValueError("durable_writes must be 'auto' or 'off'")
        if self.transport not in ("aiohttp", "httpx"):
            raise ValueError("transport must be 'aiohttp' or 'httpx'")
        http_budget = self.upstream_timeouts.connect_s + self.upstream_timeouts.read_s
        if http_budget >= self.task_timeout_s:
            # The upstream id must be written before the task can time out (rule 3).
            raise ValueError(
                f"connect_timeout_s + read_timeout_s ({http_budget:g}) must be below "
                f"task_timeout_s ({self.task_timeout_s:g})"
            )
        if self.webhooks.max_age_s + 3600 > self.settings.retention_s:
            raise ValueError("retention_s must outlast webhook_max_age_s by at least an hour")
        if self.webhooks.max_age_s + 3600 > self.settings.unsubmitted_retention_s:
            raise ValueError(
                "unsubmitted_retention_s must outlast webhook_max_age_s by at least an hour"
            )
        if self.reconcile_interval_s <= 0 or (
            self.reconcile_interval_s < 60 and 60 % self.reconcile_interval_s
        ):
            raise ValueError("reconcile_interval_s must divide 60 (or be a multiple of 60)")

    @property
    def cost_estimate_micro_usd(self) -> int:
        """``cost_estimate_usd`` as integer micro-dollars (rounded to the micro-dollar)."""
        return int((Decimal(repr(self.cost_estimate_usd)) * 1_000_000).to_integral_value())

    @property
    def downloads_on(self) -> bool:
        """Finished videos are downloaded (to a directory or to object storage)."""
        return self.downloads.on

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    @property
    def lease_s(self) -> float:
        """Submit lease: a create can't outlive its task, plus a margin for clock jitter."""
        return self.task_timeout_s + 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        """Config from ``GENQUEUE_*`` variables and ``TOGETHER_API_KEY``."""
        return envconfig.from_env(cls, os.environ if env is None else env)
