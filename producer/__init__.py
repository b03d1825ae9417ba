"""genqueue's producer side: what a backend imports to enqueue generations and hear back."""

from genqueue.producer.admission import QueueFull
from genqueue.producer.client import AsyncClient, CancelOutcome
from genqueue.producer.errors import (
    FieldError,
    GenqueueError,
    InvalidRequest,
    RequestNotFound,
    WaitTimeout,
    WriteNotDurable,
)
from genqueue.producer.models import GenerationRequest
from genqueue.producer.record import RequestView
from genqueue.producer.settings import Settings
from genqueue.producer.stats import Stats
from genqueue.producer.sync_client import Client

__all__ = [
    "AsyncClient",
    "CancelOutcome",
    "Client",
    "FieldError",
    "GenerationRequest",
    "GenqueueError",
    "InvalidRequest",
    "QueueFull",
    "RequestNotFound",
    "RequestView",
    "Settings",
    "Stats",
    "WaitTimeout",
    "WriteNotDurable",
]
