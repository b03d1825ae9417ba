"""Webhooks and download redirects cannot reach internal addresses, in any spelling.

Every case runs against a real listener on 127.0.0.1 and must leave it untouched: the call
is refused before any connection, over both transports (httpx's own and httpx-aiohttp).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from asgi_lifespan import LifespanManager

from genqueue.gateway import create_app
from genqueue.producer.addresses import host_literal, parse_nets, refusal, url_refusal
from genqueue.producer.client import AsyncClient
from genqueue.producer.errors import InvalidRequest
from genqueue.producer.keys import Field
from genqueue.producer.models import validate_options
from genqueue.producer.settings import Settings
from genqueue.worker.outbound.fetch import fetch_to
from genqueue.worker.outbound.guard import GuardedTransport, Refused, origin_of
from genqueue.worker.outbound.post import post_status
from genqueue.worker.outbound.resolver import StaticResolver
from genqueue.worker.targets import FileTarget
from genqueue.worker.upstream import make_transport
from tests.conftest import StartWorker
from tests.security.listener import Listener
from tests.test_side_effects import REQ, SECRET, rec, until_webhook

PUBLIC = "93.184.215.14"  # a global unicast address; nothing in these tests connects to it
RESOLVER_ANSWERS = {
    "internal.test": ["127.0.0.1"],
    "rebind.test": [PUBLIC, "127.0.0.1"],  # a public answer first, loopback second
    "public.test": [PUBLIC],
}
#: Hosts (as spelled in a URL) that must be refused; ``P`` is the listener's port.
INTERNAL_HOSTS = [
    "127.0.0.1", "127.1", "0x7f000001", "2130706433", "0177.0.0.1", "localhost",
    "LOCALHOST", "localhost.", "app.localhost", "0.0.0.0", "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]", "[::1]", "[::]", "[fe80::1]", "[fc00::1]", "[::127.0.0.1]",
    "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "169.254.169.254", "100.64.0.1", "10.0.0.1",
    "172.16.0.1", "192.168.1.1", "224.0.0.1", "240.0.0.1", "255.255.255.255",
    "internal.test", "rebind.test",
]  # fmt: skip
#: Of those, the ones a producer refuses at submit already (no lookup needed).
NAMES_NEEDING_LOOKUP = {"internal.test", "rebind.test"}
TRANSPORTS = ["httpx", "aiohttp"]


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    server = await Listener().start()
    yield server
    await server.stop()


def guarded_client(kind: str, allow: str = "", trusted: str | None = None) -> httpx.AsyncClient:
    transport = GuardedTransport(
        make_transport(kind),  # type: ignore[arg-type]
        resolver=StaticResolver(RESOLVER_ANSWERS),
        allow=parse_nets(allow),
        trusted=[origin_of(trusted)] if trusted else [],
    )
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)


@pytest.mark.parametrize("kind", TRANSPORTS)
@pytest.mark.parametrize("host", INTERNAL_HOSTS)
async def test_webhook_to_an_internal_address_is_refused_unconnected(
    kind: str, host: str, listener: Listener
) -> None:
    """A webhook POST to an internal address (any spelling, or a name resolving to one
    even second) is refused and no connection reaches the listener."""
    for scheme in ("http", "https"):
        url = f"{scheme}://{host}:{listener.port}/hook"
        async with guarded_client(kind) as client:
            with pytest.raises((Refused, httpx.InvalidURL)):
                await post_status(client, url, b"{}", {}, total_s=5)
    assert listener.connections == 0


@pytest.mark.parametrize("host", sorted(set(INTERNAL_HOSTS) - NAMES_NEEDING_LOOKUP))
def test_internal_literal_is_refused_at_submit(host: str) -> None:
    """A producer refuses a webhook URL whose host is an internal literal or a local name,
    with InvalidRequest naming webhook_url (the gateway's 422)."""
    with pytest.raises(InvalidRequest) as err:
        validate_options(
            idempotency_key=None,
            webhook_url=f"https://{host}:8080/hook",
            deadline_s=None,
            max_deadline_s=60,
        )
    assert [e.field for e in err.value.errors] == ["webhook_url"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/x", "http(s)"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://user@hooks.example.com/x", "credentials"),
        (f"http://{PUBLIC}/x", "http is allowed only"),
        ("https://", "http(s)"),
    ],
)
def test_bad_webhook_urls_are_refused_at_submit(url: str, why: str) -> None:
    """Bad schemes, credentials and plain http to a literal outside the allowed networks
    are refused at submit with a reason."""
    assert why in (url_refusal(url) or "")


