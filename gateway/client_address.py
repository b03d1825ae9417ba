"""Who is calling, by address: the connection's peer, or what a trusted proxy says it is.

``X-Forwarded-For`` is anyone's to write, so it is read only when the peer is one of the
configured trusted proxies (``GENQUEUE_GATEWAY_TRUSTED_PROXIES``; none by default). Then the
hops are read from the right (each proxy appends the address it saw) and the first one that
is not itself a trusted proxy is the client: entries further left were written by the client
and are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

from genqueue.producer.addresses import IPAddress, Network

#: The address of a caller the server gave none for (a Unix socket, a test transport).
UNKNOWN = "unknown"


def _ip(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(ip: IPAddress, proxies: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def _forwarded(scope: Scope) -> list[str]:
    hops: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            hops += value.decode("latin-1").split(",")
    return hops


def client_ip(scope: Scope, trusted_proxies: Sequence[Network] = ()) -> IPAddress | None:
    """The client's address: the peer, unless the peer is a trusted proxy (see the module)."""
    client = scope.get("client")
    ip = _ip(client[0] if client else None)
    if ip is None or not trusted_proxies or not _trusted(ip, trusted_proxies):
        return ip
    for hop in reversed(_forwarded(scope)):
        found = _ip(hop)
        if found is None:
            return ip  # a garbled hop: the last trusted proxy is all that is known
        if not _trusted(found, trusted_proxies):
            return found
        ip = found
    return ip


def limit_address(ip: IPAddress | None) -> str:
    """The name the failed-authentication limit counts ``ip`` under: an IPv4 address (also
    when IPv4-mapped), or the /64 of an IPv6 address (one host usually holds a whole /64, so
    counting single IPv6 addresses would let it try 2**64 times as often)."""
    if ip is None:
        return UNKNOWN
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
