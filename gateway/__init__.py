"""genqueue's HTTP gateway: the producer API over HTTP, for backends in any language.

It imports the producer, never the worker. The app is imported on first use, so reading the
gateway's settings (``genqueue --help`` does) does not load FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genqueue.gateway.app import create_app
    from genqueue.gateway.auth import GatewayConfigError
    from genqueue.gateway.server import serve

__all__ = ["GatewayConfigError", "create_app", "serve"]

_HOMES = {
    "create_app": "genqueue.gateway.app",
    "GatewayConfigError": "genqueue.gateway.auth",
    "serve": "genqueue.gateway.server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