def test_public_https_names_pass_submit() -> None:
    """A public https URL (or a name, checked at delivery) is accepted at submit."""
    assert url_refusal("https://hooks.example.com/x?token=1") is None
    assert url_refusal(f"https://{PUBLIC}:8443/x") is None
    assert url_refusal("http://127.0.0.1:9000/x", parse_nets("127.0.0.0/8")) is None


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_userinfo_is_refused_unconnected(kind: str, listener: Listener) -> None:
    """Credentials in a webhook URL are never sent (no Basic auth leaves the worker)."""
    async with guarded_client(kind, allow="127.0.0.0/8") as client:
        with pytest.raises(Refused, match="credentials"):
            await post_status(client, f"http://u:p@127.0.0.1:{listener.port}/", b"", {}, total_s=5)
    assert listener.connections == 0


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_allowed_networks_open_loopback(kind: str, listener: Listener) -> None:
    """GENQUEUE_OUTBOUND_ALLOW_NETS naming loopback lets a webhook reach the listener, by
    name too: the name is resolved once and the checked address is the one connected to,
    with the name kept in the Host header."""
    resolver = StaticResolver(RESOLVER_ANSWERS)
    transport = GuardedTransport(
        make_transport(kind),  # type: ignore[arg-type]
        resolver=resolver,
        allow=parse_nets("127.0.0.0/8"),
    )
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        url = f"http://internal.test:{listener.port}/hook"
        assert await post_status(client, url, b"{}", {}, total_s=5) == 200
    assert listener.connections == 1 and resolver.calls == ["internal.test"]
    assert listener.host_header() == f"internal.test:{listener.port}"
    assert b"\r\nconnection: close\r\n" in listener.heads[0].lower()  # no reuse across names


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_http_to_a_public_address_is_refused(kind: str, listener: Listener) -> None:
    """Plain http reaches only allowed networks: a public name over http is refused."""
    async with guarded_client(kind) as client:
        with pytest.raises(Refused, match="http is allowed only"):
            await post_status(client, "http://public.test/hook", b"", {}, total_s=5)


@pytest.mark.parametrize("kind", TRANSPORTS)
@pytest.mark.parametrize("host", INTERNAL_HOSTS)
async def test_download_redirect_to_an_internal_address_is_refused(
    kind: str, host: str, tmp_path: Path
) -> None:
    """A download redirected from the trusted upstream (on loopback itself) to an internal
    address is refused at that hop: the second listener sees nothing, nothing is written."""
    target = await Listener().start()
    location = f"http://{host}:{target.port}/video.mp4".encode()
    upstream = await Listener(
        respond=lambda head: b"HTTP/1.1 302 Found\r\nlocation: " + location
        + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ).start()  # fmt: skip
    origin = f"http://127.0.0.1:{upstream.port}"
    try:
        async with guarded_client(kind, trusted=origin) as client:
            with pytest.raises((Refused, ValueError)):
                await fetch_to(
                    client,
                    f"{origin}/v1/videos/x/content",
                    FileTarget(tmp_path, "x", ".mp4"),
                    max_bytes=1 << 20,
                    max_redirects=5,
                    label="test",
                )
        assert upstream.connections == 1 and target.connections == 0
        assert not list(tmp_path.iterdir())
    finally:
        await upstream.stop()
        await target.stop()


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_download_redirect_loop_stops(kind: str, tmp_path: Path) -> None:
    """A download follows at most max_redirects redirects, then gives up for good."""
    loop = await Listener(
        respond=lambda head: (
            b"HTTP/1.1 302 Found\r\nlocation: /again\r\n"
            b"content-length: 0\r\nconnection: close\r\n\r\n"
        )
    ).start()
    origin = f"http://127.0.0.1:{loop.port}"
    try:
        async with guarded_client(kind, trusted=origin) as client:
            with pytest.raises(ValueError, match="more than 5 redirects"):
                await fetch_to(
                    client,
                    origin,
                    FileTarget(tmp_path, "x", ".mp4"),
                    max_bytes=10,
                    max_redirects=5,
                    label="t",
                )
        assert loop.connections == 6
    finally:
        await loop.stop()


