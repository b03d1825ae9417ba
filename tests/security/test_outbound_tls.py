"""https webhooks are sent to the checked address with TLS SNI and verification on the name."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
import trustme
from httpx_aiohttp import AiohttpTransport

from genqueue.producer.addresses import parse_nets
from genqueue.worker.outbound.guard import GuardedTransport
from genqueue.worker.outbound.post import post_status
from genqueue.worker.outbound.resolver import StaticResolver


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_listener(ca: trustme.CA) -> AsyncIterator[tuple[int, list[str]]]:
    """A TLS receiver on 127.0.0.1 whose certificate names only ``hooks.test``; records the
    SNI name each handshake asked for."""
    names: list[str] = []
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(ctx)
    ctx.sni_callback = lambda sock, name, _ctx: names.append(str(name)) and None  # type: ignore[assignment,func-returns-value]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    yield server.sockets[0].getsockname()[1], names
    server.close()


def _inner(kind: str, ca: trustme.CA) -> httpx.AsyncBaseTransport:
    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    if kind == "httpx":
        return httpx.AsyncHTTPTransport(verify=verify)
    return AiohttpTransport(verify=verify)


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_tls_is_verified_against_the_name_at_the_pinned_address(
    kind: str, ca: trustme.CA, tls_listener: tuple[int, list[str]]
) -> None:
    """The connection goes to the resolved IP, yet the handshake asks for and verifies the
    URL's name; a certificate for another name is refused."""
    port, names = tls_listener
    resolver = StaticResolver({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    transport = GuardedTransport(
        _inner(kind, ca), resolver=resolver, allow=parse_nets("127.0.0.0/8")
    )
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        status = await post_status(client, f"https://hooks.test:{port}/h", b"{}", {}, total_s=5)
        assert status == 204 and names == ["hooks.test"]
        with pytest.raises(httpx.TransportError):  # the certificate does not name other.test
            await post_status(client, f"https://other.test:{port}/h", b"{}", {}, total_s=5)
    assert resolver.calls == ["hooks.test", "other.test"]
