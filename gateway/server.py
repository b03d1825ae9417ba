"""``serve()``: run the gateway under uvicorn (the ``genqueue gateway`` command calls this)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import uvicorn

from genqueue.gateway.app import create_app
from genqueue.gateway.settings import GatewaySettings
from genqueue.producer import Settings

#: Seconds in-flight requests (e.g. long-polls) get to finish after SIGTERM.
GRACEFUL_SHUTDOWN_S = 10


def serve(
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_keys: Sequence[str] | None = None,
    *,
    allow_anonymous: bool = False,
    root_path: str = "",
    limits: GatewaySettings | None = None,
) -> None:
    """Serve the gateway until SIGINT/SIGTERM.

    ``api_keys`` None reads ``GENQUEUE_API_KEYS``; with no key at all this raises
    ``GatewayConfigError`` before binding, unless ``allow_anonymous`` (development only).
    Logging is the caller's to configure (e.g. ``genqueue.logs.configure_logging``);
    uvicorn's own access log is off, the gateway logs one line per request itself, and
    uvicorn's lines go through the caller's logging (so through genqueue's secret scrubber)
    instead of uvicorn's own handlers. ``root_path``: the prefix a proxy strips in front of
    the gateway (``Location`` headers and the OpenAPI document name it). ``limits`` None
    reads ``GENQUEUE_GATEWAY_*``. uvicorn's own ``X-Forwarded-For`` handling is off: the
    client's address comes from ``GENQUEUE_GATEWAY_TRUSTED_PROXIES`` only.
    """
    logging.getLogger("uvicorn").setLevel(logging.INFO)
    app = create_app(settings, api_keys, allow_anonymous=allow_anonymous, limits=limits)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_config=None,
        root_path=root_path,
        # uvicorn would otherwise take X-Forwarded-For from loopback peers as the client:
        # the gateway reads it only from GENQUEUE_GATEWAY_TRUSTED_PROXIES
        # (gateway/client_address.py).
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    uvicorn.Server(config).run()