@pytest.mark.parametrize(
    ("spelling", "address"),
    [("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("2130706433", "127.0.0.1"),
     ("0177.0.0.1", "127.0.0.1"), ("[::ffff:7f00:1]", "::ffff:7f00:1"), ("cafe.example", None),
     ("1.2.3.4.example", None)],
)  # fmt: skip
def test_host_literal_reads_every_spelling(spelling: str, address: str | None) -> None:
    """IPv4 shorthand, hex, decimal and octal spellings are read as the address they mean."""
    got = host_literal(spelling)
    assert (str(got) if got else None) == address


def test_embedded_internal_v4_is_refused_and_public_passes() -> None:
    """NAT64 and 6to4 addresses are judged by the IPv4 address they carry."""
    assert refusal(host_literal("64:ff9b::a00:1")) is not None  # type: ignore[arg-type]
    assert refusal(host_literal("2002:5db8:d70e::1")) is None  # type: ignore[arg-type]
    assert refusal(host_literal(PUBLIC)) is None  # type: ignore[arg-type]


async def test_worker_dead_letters_a_webhook_that_resolves_inside(
    client: AsyncClient,
    start_worker: StartWorker,
    aredis: redis.asyncio.Redis,
    settings: Settings,
    listener: Listener,
) -> None:
    """A webhook whose name resolves to loopback is dead-lettered at delivery with the
    reason, after one attempt, with no connection made; the request stays completed."""
    await start_worker(
        with_side=True, webhook_secret=SECRET, resolver=StaticResolver(RESOLVER_ANSWERS)
    )
    rid = await client.submit(REQ, webhook_url=f"https://internal.test:{listener.port}/h")
    await until_webhook(aredis, settings, rid, "dead", 30)
    r = await rec(aredis, settings, rid)
    assert r[Field.STATUS] == "completed" and r[Field.WEBHOOK_ATTEMPTS] == "1"
    assert "refused" in r[Field.WEBHOOK_ERROR] and "loopback" in r[Field.WEBHOOK_ERROR]
    assert await aredis.zscore(settings.keys.dead_letters, rid) is not None
    assert listener.connections == 0


async def test_submit_refuses_a_literal_internal_webhook_unless_allowed(
    settings: Settings, listener: Listener
) -> None:
    """A producer refuses a loopback webhook URL with InvalidRequest; naming loopback in
    outbound_allow_nets accepts it."""
    url = f"http://127.0.0.1:{listener.port}/hook"
    async with AsyncClient(settings) as plain:
        with pytest.raises(InvalidRequest, match="internal address"):
            await plain.submit(REQ, webhook_url=url)
    async with AsyncClient(replace(settings, outbound_allow_nets="127.0.0.0/8")) as opened:
        assert await opened.submit(REQ, webhook_url=url)


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "https://u:p@h.example/x"])
async def test_gateway_answers_422_for_a_refused_webhook(settings: Settings, url: str) -> None:
    """The gateway turns a refused webhook URL into 422 naming webhook_url; nothing is
    written."""
    app = create_app(settings, api_keys=["gq-key-0123456789abcdef"])
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://gateway",
            headers={"Authorization": "Bearer gq-key-0123456789abcdef"},
        ) as http,
    ):
        resp = await http.post("/v1/generations", json={**REQ, "webhook_url": url})
    assert resp.status_code == 422
    assert "webhook_url" in resp.text and "p@" not in resp.text


def test_a_bad_allow_net_is_refused_at_start() -> None:
    """GENQUEUE_OUTBOUND_ALLOW_NETS with a bad entry stops start-up, naming the entry."""
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        Settings.from_env({"GENQUEUE_OUTBOUND_ALLOW_NETS": "127.0.0.0/8, 10.0.0.0/33"})
    nets = Settings.from_env({"GENQUEUE_OUTBOUND_ALLOW_NETS": "127.0.0.0/8, ::1"}).allow_nets
    assert [str(n) for n in nets] == ["127.0.0.0/8", "::1/128"]
