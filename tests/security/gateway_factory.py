"""``uvicorn --factory tests.security.gateway_factory:app`` : the gateway as ``genqueue
gateway`` builds it (logging configured, settings and keys from the environment)."""

from __future__ import annotations

from fastapi import FastAPI

from genqueue.gateway import create_app
from genqueue.logs import configure_logging


def app() -> FastAPI:
    """The gateway app with genqueue's JSON logging on stderr."""
    configure_logging(fmt="json")
    return create_app()
