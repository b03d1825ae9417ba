"""The exceptions a producer sees: one tree under :class:`GenqueueError`."""

from __future__ import annotations

from dataclasses import dataclass


class GenqueueError(Exception):
    """Base of every error genqueue raises to its callers."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: a dotted path and what is wrong with it."""

    field: str
    message: str


class InvalidRequest(GenqueueError, ValueError):
    """The request was refused before anything was written; ``errors`` names each bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        super().__init__(f"invalid request: {detail}")


class RequestNotFound(GenqueueError, KeyError):
    """No record has this id (never existed, or expired after its retention)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(request_id)

    def __str__(self) -> str:
        return f"no request with id {self.request_id!r}"


class WaitTimeout(GenqueueError, TimeoutError):
    """``wait()`` gave up before the request reached a terminal status."""

    def __init__(self, request_id: str, timeout_s: float, status: str) -> None:
        self.request_id = request_id
        self.status = status
        super().__init__(f"request {request_id} still {status} after {timeout_s:g} s")


class WriteNotDurable(GenqueueError):
    """The request was created on the primary, but no replica acknowledged it within
    ``durable_create_timeout_s``: a failover now could lose it. Submitting again with the same
    idempotency key is safe (it returns this id if the record survived)."""

    def __init__(self, request_id: str, wait: str) -> None:
        self.request_id = request_id
        self.wait = wait
        super().__init__(f"request {request_id} created but not acknowledged by {wait}")
