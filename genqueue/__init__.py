"""genqueue: a durable job queue for slow, paid AI generations (see README.md).

The public API for a backend is re-exported here: ``from genqueue import AsyncClient``.
The parts live in ``genqueue.producer`` (what a backend imports), ``genqueue.worker`` (arq
workers), ``genqueue.gateway`` (HTTP for other languages) and ``genqueue.simulator`` (a
faithful fake of the upstream).
"""

from genqueue.producer import (
    AsyncClient,
    CancelOutcome,
    Client,
    FieldError,
    GenerationRequest,
    GenqueueError,
    InvalidRequest,
    RequestNotFound,
    RequestView,
    Settings,
    Stats,
    WaitTimeout,
    WriteNotDurable,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "CancelOutcome",
    "Client",
    "FieldError",
    "GenerationRequest",
    "GenqueueError",
    "InvalidRequest",
    "RequestNotFound",
    "RequestView",
    "Settings",
    "Stats",
    "WaitTimeout",
    "WriteNotDurable",
    "__version__",
]
