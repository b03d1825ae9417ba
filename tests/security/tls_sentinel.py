"""A TLS-only Sentinel deployment for tests: a test CA, one primary and one sentinel, each a
``redis-server`` that listens on a TLS port only (a plain-TCP client gets no answer)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from genqueue.local_redis import _die_with_parent, free_port

SERVICE = "tlsprimary"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1/localhost signed by it:
    (ca.pem, server.pem, server.key)."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=gq-test-ca",
        "-keyout", "ca.key", "-out", "ca.pem", cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr", cwd=directory,
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
        cwd=directory,
    )  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@dataclass
class TlsSentinel:
    """One TLS primary watched by one TLS sentinel, under ``directory``."""

    directory: Path
    primary_port: int = field(default_factory=free_port)
    sentinel_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca, self.cert, self.key = make_ca(self.directory)

    @property
    def url(self) -> str:
        return f"rediss+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def _tls_args(self) -> list[str]:
        return [
            "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
            "--bind", "127.0.0.1", "--port", "0",
        ]  # fmt: skip

    def _spawn(self, args: list[str], name: str) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        with (self.directory / f"{name}.log").open("wb") as log:
            self.procs.append(
                subprocess.Popen(
                    [binary, *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            )

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            port=port,
            ssl=True,
            ssl_ca_certs=str(self.ca),
            socket_timeout=1,
            socket_connect_timeout=1,
        )

    def start(self, timeout_s: float = 20.0) -> None:
        self._spawn(
            [*self._tls_args(), "--tls-port", str(self.primary_port), "--save", ""], "primary"
        )
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            "\n".join(
                [
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 1",
                    "tls-replication yes",  # the sentinel talks TLS to the primary too
                    "",
                ]
            )
        )
        self._spawn(
            [str(conf), "--sentinel", *self._tls_args(), "--tls-port", str(self.sentinel_port)],
            "sentinel",
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self.client(self.sentinel_port) as s:
                    addr = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                with self.client(self.primary_port) as p:
                    p.ping()
                if addr and int(addr[1]) == self.primary_port:
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-400:] for p in self.directory.glob("*.log")}
                raise RuntimeError(f"TLS sentinel deployment did not start: {logs}")
            time.sleep(0.1)

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)
        self.procs.clear()
