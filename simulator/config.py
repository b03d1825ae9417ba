"""Configuration of the simulated Together video API."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Literal, Protocol

from starlette.requests import Request
from starlette.responses import Response

from genqueue.simulator.faults import FaultProfile

Shape = Literal["sdk", "legacy"]

MICRO_PER_USD = 1_000_000


def usd_to_micro(usd: str | Decimal) -> int:
    """Convert a decimal dollar amount ("0.28") to integer micro-dollars (280000)."""
    return int(Decimal(usd) * MICRO_PER_USD)


@dataclass(frozen=True)
class ModelProfile:
    """How one video model behaves: lognormal generation time, price, default clip."""

    median_s: float
    sigma: float
    cost_micro_usd: int
    seconds: str = "5"
    size: str = "1366x768"


def _profile(median_s: float, sigma: float, cost: str, seconds: str, size: str) -> ModelProfile:
    return ModelProfile(median_s, sigma, usd_to_micro(cost), seconds, size)


# Durations follow the docs' examples (minutes; one took ~174 s). Together publishes no price
# list, so costs are illustrative, in the 0.05-0.50 USD range, cent-level like the docs' 0.28.
DEFAULT_MODELS: Mapping[str, ModelProfile] = MappingProxyType(
    {
        "minimax/video-01-director": _profile(150, 0.25, "0.28", "5", "1366x768"),
        "minimax/hailuo-02": _profile(120, 0.30, "0.49", "6", "1366x768"),
        "google/veo-3.0": _profile(90, 0.30, "0.50", "8", "1280x720"),
        "google/veo-3.0-fast": _profile(60, 0.30, "0.40", "8", "1280x720"),
        "openai/sora-2": _profile(120, 0.35, "0.40", "4", "1280x720"),
        "openai/sora-2-pro": _profile(240, 0.35, "0.50", "4", "1280x720"),
        "kwaivgI/kling-2.1-master": _profile(180, 0.30, "0.45", "5", "1920x1080"),
        "ByteDance/Seedance-1.0-pro": _profile(60, 0.30, "0.15", "5", "1920x1080"),
        "pixverse/pixverse-v5": _profile(45, 0.30, "0.30", "5", "1280x720"),
        "vidu/vidu-q1": _profile(60, 0.30, "0.25", "5", "1920x1080"),
        "Wan-AI/Wan2.2-T2V-A14B": _profile(100, 0.30, "0.05", "5", "1280x720"),
    }
)

UNKNOWN_MODEL = _profile(120, 0.30, "0.25", "5", "1280x720")


class FaultPolicy(Protocol):
    """Around-hook for fault injection, applied to every upstream API request.

    ``endpoint`` is the route label (e.g. ``"POST /v2/videos"``). The policy may return its own
    response without calling ``call_next`` (429, 503...), await ``call_next()`` and replace the
    response (a job created but its answer lost), sleep first, or raise to drop the connection.
    It may answer :class:`genqueue.simulator.faults.Abandoned` once the client has gone: the
    request is then counted under that response's label instead of a status code.
    """

    async def __call__(
        self, endpoint: str, request: Request, call_next: Callable[[], Awaitable[Response]]
    ) -> Response: ...


@dataclass(frozen=True)
class SimConfig:
    """Behaviour of the simulator; every simulated duration is multiplied by ``time_scale``."""

    seed: int = 0
    time_scale: float = 1.0
    shape: Shape = "sdk"
    failure_share: float = 0.05
    honour_idempotency: bool = False
    """Replay a create that repeats an ``Idempotency-Key``. Together documents no idempotency,
    so off by default (the real API's behaviour); an opt-in for tests that need replays.
    Creations per key are counted (``duplicate_creations``) either way."""
    api_key: str | None = None
    queue_median_s: float = 5.0
    queue_sigma: float = 0.5
    models: Mapping[str, ModelProfile] = field(default_factory=lambda: DEFAULT_MODELS, hash=False)
    accept_unknown_models: bool = False
    unknown_model: ModelProfile = UNKNOWN_MODEL
    duration_median_s: float | None = None
    duration_sigma: float | None = None
    public_url: str | None = None
    """Base URL put in ``video_url``; None means the URL the request arrived on."""
    report_queued: bool = True
    """Report ``queued`` before generation starts (the docs' status table); False answers
    ``in_progress`` from creation on, as the spec's status enum (no ``queued``) has it."""
    signed_url_ttl_s: float = 3600.0
    """``video_url`` is a short link answering 302 to a signed file URL valid this long after
    the visit (then 403). Simulator-clock seconds, not ``time_scale``d: it is about clients."""
    short_link_ttl_s: float = 7 * 86400.0
    """The short link itself answers 404 this long after the job completed (not scaled)."""
    capacity: int | None = None
    """Load profile: with this many jobs in progress, each further job's queue wait before
    generation grows by a share of a median generation per job over capacity. None: the
    queue wait never depends on load."""
    queue_shift_at_s: float | None = None
    """Shift workload: jobs created this many simulated seconds after the first job have their
    queue wait multiplied by ``queue_shift_factor`` (the same draws, so runs stay paired).
    None: the queue wait never shifts."""
    queue_shift_factor: float = 1.0
    faults: FaultProfile | FaultPolicy | None = field(default=None, compare=False, hash=False)
    """Upstream misbehaviour: a :class:`FaultProfile` (see
    ``genqueue.simulator.faults.parse``), or a hand-written :class:`FaultPolicy` around every
    API request; None means none."""

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if not 0.0 <= self.failure_share <= 1.0:
            raise ValueError("failure_share must be within [0, 1]")
        if self.shape not in ("sdk", "legacy"):
            raise ValueError("shape must be 'sdk' or 'legacy'")
        if not 0 < self.signed_url_ttl_s <= self.short_link_ttl_s:
            raise ValueError("need 0 < signed_url_ttl_s <= short_link_ttl_s")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError("capacity must be >= 1 or None")
        if self.queue_shift_factor <= 0:
            raise ValueError("queue_shift_factor must be > 0")

    def profile(self, model: str) -> ModelProfile | None:
        """The profile for ``model`` with the global duration overrides applied, or None."""
        base = self.models.get(model)
        if base is None:
            if not self.accept_unknown_models:
                return None
            base = self.unknown_model
        if self.duration_median_s is None and self.duration_sigma is None:
            return base
        return dataclasses.replace(
            base,
            median_s=base.median_s if self.duration_median_s is None else self.duration_median_s,
            sigma=base.sigma if self.duration_sigma is None else self.duration_sigma,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimConfig:
        """Build a config from ``GENQUEUE_SIM_*`` variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        prefix = "GENQUEUE_SIM_"

        def get(name: str) -> str | None:
            value = env.get(prefix + name)
            return value if value not in (None, "") else None

        def flag(value: str) -> bool:
            return value.strip().lower() in ("1", "true", "yes", "on")

        kwargs: dict[str, object] = {}
        converters: dict[str, Callable[[str], object]] = {
            "seed": int,
            "time_scale": float,
            "shape": str,
            "failure_share": float,
            "honour_idempotency": flag,
            "api_key": str,
            "queue_median_s": float,
            "queue_sigma": float,
            "accept_unknown_models": flag,
            "duration_median_s": float,
            "duration_sigma": float,
            "public_url": str,
            "report_queued": flag,
            "signed_url_ttl_s": float,
            "short_link_ttl_s": float,
            "capacity": int,
            "queue_shift_at_s": float,
            "queue_shift_factor": float,
        }
        for name, convert in converters.items():
            raw = get(name.upper())
            if raw is not None:
                kwargs[name] = convert(raw)
        if get("FAULTS") is not None:
            kwargs["faults"] = FaultProfile.from_env(env)
        return cls(**kwargs)  # type: ignore[arg-type]
