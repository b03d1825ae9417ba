"""genqueue's producer side: what a backend imports to enqueue generations and hear back."""

from producer.client import AsyncClient, CancelOutcome
from producer.errors import FieldError, GenqueueError, InvalidRequest, RequestNotFound, WaitTimeout
from producer.models import GenerationRequest
from producer.record import RequestView
from producer.settings import Settings
from producer.stats import Stats
from producer.sync_client import Client

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
]
