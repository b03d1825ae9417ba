"""A webhook receiver for genqueue: verifies Standard Webhooks signatures, handles each event once.

genqueue POSTs ``{"type": "generation.completed" | ".failed" | ".cancelled" | ".expired",
"timestamp", "data": <the record>}`` to a request's ``webhook_url`` when it ends, signed with
``GENQUEUE_WEBHOOK_SECRET`` (headers ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``). Deliveries are retried until a 2xx, so the same event can arrive more
than once: ``webhook-id`` is stable per request, and this receiver handles each id once.

What it answers:

* 400 when the signature does not verify (forged, tampered, wrong secret), the timestamp is
  more than 5 minutes off (a replayed capture), a header is missing, or the body is not JSON.
  (genqueue retries every non-2xx but 410 for up to a day, so a receiver deployed with the
  wrong secret still gets its events once the secret is fixed.)
* 200 ``{"status": "handled"}`` the first time an id is seen, after ``handle(event)`` returned.
* 200 ``{"status": "duplicate"}`` for an id already handled: acknowledged so genqueue stops
  retrying, but not handled twice.
* 500 when ``handle`` raised: the id is forgotten again, so genqueue's retry is handled.

Run it (Starlette and uvicorn come with genqueue)::

    GENQUEUE_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 9000

and submit with ``webhook_url="http://127.0.0.1:9000/hooks/genqueue"`` (workers need the same
``GENQUEUE_WEBHOOK_SECRET``; a loopback receiver must be opened explicitly on producers and
workers with ``GENQUEUE_OUTBOUND_ALLOW_NETS=127.0.0.0/8``, see docs/security.md, "Outbound calls").
The memory of handled ids here is per process and bounded; with
several receiver processes keep it in a shared store instead, e.g. Redis
``SET hook:{webhook-id} 1 NX EX 604800`` as the claim and ``DEL`` on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger(__name__)

#: Largest body accepted (genqueue's payloads are a few KiB).
MAX_BODY_BYTES = 1 << 20

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[None] | None]


class SeenIds:
    """Which ``webhook-id`` values were handled (or are being handled), newest kept.

    ``claim`` is atomic within one event loop: of two concurrent deliveries of one id, only
    the first gets True.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._max = max_entries

    def claim(self, msg_id: str) -> bool:
        """True if ``msg_id`` is new (it is now remembered), False if seen before."""
        if msg_id in self._ids:
            return False
        self._ids[msg_id] = None
        if len(self._ids) > self._max:
            self._ids.popitem(last=False)
        return True

    def release(self, msg_id: str) -> None:
        """Forget ``msg_id`` (its handling failed), so a retry is handled."""
        self._ids.pop(msg_id, None)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(secret: str, handle: Handler, seen: SeenIds | None = None) -> Starlette:
    """A Starlette app receiving genqueue webhooks at ``POST /hooks/genqueue``.

    ``handle(event)`` (sync or async) is called once per ``webhook-id`` with the verified,
    parsed event.
    """
    webhook = Webhook(secret)
    memory = seen if seen is not None else SeenIds()

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "body too large")
        headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
        try:
            # Verify the exact bytes received: re-serialised JSON would not match.
            event = webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError covers a body that is not UTF-8 / not JSON and a malformed signature
            # header; none of them is worth handling.
            return _error(400, f"webhook rejected: {exc or type(exc).__name__}")
        msg_id = headers["webhook-id"]
        if not memory.claim(msg_id):
            return JSONResponse({"status": "duplicate", "webhook_id": msg_id})
        try:
            result = handle(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            memory.release(msg_id)
            log.exception("webhook handler failed", extra={"webhook_id": msg_id})
            return _error(500, "handler failed; retry later")  # genqueue retries with backoff
        return JSONResponse({"status": "handled", "webhook_id": msg_id})

    return Starlette(routes=[Route("/hooks/genqueue", receive, methods=["POST"])])


async def print_event(event: Event) -> None:
    """The example handler: one line per finished generation. Put your own logic here
    (mark the order done, e-mail the user, fetch ``data.video_url`` before it expires)."""
    data = event.get("data", {})
    line = {
        "type": event.get("type"),
        "id": data.get("id"),
        "status": data.get("status"),
        "video_url": data.get("video_url"),
        "cost_usd": data.get("cost_usd"),
        "metadata": data.get("metadata"),
    }
    await asyncio.to_thread(print, json.dumps(line), flush=True)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    secret = os.environ.get("GENQUEUE_WEBHOOK_SECRET")
    if not secret:
        parser.error("set GENQUEUE_WEBHOOK_SECRET (the workers' whsec_... signing secret)")
    uvicorn.run(create_app(secret, print_event), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
