"""Client for the upstream (Together AI) asynchronous video API: create and retrieve jobs.

``UpstreamClient`` raises only ``UpstreamError`` subclasses for what happens on the wire;
``classify`` is the single place that decides what an error means for the caller.
"""

from genqueue.worker.upstream.classify import Disposition, classify
from genqueue.worker.upstream.client import USER_AGENT, CallRecord, UpstreamClient, UpstreamTimeouts
from genqueue.worker.upstream.errors import (
    Operation,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
    parse_retry_after,
)
from genqueue.worker.upstream.jobs import (
    STATUSES,
    TERMINAL_STATUSES,
    UpstreamJob,
    cost_to_micro_usd,
    normalize_status,
    parse_job,
)
from genqueue.worker.upstream.transport import TransportKind, make_transport

__all__ = [
    "STATUSES",
    "TERMINAL_STATUSES",
    "USER_AGENT",
    "CallRecord",
    "Disposition",
    "Operation",
    "TransportKind",
    "UpstreamClient",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamJob",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamTimeouts",
    "classify",
    "cost_to_micro_usd",
    "make_transport",
    "normalize_status",
    "parse_job",
    "parse_retry_after",
]
