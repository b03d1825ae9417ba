"""A private ``redis-server`` in a temp dir: for the demo, tests and chaos runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies (even by SIGKILL), so a killed demo or
    test run leaves no redis-server behind (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_reachable(url: str, timeout_s: float = 0.5) -> bool:
    """True if a Redis answers PING at ``url`` (plain or ``redis+sentinel://``)."""
    from genqueue.producer.connections import sync_redis

    try:
        client = sync_redis(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


class LocalRedis:
    """One ``redis-server`` process on a free port; can be SIGKILLed and restarted on the same
    port and data dir (AOF on, ``appendfsync`` as chosen, so a restart keeps what was synced)."""

    def __init__(
        self,
        *,
        port: int | None = None,
        appendfsync: str = "always",
        data_dir: Path | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        binary = binary or shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(
                "redis-server not found on PATH: install Redis (e.g. `apt-get install "
                "redis-server` or `brew install redis`) or set GENQUEUE_REDIS_URL"
            )
        self.binary = binary
        self.port = port or free_port()
        self.appendfsync = appendfsync
        #: More ``redis-server`` options (e.g. ``--replicaof 127.0.0.1 6380``).
        self.extra_args = list(extra_args)
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="genqueue-redis-")
        self.data_dir = data_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log}")
            if redis_reachable(self.url, 0.2):
                return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not answer in {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown save: what AOF synced is what survives)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """Stop the server gracefully."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, *, kill: bool = True) -> None:
        """Kill (or stop) and start again on the same port and data dir."""
        self.kill() if kill else self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
