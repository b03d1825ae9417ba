"""One webhook POST with a total deadline, reading nothing of the answer but its status."""

from __future__ import annotations

import asyncio

import httpx


async def post_status(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    total_s: float,
) -> int:
    """POST and return the answer's status code.

    ``total_s`` bounds the whole call (connect, send, headers), not each read: a receiver
    trickling bytes cannot outlast it (raises ``TimeoutError``). The body is never read --
    leaving the stream unread closes the connection -- so a receiver answering hundreds of
    megabytes costs nothing.
    """
    async with asyncio.timeout(total_s):
        async with client.stream("POST", url, content=body, headers=headers) as resp:
            return resp.status_code
