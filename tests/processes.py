"""Helpers for tests that run genqueue as real processes: wait for a condition, stop a child."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.05
) -> None:
    """Call ``check`` every ``every_s`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait_s: float = 15.0
) -> None:
    """Send ``sig`` to a live child, wait up to ``wait_s`` for it, then SIGKILL it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
