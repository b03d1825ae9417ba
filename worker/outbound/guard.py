"""A transport that lets a request reach only addresses the outbound rules allow.

Every request is checked where it is sent: scheme and userinfo, then the host's addresses
(one lookup through the injectable :class:`Resolver`), each against
:func:`genqueue.producer.addresses.refusal`. The request is then sent to the first checked
address itself (URL host replaced by the IP, ``Host`` header and TLS SNI/verification kept
on the name), so no second lookup can swap it (DNS rebinding). Works over any inner
httpx transport that honours the ``sni_hostname`` extension: httpx's own (httpcore) and
``httpx-aiohttp`` (which passes it to aiohttp as ``server_hostname``).
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from genqueue.producer.addresses import (
    Network,
    host_literal,
    is_local_name,
    refusal,
)
from genqueue.worker.outbound.resolver import Resolver

Origin = tuple[str, str, int]


class Refused(Exception):
    """An outbound call the rules forbid; ``str()`` is the reason (no credentials, no query)."""


def origin_of(url: httpx.URL | str) -> Origin:
    """(scheme, host, port) with the scheme's default port filled in."""
    u = httpx.URL(url) if isinstance(url, str) else url
    port = u.port or (443 if u.scheme == "https" else 80)
    return (u.scheme, u.host.lower().rstrip("."), port)


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks, pins and forwards each request to ``inner``; raises :class:`Refused`.

    ``trusted``: origins the operator configured (the upstream) that bypass the address
    rules and are resolved normally.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        resolver: Resolver,
        allow: Iterable[Network] = (),
        trusted: Iterable[Origin] = (),
    ) -> None:
        self.inner = inner
        self.resolver = resolver
        self.allow = tuple(allow)
        self.trusted = frozenset(trusted)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if origin_of(url) in self.trusted:
            return await self.inner.handle_async_request(request)
        if url.scheme not in ("http", "https"):
            raise Refused(f"scheme {url.scheme!r} is not allowed")
        if url.userinfo:
            raise Refused("URLs with credentials (user:password@) are not allowed")
        host = url.raw_host.decode("ascii")  # IDNA-encoded: what DNS and TLS SNI expect
        if is_local_name(host):
            raise Refused(f"{host} names this machine")
        literal = host_literal(host)
        port = url.port or (443 if url.scheme == "https" else 80)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = await self.resolver.resolve(host, port)
            except OSError as exc:
                # A name that does not resolve may resolve later: a transport error, retried.
                raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
        for ip in addresses:  # any internal answer refuses the name (no "try the next one")
            why = refusal(ip, self.allow)
            if why:
                raise Refused(f"{host} resolves to a refused address: {why}")
        if url.scheme == "http" and not all(
            any(ip.version == n.version and ip in n for n in self.allow) for ip in addresses
        ):
            raise Refused("http is allowed only to networks in GENQUEUE_OUTBOUND_ALLOW_NETS")
        pinned = addresses[0]
        request.url = url.copy_with(host=str(pinned))
        # The Host header httpx wrote from the original URL stays; TLS checks the name.
        # Pools key connections by address, not name: never reuse one verified for another
        # name that shares the IP (both transports honour a request's "Connection: close").
        request.headers["connection"] = "close"
        if literal is None and url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
