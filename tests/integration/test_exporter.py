"""`genqueue exporter` serves the cluster metrics over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from genqueue.local_redis import free_port
from genqueue.producer import Client, Settings
from tests.integration.test_restart import wait_until


@pytest.mark.slow
def test_exporter_serves_cluster_metrics(settings: Settings) -> None:
    """The exporter answers /metrics with figures read from Redis and exits 0 on SIGTERM."""
    with Client(settings) as client:
        client.submit({"model": "openai/sora-2", "prompt": "dawn"})
    port = free_port()
    env = dict(os.environ)
    env.update(GENQUEUE_REDIS_URL=settings.redis_url, GENQUEUE_KEY_PREFIX=settings.key_prefix)
    proc = subprocess.Popen(
        [sys.executable, "-m", "genqueue", "exporter", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def up() -> bool:
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 20, "the exporter")
        text = httpx.get(url, timeout=5).text
        assert "genqueue_redis_up 1.0" in text
        assert 'genqueue_requests{status="pending"} 1.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
