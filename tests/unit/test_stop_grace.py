"""The worker's grace period in docker-compose covers its longest stop (Redis down)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from genqueue.worker.config import WorkerConfig
from genqueue.worker.shutdown import stop_bound_s

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}


def _duration_s(text: str) -> float:
    """A compose duration (``1m30s``, ``90s``, ``2m``) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * UNITS[u] for n, u in parts)


def _worker_config(service: dict[str, Any]) -> WorkerConfig:
    """The defaults, with the service's literal ``GENQUEUE_*`` settings (not ``${...}``)."""
    env = {
        k: str(v)
        for k, v in (service.get("environment") or {}).items()
        if k.startswith("GENQUEUE_") and "${" not in str(v)
    }
    return WorkerConfig.from_env(env)


def test_compose_duration_parser() -> None:
    """Compose durations parse to seconds; anything else is refused."""
    assert _duration_s("2m") == 120 and _duration_s("1m30s") == 90 and _duration_s("45s") == 45


def test_worker_grace_covers_its_longest_stop() -> None:
    """Every service running ``worker`` has a ``stop_grace_period`` at least the stop bound
    (job_completion_wait_s + two leases + one write try + closing) of its settings."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    workers = {n: s for n, s in services.items() if s.get("command", [None])[0] == "worker"}
    assert workers, "no worker service in docker-compose.yml"
    for name, service in workers.items():
        bound = stop_bound_s(_worker_config(service))
        grace = _duration_s(str(service.get("stop_grace_period", "10s")))  # compose's default
        assert grace >= bound, f"{name}: stop_grace_period {grace:g} s < stop bound {bound:g} s"
