"""classify(): one table from every upstream error kind to what the caller must do."""

from __future__ import annotations

import pytest

from genqueue.worker.upstream import (
    Disposition,
    Operation,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
    classify,
)

D = Disposition


def _http(operation: Operation, status: int) -> UpstreamHTTPError:
    return UpstreamHTTPError(operation=operation, status_code=status, message="m")


# (status, disposition on create, disposition on retrieve)
HTTP_TABLE = [
    (400, D.FAIL_REQUEST, D.RETRY),
    (401, D.PAUSE_CREATES, D.PAUSE_CREATES),
    (402, D.PAUSE_CREATES, D.PAUSE_CREATES),
    (403, D.PAUSE_CREATES, D.PAUSE_CREATES),
    (404, D.FAIL_REQUEST, D.NOT_FOUND),
    (405, D.FAIL_REQUEST, D.RETRY),
    (408, D.RETRY_AMBIGUOUS, D.RETRY),
    (409, D.RETRY_AMBIGUOUS, D.RETRY),
    (410, D.FAIL_REQUEST, D.NOT_FOUND),
    (413, D.FAIL_REQUEST, D.RETRY),
    (415, D.FAIL_REQUEST, D.RETRY),
    (422, D.FAIL_REQUEST, D.RETRY),
    (425, D.FAIL_REQUEST, D.RETRY),
    (429, D.RETRY_NOT_CREATED, D.RETRY),
    (451, D.FAIL_REQUEST, D.RETRY),
    (499, D.FAIL_REQUEST, D.RETRY),
    (500, D.RETRY_AMBIGUOUS, D.RETRY),
    (502, D.RETRY_AMBIGUOUS, D.RETRY),
    (503, D.RETRY_AMBIGUOUS, D.RETRY),
    (504, D.RETRY_AMBIGUOUS, D.RETRY),
    (529, D.RETRY_AMBIGUOUS, D.RETRY),
    (599, D.RETRY_AMBIGUOUS, D.RETRY),
    (301, D.RETRY_AMBIGUOUS, D.RETRY),
    (303, D.RETRY_AMBIGUOUS, D.RETRY),
    (304, D.RETRY_AMBIGUOUS, D.RETRY),
]


@pytest.mark.parametrize(("status", "on_create", "on_retrieve"), HTTP_TABLE)
def test_http_status_table(status: int, on_create: D, on_retrieve: D) -> None:
    """Each HTTP status maps to its documented disposition for create and for retrieve."""
    assert classify(_http("create", status)) is on_create
    assert classify(_http("retrieve", status)) is on_retrieve


def test_every_4xx_on_create_fails_only_the_request_unless_listed() -> None:
    """Every 4xx on create except 401/402/403/408/409/429 fails only that request."""
    special = {401: D.PAUSE_CREATES, 402: D.PAUSE_CREATES, 403: D.PAUSE_CREATES}
    special |= {408: D.RETRY_AMBIGUOUS, 409: D.RETRY_AMBIGUOUS, 429: D.RETRY_NOT_CREATED}
    for status in range(400, 500):
        assert classify(_http("create", status)) is special.get(status, D.FAIL_REQUEST), status


def test_every_5xx_on_create_is_ambiguous_and_on_retrieve_is_retried() -> None:
    """Every 5xx may have created the job on create, and is transient on retrieve."""
    for status in range(500, 600):
        assert classify(_http("create", status)) is D.RETRY_AMBIGUOUS, status
        assert classify(_http("retrieve", status)) is D.RETRY, status


# (exception, disposition on create, disposition on retrieve)
def _cases() -> list[tuple[str, UpstreamError, UpstreamError, D, D]]:
    return [
        (
            "timeout before sending (connect/pool)",
            UpstreamTimeout("t", operation="create", request_sent=False),
            UpstreamTimeout("t", operation="retrieve", request_sent=False),
            D.RETRY_NOT_CREATED,
            D.RETRY,
        ),
        (
            "timeout after sending (read/write/total)",
            UpstreamTimeout("t", operation="create", request_sent=True),
            UpstreamTimeout("t", operation="retrieve", request_sent=True),
            D.RETRY_AMBIGUOUS,
            D.RETRY,
        ),
        (
            "connection error before sending (refused, DNS, TLS)",
            UpstreamConnectionError("c", operation="create", request_sent=False),
            UpstreamConnectionError("c", operation="retrieve", request_sent=False),
            D.RETRY_NOT_CREATED,
            D.RETRY,
        ),
        (
            "connection error after sending (disconnect, reset)",
            UpstreamConnectionError("c", operation="create", request_sent=True),
            UpstreamConnectionError("c", operation="retrieve", request_sent=True),
            D.RETRY_AMBIGUOUS,
            D.RETRY,
        ),
        (
            "protocol error on a 2xx",
            UpstreamProtocolError("p", operation="create", status_code=200),
            UpstreamProtocolError("p", operation="retrieve", status_code=200),
            D.RETRY_AMBIGUOUS,
            D.RETRY,
        ),
        (
            "bare UpstreamError (unknown kind)",
            UpstreamError("?", operation="create"),
            UpstreamError("?", operation="retrieve"),
            D.RETRY_AMBIGUOUS,
            D.RETRY,
        ),
    ]


@pytest.mark.parametrize(
    ("create_exc", "retrieve_exc", "on_create", "on_retrieve"),
    [case[1:] for case in _cases()],
    ids=[case[0] for case in _cases()],
)
def test_exception_kind_table(
    create_exc: UpstreamError, retrieve_exc: UpstreamError, on_create: D, on_retrieve: D
) -> None:
    """Each non-HTTP error kind maps to its documented disposition for create and retrieve."""
    assert classify(create_exc) is on_create
    assert classify(retrieve_exc) is on_retrieve


def test_retrieve_never_asks_to_fail_a_request() -> None:
    """No retrieve error fails a request or claims a create outcome: the job may be billed."""
    retrieve_only = {D.RETRY, D.NOT_FOUND, D.PAUSE_CREATES}
    for status in range(100, 600):
        assert classify(_http("retrieve", status)) in retrieve_only
    for _, _, exc, _, _ in _cases():
        assert classify(exc) in retrieve_only


def test_create_never_answers_with_retrieve_dispositions() -> None:
    """No create error answers RETRY or NOT_FOUND, which only make sense for a known job id."""
    for status in range(100, 600):
        assert classify(_http("create", status)) not in {D.RETRY, D.NOT_FOUND}
    for _, exc, _, _, _ in _cases():
        assert classify(exc) not in {D.RETRY, D.NOT_FOUND}
