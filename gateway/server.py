"""``serve()``: run the gateway under uvicorn (the ``genqueue gateway`` command calls this)."""

from __future__ import annotations

from collections.abc import Sequence

import uvicorn

from genqueue.gateway.app import create_app
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
) -> None:
    """Serve the gateway until SIGINT/SIGTERM.

    ``api_keys`` None reads ``GENQUEUE_API_KEYS``; with no key at all this raises
    ``GatewayConfigError`` before binding, unless ``allow_anonymous`` (development only).
    Logging is the caller's to configure (e.g. ``genqueue.logs.configure_logging``);
    uvicorn's own access log is off, the gateway logs one line per request itself.
    """
    app = create_app(settings, api_keys, allow_anonymous=allow_anonymous)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    uvicorn.Server(config).run()
