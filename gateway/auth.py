"""Bearer API keys: where they come from and how a presented key is checked.

Keys are compared in constant time: the presented key and every configured key are hashed to
equal-length digests and *all* of them are compared with ``hmac.compare_digest``, so neither
the time taken nor an early exit tells which key (or how much of one) matched. Keys and the
``Authorization`` header are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from genqueue.gateway.errors import error_response

ENV_API_KEYS = "GENQUEUE_API_KEYS"

#: Paths that need a key; everything else (health, readiness, the OpenAPI document) is open.
PROTECTED_PREFIX = "/v1/"

Verdict = Literal["ok", "missing", "invalid"]


class GatewayConfigError(ValueError):
    """The gateway cannot start as configured (e.g. no API keys, anonymous access not allowed)."""


def parse_api_keys(raw: str) -> list[str]:
    """Comma-separated keys; blanks dropped. Raises when a key contains whitespace."""
    keys = [k.strip() for k in raw.split(",")]
    keys = [k for k in keys if k]
    for k in keys:
        if any(c.isspace() for c in k) or not k.isprintable():
            raise GatewayConfigError(f"{ENV_API_KEYS}: keys must be printable, without spaces")
    return keys


def api_keys_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """The keys named by ``GENQUEUE_API_KEYS`` (comma-separated)."""
    source = os.environ if env is None else env
    return parse_api_keys(source.get(ENV_API_KEYS, ""))


def _digest(key: str | bytes) -> bytes:
    data = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    return hashlib.sha256(data).digest()


class ApiKeys:
    """A set of accepted keys, checked in constant time."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._digests = tuple(_digest(k) for k in keys)

    def __len__(self) -> int:
        return len(self._digests)

    def matches(self, presented: str | bytes) -> bool:
        """True if ``presented`` is one of the keys; compares against every key, no short cut."""
        candidate = _digest(presented)
        found = 0
        for digest in self._digests:
            found |= hmac.compare_digest(candidate, digest)
        return bool(found)


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None if absent/malformed."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token or b" " in token:
        return None
    return token


def check(keys: ApiKeys, authorization: bytes | None) -> Verdict:
    """Judge one request's ``Authorization`` header."""
    token = bearer_token(authorization)
    if token is None:
        return "missing"
    return "ok" if keys.matches(token) else "invalid"


@dataclass(frozen=True, slots=True)
class AuthMiddleware:
    """ASGI middleware: requests under ``/v1/`` need a valid bearer key.

    Missing or malformed ``Authorization`` -> 401 with ``WWW-Authenticate: Bearer``; a key
    that matches none -> 403. ``keys=None`` lets everything through (anonymous, dev only).
    """

    app: ASGIApp
    keys: ApiKeys | None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.keys is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if not (path.startswith(PROTECTED_PREFIX) or path == PROTECTED_PREFIX.rstrip("/")):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        verdict = check(self.keys, header)
        if verdict == "ok":
            await self.app(scope, receive, send)
            return
        if verdict == "missing":
            response = error_response(
                401,
                "an API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": 'Bearer realm="genqueue"'},
            )
        else:
            response = error_response(403, "this API key is not accepted")
        await response(scope, receive, send)
