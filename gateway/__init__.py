"""genqueue's HTTP gateway: the producer API over HTTP, for backends in any language.

It imports the producer, never the worker.
"""

from genqueue.gateway.app import create_app
from genqueue.gateway.auth import GatewayConfigError
from genqueue.gateway.server import serve

__all__ = ["GatewayConfigError", "create_app", "serve"]
