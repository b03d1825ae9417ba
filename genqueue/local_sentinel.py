"""A private Sentinel deployment in a temp dir: one primary, replicas and sentinels, each a
``redis-server`` on a free port; the primary can be SIGKILLed and a replica promoted.

For the failover tests and chaos runs (``redis+sentinel://`` URLs against real servers).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from genqueue.local_redis import LocalRedis, _die_with_parent, free_port, redis_reachable


def _connect(port: int) -> Any:
    """A short-timeout client for one local node or sentinel (untyped replies: Any)."""
    return redis.Redis(port=port, socket_timeout=1, decode_responses=True)


def _sentinel_conf(port: int, service: str, primary_port: int, quorum: int, down_ms: int) -> str:
    return "\n".join(
        [
            f"port {port}",
            "bind 127.0.0.1",
            "daemonize no",
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down_ms}",
            # Short, so a second failover in a test is not refused as "too soon".
            f"sentinel failover-timeout {service} {max(2000, 2 * down_ms)}",
            f"sentinel parallel-syncs {service} 2",
            "",
        ]
    )


class LocalSentinelCluster:
    """A primary with ``replicas`` replicas watched by ``sentinels`` sentinels (quorum: a
    majority), everything under one temp dir; ``close()`` kills every process."""

    def __init__(
        self,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        service: str = "genqueue",
        down_after_ms: int = 1000,
        appendfsync: str = "everysec",
        data_dir: Path | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server not found on PATH")
        self.binary = binary
        self.service = service
        self.down_after_ms = down_after_ms
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="genqueue-sentinel-")
        self.dir = data_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.appendfsync = appendfsync
        self.nodes: dict[int, LocalRedis] = {}
        first = free_port()
        self._primary_port = first
        self._add_node(first, None)
        for _ in range(replicas):
            self._add_node(free_port(), first)
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []

    def _add_node(self, port: int, primary: int | None) -> LocalRedis:
        data = self.dir / f"node-{port}"
        data.mkdir(parents=True, exist_ok=True)
        node = LocalRedis(
            port=port,
            appendfsync=self.appendfsync,
            data_dir=data,
            extra_args=self._replica_args(primary),
        )
        self.nodes[port] = node
        return node

    @staticmethod
    def _replica_args(primary: int | None) -> list[str]:
        # No diskless-sync delay (5 s by default): a replica syncs as soon as it connects.
        fast = ["--repl-diskless-sync-delay", "0"]
        return fast if primary is None else [*fast, "--replicaof", "127.0.0.1", str(primary)]

    @property
    def url(self) -> str:
        """``redis+sentinel://`` URL of this deployment (database 0)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the data nodes and sentinels; return once the sentinels see every replica
        and each other."""
        for node in self.nodes.values():
            node.start()
        quorum = len(self.sentinel_ports) // 2 + 1
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                _sentinel_conf(port, self.service, self._primary_port, quorum, self.down_after_ms)
            )
            with (self.dir / f"sentinel-{port}.log").open("wb") as log:
                self.sentinel_procs.append(
                    subprocess.Popen(
                        [self.binary, str(conf), "--sentinel"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=self.dir,
                        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                    )
                )
        replicas = len(self.nodes) - 1
        self._wait(
            lambda: self._replicas_of(self._primary_port) >= replicas,
            timeout_s,
            "the replicas to sync",
        )
        self._wait(lambda: self._settled(replicas), timeout_s, "sentinels to settle")

    def _master_info(self, port: int) -> dict[str, str]:
        client = _connect(port)
        try:
            reply = client.execute_command("SENTINEL", "MASTER", self.service)
        finally:
            client.close()
        if isinstance(reply, dict):
            return {str(k): str(v) for k, v in reply.items()}
        return dict(zip(reply[::2], reply[1::2], strict=True))

    def _settled(self, replicas: int) -> bool:
        try:
            for port in self.sentinel_ports:
                info = self._master_info(port)
                if int(info["num-slaves"]) < replicas:
                    return False
                if int(info["num-other-sentinels"]) < len(self.sentinel_ports) - 1:
                    return False
        except (redis.RedisError, OSError, KeyError):
            return False
        return True

    def primary_port(self) -> int:
        """The primary's port as the first answering sentinel reports it."""
        for port in self.sentinel_ports:
            client = _connect(port)
            try:
                addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return int(addr[1])
            except (redis.RedisError, OSError):
                continue
            finally:
                client.close()
        raise RuntimeError("no sentinel answered")

    def promotions(self) -> int:
        """How many failovers the sentinels have made (the service's highest config epoch):
        more than the test asked for means a spurious one (a primary too slow to answer
        within ``down_after_ms``)."""
        epochs = [0]
        for port in self.sentinel_ports:
            client = _connect(port)
            try:
                master = client.execute_command("SENTINEL", "MASTER", self.service)
                fields = dict(zip(master[::2], master[1::2], strict=False))
                epochs.append(int(fields.get("config-epoch", 0)))
            except (redis.RedisError, OSError, ValueError):
                continue
            finally:
                client.close()
        return max(epochs)

    def _is_primary(self, port: int) -> bool:
        client = _connect(port)
        try:
            return str(client.info("replication").get("role")) == "master"
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def _replicas_of(self, port: int) -> int:
        client = _connect(port)
        try:
            info = client.info("replication")
        except (redis.RedisError, OSError):
            return 0
        finally:
            client.close()
        return sum(1 for k, v in info.items() if k.startswith("slave") and "online" in str(v))

    def fail_over(self, timeout_s: float = 30.0) -> tuple[int, int]:
        """SIGKILL the primary, wait until the sentinels promote a replica, then start the old
        primary again as a replica of the new one. Returns (old port, new port)."""
        old = self.primary_port()
        self.nodes[old].kill()
        self._wait(
            lambda: self.primary_port() != old and self._is_primary(self.primary_port()),
            timeout_s,
            "a replica to be promoted",
        )
        new = self.primary_port()
        node = self.nodes[old]
        node.extra_args = self._replica_args(new)
        node.start()
        self._wait(
            lambda: self._replicas_of(new) >= len(self.nodes) - 1,
            timeout_s,
            "every replica to follow the new primary",
        )
        return old, new

    @staticmethod
    def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")

    def close(self) -> None:
        """Kill every sentinel and data node, and remove the temp dir."""
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for node in self.nodes.values():
            node.kill()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalSentinelCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["LocalSentinelCluster", "free_port", "redis_reachable"]
