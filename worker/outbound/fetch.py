"""Stream a download to a target: redirects followed hop by hop, size-capped, checksummed.

Every hop goes through the caller's client, so a guarded client (``guard.py``) checks each
redirect target like a webhook URL. The caller owns the total deadline and the target
(commit or abort).
"""

from __future__ import annotations

import hashlib

import httpx

from genqueue.worker.targets import DownloadTarget

_CHUNK = 1 << 16


class RetryableFetch(Exception):
    """A failure that may pass (5xx, 408/429, a network error): worth another attempt."""


class SignedUrlExpired(ValueError):
    """A 403 after a redirect: the short link led to a signed URL that expired on the way
    (visiting the link again gives a fresh one)."""


class LinkGone(ValueError):
    """A 404/410 from ``url`` itself, before any redirect: the link is past its lifetime."""


async def fetch_to(
    client: httpx.AsyncClient,
    url: str,
    target: DownloadTarget,
    *,
    max_bytes: int,
    max_redirects: int,
    label: str,
) -> tuple[str, int]:
    """GET ``url`` into ``target``; returns (sha256 hex, size). ``label`` names the URL in
    errors (a redacted form: signed URLs carry tokens). Raises :class:`RetryableFetch`, or
    ``ValueError`` for what waiting cannot fix (4xx, over the size, too many redirects):
    :class:`SignedUrlExpired` for a 403 after a redirect, :class:`LinkGone` for a 404/410
    from ``url`` itself. Nothing is written to ``target`` before a 200."""
    current = url
    try:
        for hop in range(max_redirects + 1):
            async with client.stream("GET", current) as resp:
                location = resp.headers.get("location")
                if resp.is_redirect and location:
                    current = str(httpx.URL(current).join(location))
                    continue
                if resp.status_code >= 500 or resp.status_code in (408, 429):
                    raise RetryableFetch(f"HTTP {resp.status_code} from {label}")
                if resp.status_code == 403 and hop > 0:
                    raise SignedUrlExpired(f"HTTP 403 after a redirect from {label}")
                if resp.status_code in (404, 410) and hop == 0:
                    raise LinkGone(f"HTTP {resp.status_code} from {label}")
                if resp.status_code != 200:
                    # A signed URL that expired or was refused will not get better by waiting.
                    raise ValueError(f"HTTP {resp.status_code} from {label}")
                declared = int(resp.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise ValueError(f"{declared} bytes is over the {max_bytes}-byte limit")
                return await _write(resp, target, max_bytes)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid URL: {exc}") from None
    except httpx.RemoteProtocolError as exc:
        if "location header" in str(exc):  # httpx parses a redirect's target eagerly
            raise ValueError(f"invalid redirect location from {label}") from None
        raise RetryableFetch(f"{type(exc).__name__} from {label}") from None
    except httpx.HTTPError as exc:
        raise RetryableFetch(f"{type(exc).__name__} from {label}") from None
    raise ValueError(f"more than {max_redirects} redirects from {label}")


async def _write(resp: httpx.Response, target: DownloadTarget, max_bytes: int) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    async for chunk in resp.aiter_bytes(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise ValueError(f"over the {max_bytes}-byte limit")
        h.update(chunk)
        await target.write(chunk)
    return h.hexdigest(), size
