"""Name resolution for outbound calls, behind a small interface tests can replace."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Protocol

from genqueue.producer.addresses import IPAddress


class Resolver(Protocol):
    """Turns a host name into the addresses to connect to (first preferred)."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host``; raises ``OSError`` when the name does not resolve."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), off the event loop."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        out: list[IPAddress] = []
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in out:
                out.append(ip)
        if not out:
            raise OSError(f"{host} has no address")
        return out


class StaticResolver:
    """Fixed answers by name (tests, or pinning names without DNS); other names fail.

    ``calls`` counts lookups, so a test can prove each delivery resolves exactly once.
    """

    def __init__(self, answers: Mapping[str, Sequence[str]]) -> None:
        self.answers = {k.lower().rstrip("."): list(v) for k, v in answers.items()}
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        found = self.answers.get(host.lower().rstrip("."))
        if not found:
            raise OSError(f"{host}: name not known")
        return [ipaddress.ip_address(a) for a in found]
