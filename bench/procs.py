"""Child processes of the benchmark: spawning with a log file, dying with the harness, CPU and
memory read from ``/proc`` (so only the processes under test are counted, never the harness)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import redis.asyncio

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _die_with_parent() -> None:
    """In the child (Linux): get SIGTERM when the harness dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all its threads), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode()
    except OSError:
        return None
    # The command name may contain spaces: fields start after the last ')'.
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return None


class Child:
    """One subprocess with its output in a log file; its CPU is remembered even after it dies
    (the last sample), so a SIGKILLed worker still counts."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.cpu_mark = 0.0
        self.last_cpu = 0.0
        self.peak_rss = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self) -> float:
        """Refresh the CPU (and peak RSS) sample; return CPU seconds since :meth:`mark`."""
        cpu = cpu_seconds(self.pid)
        if cpu is not None and self.alive:
            self.last_cpu = cpu
            self.peak_rss = max(self.peak_rss, rss_bytes(self.pid) or 0)
        return self.last_cpu - self.cpu_mark

    def mark(self) -> None:
        """Start counting CPU from now (start-up and imports are not the workload's)."""
        self.sample()
        self.cpu_mark = self.last_cpu
        self.peak_rss = 0

    def kill(self) -> None:
        """SIGKILL (a crash): the last CPU sample is kept."""
        self.sample()
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``."""
        self.sample()
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def python_child(
    name: str,
    module_args: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    cwd: Path | None = None,
) -> Child:
    """``python -m <module_args>`` with this interpreter (in ``cwd``: away from the checkout,
    whose ``genqueue/`` folder would shadow a ``PYTHONPATH`` copy of another version)."""
    return Child(name, [sys.executable, "-m", *module_args], env, log_dir, cwd)


async def start_genqueue_workers(
    names: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    r: redis.asyncio.Redis,
    prefix: str,
    timeout_s: float = 60.0,
    env_by_name: Mapping[str, Mapping[str, str]] | None = None,
    cwd: Path | None = None,
) -> list[Child]:
    """Spawn one ``genqueue worker`` per name (``GENQUEUE_WORKER_NAME``, plus its own
    ``env_by_name`` entries) and wait until each has written its arq health key (it is then
    taking jobs)."""
    own = env_by_name or {}
    children = [
        python_child(
            n,
            ["genqueue", "worker"],
            {**env, **own.get(n, {}), "GENQUEUE_WORKER_NAME": n},
            log_dir,
            cwd,
        )
        for n in names
    ]
    want = [f"{prefix}:health:{n}" for n in names]
    deadline = time.monotonic() + timeout_s
    while await r.exists(*want) < len(want):
        for c in children:
            if not c.alive:
                raise RuntimeError(f"{c.name} exited:\n{c.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"genqueue workers did not start in {timeout_s:g} s")
        await asyncio.sleep(0.05)
    return children


def wait_http(url: str, child: Child | None = None, timeout_s: float = 30.0) -> None:
    """Wait until ``url`` answers 200 (and the child, if given, is alive)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child is not None and not child.alive:
            raise RuntimeError(f"{child.name} exited:\n{child.tail()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout_s:g} s")


def stop_all(children: Sequence[Child], grace_s: float = 10.0) -> None:
    """SIGTERM every live child at once, then wait (SIGKILL after ``grace_s``)."""
    for c in children:
        if c.alive:
            with contextlib.suppress(ProcessLookupError):
                c.sample()
                c.proc.send_signal(signal.SIGTERM)
    for c in children:
        c.stop(grace_s)
