"""Settings shared by producers and workers, read once from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from genqueue.producer import envconfig
from genqueue.producer.addresses import Network, parse_nets
from genqueue.producer.envconfig import ENV_PREFIX
from genqueue.producer.keys import Keys

__all__ = ["ENV_PREFIX", "Settings", "overrides_from_env", "redact_url"]


#: Query-string parameters that carry a credential (redis-py reads ``?password=``).
_SECRET_QUERY = re.compile(r"([?&;](?:password|passwd|pass|pwd|secret|token|auth)=)[^&;#]*", re.I)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, in the userinfo and in the query string
    (``redis://h/0?password=...``, which redis-py accepts): safe to log. Handles the
    ``redis+sentinel://user:pw@h1:26379,h2:26379/SERVICE/DB`` form too."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unparseable (e.g. a bad port): keep nothing that might be a secret
        return "(unparseable URL)"
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = _SECRET_QUERY.sub(r"\1***", "?" + parts.query)[1:] if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _convert(raw: str, current: Any, name: str) -> Any:
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: cannot parse {raw!r}") from None
    return raw


def overrides_from_env(defaults: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """``GENQUEUE_<FIELD>`` values for a flat settings dataclass's fields, typed like its
    defaults. ``Settings`` and ``WorkerConfig`` use ``genqueue.producer.envconfig`` (groups,
    renamed variables); this stays for flat dataclasses elsewhere."""
    out: dict[str, Any] = {}
    for f in fields(defaults):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None and raw != "":
            out[f.name] = _convert(raw, getattr(defaults, f.name), f.name)
    return out


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the queue lives and how long things are kept (units in the names)."""

    #: ``redis://`` / ``rediss://`` for one server, or
    #: ``redis+sentinel://[user:password@]h1:26379,h2:26379/SERVICE/DB`` for a Sentinel-managed
    #: primary (``rediss+sentinel://`` for TLS). May hold a password (userinfo or
    #: ``?password=``): kept out of ``repr``; log ``redis_url_redacted``.
    redis_url: str = field(default="redis://localhost:6379/0", repr=False)
    #: Prefix of every key (deployments can share a Redis).
    key_prefix: str = "genqueue"
    #: How long a finished record (and its idempotency key) is kept.
    retention_s: float = 7 * 86400.0
    #: How long a request never created upstream (cancelled while pending, expired or refused
    #: before any create) and its spec are kept: nothing was billed, so only long enough to
    #: list and retry it the next day.
    unsubmitted_retention_s: float = 2 * 86400.0
    #: Largest request stored, in bytes of UTF-8 JSON (body, metadata, webhook URL): room for
    #: Together's 32,000-character prompt in any script, not for filling Redis.
    max_request_bytes: int = 192 * 1024
    #: Most model names counted under their own name in the totals and metric labels (models
    #: the upstream accepted); any other model is counted as ``other``.
    max_models: int = 256
    #: Deadline of a request when the producer gives none.
    default_deadline_s: float = 3600.0
    #: Largest deadline accepted.
    max_deadline_s: float = 7 * 86400.0
    #: After a cancel or deadline, how long a billed upstream job is still tracked for its cost.
    tracking_limit_s: float = 6 * 3600.0
    #: Approximate cap on the event stream's length.
    events_maxlen: int = 100_000
    #: Backstop re-read of a waited-for record if a pub/sub message is missed.
    wait_recheck_s: float = 5.0
    #: Networks (comma-separated CIDRs) webhooks and download redirects may reach although
    #: they are internal (loopback, private, ...), and the only ones reachable over plain
    #: ``http``. Empty: none. Each entry opens those addresses to every request's webhook
    #: URL (SSRF): name only networks whose receivers expect genqueue (docs/security.md).
    outbound_allow_nets: str = ""
    #: After a request's creation, wait for a replica (``WAIT 1``) when the deployment has
    #: replicas: "auto" (a Sentinel URL, or replicas attached) or "off".
    durable_creates: str = "auto"
    #: How long a create waits for its replica before ``WriteNotDurable`` is raised.
    durable_create_timeout_s: float = 1.0
    #: How often the replication setup (replicas, WAITAOF) is looked at again; also
    #: re-detected at once after a connection error or an unacknowledged wait.
    durable_recheck_s: float = 10.0

    def __post_init__(self) -> None:
        for name in (
            "retention_s",
            "unsubmitted_retention_s",
            "default_deadline_s",
            "max_deadline_s",
            "tracking_limit_s",
            "max_request_bytes",
            "max_models",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.durable_creates not in ("auto", "off"):
            raise ValueError("durable_creates must be 'auto' or 'off'")
        if self.durable_create_timeout_s <= 0 or self.durable_recheck_s <= 0:
            raise ValueError("durable_create_timeout_s and durable_recheck_s must be positive")
        if self.default_deadline_s > self.max_deadline_s:
            raise ValueError("default_deadline_s must not exceed max_deadline_s")
        parse_nets(self.outbound_allow_nets)  # raises on a bad CIDR, at start-up
        if not self.key_prefix or any(c in self.key_prefix for c in " *?[]"):
            raise ValueError(
                f"key_prefix {self.key_prefix!r} must be non-empty, no spaces or globs"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``GENQUEUE_*`` variables (e.g. ``GENQUEUE_REDIS_URL``)."""
        return envconfig.from_env(cls, os.environ if env is None else env)

    @property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    @property
    def allow_nets(self) -> tuple[Network, ...]:
        """``outbound_allow_nets`` parsed."""
        return parse_nets(self.outbound_allow_nets)

    @property
    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url)
