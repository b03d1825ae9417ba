"""Where a downloaded video goes: a local directory (default) or S3-compatible storage.

A target receives the video chunk by chunk (never whole in memory), then either commits it
(the file renamed into place; the multipart upload completed) or aborts (the partial file
removed; the multipart upload aborted, so no orphan parts are billed). The caller computes
the checksum; S3 objects also carry it as the ``sha256`` tag.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit


class DownloadTarget(Protocol):
    """One video's destination."""

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self, sha256: str) -> str:
        """Make the video visible; returns its location (a path, or ``s3://bucket/key``)."""
        ...

    async def abort(self) -> None:
        """Leave nothing behind (safe to call after a commit or twice)."""
        ...


class FileTarget:
    """``dir/.{id}.part`` while writing, fsynced, then renamed to ``dir/{id}{suffix}``."""

    def __init__(self, folder: Path, name: str, suffix: str) -> None:
        self.part = folder / f".{name}.part"
        self.final = folder / f"{name}{suffix}"
        self._file: Any = None

    async def write(self, chunk: bytes) -> None:
        if self._file is None:
            await asyncio.to_thread(self.part.parent.mkdir, parents=True, exist_ok=True)
            self._file = await asyncio.to_thread(self.part.open, "wb")
        await asyncio.to_thread(self._file.write, chunk)

    async def commit(self, sha256: str) -> str:
        if self._file is None:  # an empty video
            await self.write(b"")
        await asyncio.to_thread(self._file.flush)
        await asyncio.to_thread(os.fsync, self._file.fileno())
        self._file.close()
        await asyncio.to_thread(os.replace, self.part, self.final)
        return str(self.final)

    async def abort(self) -> None:
        # Synchronous on purpose: this also runs while the task is being cancelled.
        if self._file is not None:
            self._file.close()
        self.part.unlink(missing_ok=True)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at the ends)."""
    p = urlsplit(url)
    if p.scheme != "s3" or not p.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    return p.netloc, p.path.strip("/")


class S3Target:
    """A streamed multipart upload: parts of ``part_bytes`` (S3's minimum is 5 MiB, except
    the last) are sent as they fill, so memory holds one part at most.

    ``client`` is a boto3 S3 client (blocking: every call runs in a thread).
    """

    def __init__(self, client: Any, bucket: str, key: str, part_bytes: int) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.part_bytes = part_bytes
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._done = False

    async def _flush(self) -> None:
        if self._upload_id is None:
            reply = await asyncio.to_thread(
                self.client.create_multipart_upload,
                Bucket=self.bucket,
                Key=self.key,
                ContentType="video/mp4",
            )
            self._upload_id = str(reply["UploadId"])
        number = len(self._parts) + 1
        body = bytes(self._buffer)
        self._buffer.clear()
        reply = await asyncio.to_thread(
            self.client.upload_part,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        self._parts.append({"PartNumber": number, "ETag": reply["ETag"]})

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= self.part_bytes:
            await self._flush()

    async def commit(self, sha256: str) -> str:
        if self._buffer or not self._parts:
            await self._flush()
        await asyncio.to_thread(
            self.client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._done = True
        await asyncio.to_thread(
            self.client.put_object_tagging,
            Bucket=self.bucket,
            Key=self.key,
            Tagging={"TagSet": [{"Key": "sha256", "Value": sha256}]},
        )
        return f"s3://{self.bucket}/{self.key}"

    async def abort(self) -> None:
        if self._upload_id is not None and not self._done:
            upload_id, self._upload_id = self._upload_id, None
            # Shielded: an abort started while the task is cancelled still reaches S3.
            await asyncio.shield(
                asyncio.to_thread(
                    self.client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=upload_id,
                )
            )


def s3_client(endpoint_url: str, region: str) -> Any:
    """A boto3 S3 client; credentials come from boto3's usual chain (``AWS_*`` variables,
    profiles, instance roles), never from genqueue's settings."""
    import boto3  # imported here: only workers that upload need it

    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None)
