"""Django-style views on genqueue's blocking ``Client``: submit (202 + id) and status.

The logic lives in two plain functions, ``submit_generation`` and ``generation_status``, that
take the parsed input and a ``Client`` and return a ``Reply`` (status, JSON body, headers);
they need no Django and are what the tests exercise. The Django views at the bottom are thin
wrappers, defined only when Django is importable (genqueue does not depend on it).

Wiring it into a Django project: copy this file into an app (say ``videos/genqueue_views.py``),
set ``GENQUEUE_REDIS_URL`` / ``GENQUEUE_KEY_PREFIX`` in the web process's environment (the
same as the workers'), and route::

    # urls.py
    from django.urls import path
    from videos import genqueue_views

    urlpatterns = [
        path("videos/", genqueue_views.create_view),
        path("videos/<str:request_id>/", genqueue_views.status_view),
    ]

A client then POSTs the generation as JSON (``{"model": ..., "prompt": ..., "metadata": ...}``,
optionally ``webhook_url`` and ``deadline_s``) with an ``Idempotency-Key`` header, gets 202 and
the id at once, and either polls the status view or waits for the webhook (see
``webhook_receiver.py``). Don't call ``client.wait()`` inside a request: it holds a worker
thread for minutes; the gateway's long-poll is the HTTP way to wait.

``create_view`` is ``csrf_exempt`` because it is meant as an API endpoint for non-browser
clients; put your own authentication in front of it (e.g. DRF or a token check).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from genqueue.producer import Client, InvalidRequest, RequestNotFound

#: Options read from the body beside the generation fields (the rest is the request itself).
OPTIONS = ("webhook_url", "deadline_s")


@dataclass(frozen=True)
class Reply:
    """What a view answers: an HTTP status, a JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _problem(status: int, message: str, fields: Sequence[tuple[str, str]] = ()) -> Reply:
    return Reply(
        status,
        {
            "error": {
                "message": message,
                "fields": [{"field": f, "message": m} for f, m in fields],
            }
        },
    )


# --- the one client per process ------------------------------------------------------------

_client: Client | None = None
_client_lock = threading.Lock()


def get_client() -> Client:
    """The process's one ``Client`` (thread-safe; pooled connections), made on first use from
    the ``GENQUEUE_*`` environment. Made lazily so importing this module (Django's autoreload,
    ``manage.py check``) touches no Redis and reads the settings only when serving."""
    global _client
    with _client_lock:
        if _client is None:
            _client = Client()
        return _client


# --- the logic, without Django --------------------------------------------------------------


def parse_json(raw: bytes) -> Any | Reply:
    """The parsed body, or a 400 ``Reply`` when it is not JSON."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _problem(400, f"the body is not JSON: {exc}")


def submit_generation(
    body: Any,
    client: Client,
    idempotency_key: str | None = None,
    status_path: str = "/videos/{id}/",
) -> Reply:
    """Enqueue the generation in ``body``; 202 with its id (the same id again for a known
    ``idempotency_key``) and ``Location: status_path``, 400 naming each bad field, 503 when
    Redis is unreachable."""
    if not isinstance(body, dict):
        return _problem(400, "invalid request", [("body", "must be a JSON object")])
    request = {k: v for k, v in body.items() if k not in OPTIONS}
    webhook_url = body.get("webhook_url")
    deadline_s = body.get("deadline_s")
    bad: list[tuple[str, str]] = []
    if webhook_url is not None and not isinstance(webhook_url, str):
        bad.append(("webhook_url", "must be a string"))
    if deadline_s is not None and (
        isinstance(deadline_s, bool) or not isinstance(deadline_s, int | float)
    ):
        bad.append(("deadline_s", "must be a number of seconds"))
    if bad:
        return _problem(400, "invalid request", bad)
    try:
        request_id = client.submit(
            request,
            idempotency_key=idempotency_key or None,
            webhook_url=webhook_url,
            deadline_s=deadline_s,
        )
    except InvalidRequest as exc:
        # Nothing was written. The header's name is what the caller knows it by.
        fields = [
            ("Idempotency-Key" if e.field == "idempotency_key" else e.field, e.message)
            for e in exc.errors
        ]
        return _problem(400, "invalid request", fields)
    except redis.RedisError:
        return _problem(503, "the queue is unavailable; retry with the same Idempotency-Key")
    status_url = status_path.format(id=request_id)
    return Reply(202, {"id": request_id, "status_url": status_url}, {"Location": status_url})


def generation_status(request_id: str, client: Client) -> Reply:
    """200 with the request's record (status, video_url, cost_usd, timings), or 404."""
    try:
        view = client.get(request_id)
    except RequestNotFound:
        return _problem(404, f"no generation with id {request_id!r}")
    except redis.RedisError:
        return _problem(503, "the queue is unavailable; retry later")
    return Reply(200, view.to_json_dict())


# --- the Django wrappers (only when Django is installed) ------------------------------------

try:
    from django.http import HttpRequest, JsonResponse
    from django.views.decorators.csrf import csrf_exempt
    from django.views.decorators.http import require_GET, require_POST
except ImportError:  # genqueue does not need Django; the functions above work without it
    DJANGO_AVAILABLE = False
else:
    DJANGO_AVAILABLE = True

    def _respond(reply: Reply) -> JsonResponse:
        response = JsonResponse(reply.body, status=reply.status)
        for name, value in reply.headers.items():
            response[name] = value
        return response

    @csrf_exempt
    @require_POST
    def create_view(request: HttpRequest) -> JsonResponse:
        """POST /videos/: enqueue; 202 ``{"id", "status_url"}``."""
        body = parse_json(request.body)
        if isinstance(body, Reply):
            return _respond(body)
        key = request.headers.get("Idempotency-Key")
        return _respond(submit_generation(body, get_client(), key))

    @require_GET
    def status_view(request: HttpRequest, request_id: str) -> JsonResponse:
        """GET /videos/<id>/: the record."""
        return _respond(generation_status(request_id, get_client()))
