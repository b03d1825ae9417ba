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

import redis
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from genqueue.gateway.auth_limit import AuthFailures
from genqueue.gateway.client_address import client_ip, limit_address
from genqueue.gateway.errors import error_response, unavailable
from genqueue.gateway.limits import ADDRESS_SCOPE_KEY, BLOCKED_MESSAGE, CALLER_SCOPE_KEY, too_many
from genqueue.gateway.principals import (
    ANONYMOUS_CALLER,
    ENV_KEY,
    PRINCIPAL_SCOPE_KEY,
    Lookup,
    Principal,
)
from genqueue.producer.addresses import Network

log = structlog.get_logger(__name__)

ENV_API_KEYS = "GENQUEUE_API_KEYS"

#: The only route paths open without a key. Everything else needs one (fail closed): a new
#: route, an unknown path and a path under any mount or root path alike.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/redoc"})
#: The identity of every caller when the gateway runs without keys (development only).
ANONYMOUS = b"anonymous"

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
        return self.identify(presented) is not None

    def identify(self, presented: str | bytes) -> bytes | None:
        """The digest naming ``presented`` if it is one of the keys, else None (constant time)."""
        candidate = _digest(presented)
        found = 0
        for digest in self._digests:
            found |= hmac.compare_digest(candidate, digest)
        return candidate if found else None


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


def route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` without the ``root_path`` a ``Mount`` or
    ``uvicorn --root-path`` put in front of it (Starlette's own rule, ``get_route_path``)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    rest = path[len(root) :]
    return rest if rest.startswith("/") or not rest else path


@dataclass(frozen=True, slots=True)
class AuthMiddleware:
    """ASGI middleware: every request needs a valid bearer key unless its route path (see
    :func:`route_path`) is one of ``public``.

    A key is one of ``keys`` (``GENQUEUE_API_KEYS``: the ``default`` tenant's) or one that
    ``lookup`` finds in Redis (a tenant's or an admin key). Missing or malformed
    ``Authorization`` -> 401 with ``WWW-Authenticate: Bearer``; a key that matches none ->
    403; Redis unreachable while looking a key up -> 503. The caller's key digest is left in
    the scope for the rate limit, its :class:`Principal` for the routes, and its tenant and
    key id are bound to the request's log lines. ``anonymous`` (dev only) lets a request
    without a key through as the ``default`` tenant's (a wrong key is still refused); with
    neither ``keys`` nor ``lookup`` every request is. WebSocket connections are refused: the
    gateway has none.

    With ``failures``, each 401/403 spends one of the client address's failed
    authentications (``gateway/auth_limit.py``); an address out of them gets 429 instead, and
    an address this process knows to be out gets 429 before its key is looked up. The address
    is the peer's, or the client's as ``X-Forwarded-For`` names it when the peer is one of
    ``trusted_proxies`` (``gateway/client_address.py``).
    """

    app: ASGIApp
    keys: ApiKeys | None
    public: frozenset[str] = PUBLIC_PATHS
    lookup: Lookup | None = None
    anonymous: bool = False
    failures: AuthFailures | None = None
    trusted_proxies: tuple[Network, ...] = ()

    async def _identify(self, token: bytes) -> tuple[bytes, Principal] | None:
        digest = None if self.keys is None else self.keys.identify(token)
        if digest is not None:
            return digest, ENV_KEY
        if self.lookup is None:
            return None
        owner = await self.lookup(token)
        return None if owner is None else (_digest(token), Principal.of(owner))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        if route_path(scope) in self.public:
            await self.app(scope, receive, send)
            return
        scope = {**scope, ADDRESS_SCOPE_KEY: limit_address(client_ip(scope, self.trusted_proxies))}
        if self.keys is None and self.lookup is None:  # no keys anywhere: all anonymous
            await self._call(scope, receive, send, ANONYMOUS, ANONYMOUS_CALLER)
            return
        address = scope[ADDRESS_SCOPE_KEY]
        refused_s = 0.0 if self.failures is None else self.failures.refused_for(address)
        if refused_s > 0:
            await too_many(BLOCKED_MESSAGE, refused_s)(scope, receive, send)
            return
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        token = bearer_token(header)
        if token is None and self.anonymous:
            await self._call(scope, receive, send, ANONYMOUS, ANONYMOUS_CALLER)
            return
        try:
            found = None if token is None else await self._identify(token)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            await _unavailable(scope, receive, send, exc, "key_lookup")
            return
        if found is not None:
            await self._call(scope, receive, send, *found)
            return
        if self.failures is not None:
            try:
                refused_s = await self.failures.failed(address)
            except (redis.RedisError, OSError, TimeoutError) as exc:
                await _unavailable(scope, receive, send, exc, "auth_limit")
                return
            if refused_s > 0:
                await too_many(BLOCKED_MESSAGE, refused_s)(scope, receive, send)
                return
        if token is None:
            response = error_response(
                401,
                "an API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": 'Bearer realm="genqueue"'},
            )
        else:
            response = error_response(403, "this API key is not accepted")
        await response(scope, receive, send)

    async def _call(
        self, scope: Scope, receive: Receive, send: Send, caller: bytes, who: Principal
    ) -> None:
        structlog.contextvars.bind_contextvars(
            tenant=who.tenant or "*", key_id=who.key_id, admin=who.admin
        )
        inner = {**scope, CALLER_SCOPE_KEY: caller, PRINCIPAL_SCOPE_KEY: who}
        await self.app(inner, receive, send)


async def _unavailable(
    scope: Scope, receive: Receive, send: Send, exc: BaseException, during: str
) -> None:
    log.warning("redis_unavailable", error=type(exc).__name__, during=during)
    await unavailable()(scope, receive, send)
