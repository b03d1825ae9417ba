"""The production HTTP transport: a measured choice (bench/floor.py measures both; the
figures are in bench/RESULTS.md).

httpx's default transport costs several times the CPU of a whole arq job per call; the
``httpx-aiohttp`` transport (aiohttp underneath, httpx API on top) costs a fraction of it, so
it is the default. ``UpstreamClient`` uses its aiohttp session directly
(``DirectAiohttpTransport.session``) with the same options, skipping the httpx objects around
each call; bodies in a content coding are still decoded by httpx, as here.
Tests keep using ``httpx.MockTransport``/``ASGITransport`` through the same httpx API, and
``tests/upstream/test_client.py`` runs its real-server cases on both transports.

What httpx-aiohttp 0.2 does, read from its source (``httpx_aiohttp/transport.py``):
- httpx's per-request timeouts arrive as ``request.extensions["timeout"]`` and become
  ``aiohttp.ClientTimeout(sock_connect=connect, sock_read=read, connect=pool)``: ``write`` is
  ignored (aiohttp has none), and aiohttp's ``connect`` bounds pool wait *plus* connecting, so
  the connect phase lasts at most min(connect, pool).
- ``httpx.Limits.max_connections`` becomes ``TCPConnector(limit=...)``; ``keepalive_expiry``
  becomes ``keepalive_timeout``; ``max_keepalive_connections`` is ignored.
- Its ``retries`` argument is stored and never used, but aiohttp's ``ClientSession`` itself
  re-sends an idempotent request (GET, not POST) once when a reused keep-alive connection drops.
  genqueue owns every retry, so the session built here turns that off.
- Its exception map turns every ``aiohttp.ClientConnectionError`` that has no closer entry into
  ``httpx.ConnectTimeout`` (a refused port, and a server disconnecting *after* reading the
  request, alike). The client therefore decides from the original aiohttp exception, kept as
  ``__cause__`` (see ``client._translate``).
- Its ``ClientSession`` is created lazily on the first request, on that event loop, with its own
  cookie jar (httpx already keeps cookies: disabled here). Proxy variables from the environment
  are not used (the client sets ``trust_env=False`` too, or httpx would route proxied URLs through
  its own default transport and bypass this one); ``SSL_CERT_FILE``/``SSL_CERT_DIR`` still are.
"""

from __future__ import annotations

from typing import Literal

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

TransportKind = Literal["aiohttp", "httpx"]

KEEPALIVE_EXPIRY_S = 5.0
"""Idle pooled connections are closed after this long (below typical server idle timeouts)."""


def _aiohttp_session_factory(
    limits: httpx.Limits, transport: AiohttpTransport
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=limits.max_connections or 0,
        keepalive_timeout=limits.keepalive_expiry,
        ssl=transport.ssl_context,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )
    # No automatic re-send of GETs on a dropped keep-alive connection: one call, one request.
    session._retry_connection = False
    return session


class DirectAiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport, whose aiohttp session ``UpstreamClient`` may also use
    directly (``session``): its own calls then skip the httpx request and response objects
    built around every aiohttp exchange, a tenth of a worker's CPU per status check in the
    comparison (bench/RESULTS.md). Through ``handle_async_request`` it is httpx-aiohttp's."""

    def session(self) -> aiohttp.ClientSession:
        """The pooled session (created on first use, on the running event loop, as
        ``handle_async_request`` does)."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client


def make_transport(
    kind: TransportKind = "aiohttp", *, max_connections: int = 100
) -> httpx.AsyncBaseTransport:
    """A pooled transport without automatic retries; ``max_connections`` caps open connections.

    Give it to one ``httpx.AsyncClient`` (which then owns and closes it), created on the event
    loop that will use it.
    """
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    if kind == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits, retries=0)
    if kind == "aiohttp":
        transport = DirectAiohttpTransport(limits=limits)
        transport.client = lambda: _aiohttp_session_factory(limits, transport)
        return transport
    raise ValueError(f"unknown transport kind: {kind!r}")
