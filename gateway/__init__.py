"""genqueue's HTTP gateway: the producer API over HTTP, for backends in any language.

It imports the producer, never the worker.
"""

from gateway.app import create_app
from gateway.auth import GatewayConfigError
from gateway.server import serve

__all__ = ["GatewayConfigError", "create_app", "serve"]
