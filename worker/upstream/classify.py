"""The one function that decides what happens after an upstream error.

A create is about money: when the upstream may have created (and will bill) a job we have no id
for, the answer is RETRY_AMBIGUOUS, and the caller's ambiguous-submit policy decides. Only when
the request certainly did not create anything is it RETRY_NOT_CREATED.
"""

from __future__ import annotations

import enum

from genqueue.worker.upstream.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
)


class Disposition(enum.Enum):
    FAIL_REQUEST = "fail_request"  # create: this request is bad; fail it with the upstream's text
    PAUSE_CREATES = "pause_creates"  # bad key or out of credits: pause creates for everyone
    RETRY_NOT_CREATED = "retry_not_created"  # create: certainly not created; safe to re-send
    RETRY_AMBIGUOUS = "retry_ambiguous"  # create: may exist upstream and be billed
    RETRY = "retry"  # retrieve: transient, check again later
    NOT_FOUND = "not_found"  # retrieve: the upstream does not know this job id


_PAUSE = frozenset({401, 402, 403})  # key rejected (401/403) or out of credits (402)


def _classify_create(exc: UpstreamError) -> Disposition:
    if isinstance(exc, UpstreamHTTPError):
        code = exc.status_code
        if code in _PAUSE:
            return Disposition.PAUSE_CREATES
        if code == 429:  # the rate limiter rejects before anything is created
            return Disposition.RETRY_NOT_CREATED
        if code == 408:  # usually "request not read in time", but a proxy may send it after
            return Disposition.RETRY_AMBIGUOUS  # forwarding: not proven uncreated
        if code == 409:  # a conflict can mean "already created with this Idempotency-Key"
            return Disposition.RETRY_AMBIGUOUS
        if 400 <= code < 500:  # 400/404/413/422/...: this request is bad; re-sending won't help
            return Disposition.FAIL_REQUEST
        # 5xx: the job may have been created before the failure (or a gateway timed out on a
        # backend that went on); 1xx/3xx: an answer we don't understand (303 can mean created).
        return Disposition.RETRY_AMBIGUOUS
    if isinstance(exc, UpstreamTimeout | UpstreamConnectionError):
        # Before the request was written (connect/pool) nothing can exist upstream.
        return Disposition.RETRY_AMBIGUOUS if exc.request_sent else Disposition.RETRY_NOT_CREATED
    if isinstance(exc, UpstreamProtocolError):  # a 2xx we can't read: most likely created
        return Disposition.RETRY_AMBIGUOUS
    return Disposition.RETRY_AMBIGUOUS  # an unknown failure: assume the worst for money


def _classify_retrieve(exc: UpstreamError) -> Disposition:
    if isinstance(exc, UpstreamHTTPError):
        code = exc.status_code
        if code in _PAUSE:  # the key is bad for creates too
            return Disposition.PAUSE_CREATES
        if code in (404, 410):  # 410 Gone: unknown for good, like 404
            return Disposition.NOT_FOUND
        return Disposition.RETRY  # 408/409/429/5xx and any other status: check again later
    return Disposition.RETRY  # timeouts, connection and protocol errors: a GET is safe to repeat


def classify(exc: UpstreamError) -> Disposition:
    """What to do after ``exc``: the same table for every caller (see the module docstring)."""
    if exc.operation == "create":
        return _classify_create(exc)
    return _classify_retrieve(exc)
