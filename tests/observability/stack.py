"""The proof's stack as real processes: simulator, workers, exporters and Prometheus.

Each process logs to a file in the run's folder; everything is stopped on the way out (and gets
SIGTERM if the test process dies, via PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class Processes:
    """Child processes with their output in ``log_dir``."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self.procs.append((name, proc))
        return proc

    def genqueue(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.spawn(name, [sys.executable, "-m", "genqueue", *args], env)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            self.stop(proc)

    def check_alive(self) -> None:
        """Raise if a child died unexpectedly, with the end of its log."""
        for name, proc in self.procs:
            code = proc.poll()
            if code is not None and code != 0:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {code}:\n{tail}")

    def logs(self) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(out)


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; its value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            last = check()
            if last:
                return last
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def scrape(port: int) -> dict[str, float]:
    """One metrics endpoint's samples summed by sample name (labels dropped)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def label_values(port: int, sample: str, label: str) -> set[str]:
    """The values of ``label`` on one metrics endpoint's ``sample`` lines."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        s.labels[label]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and label in s.labels
    }


def prometheus_config(
    path: Path, *, workers: Sequence[int], exporters: Sequence[int], rule_files: Sequence[Path]
) -> None:
    """A Prometheus config with the compose file's job names, scraping every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": "genqueue-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in workers]}],
            },
            {
                "job_name": "genqueue-exporter",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in exporters]}],
            },
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


class PrometheusAPI:
    """The bits of Prometheus' HTTP API the proof needs; every call asserts success."""

    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, **params: Any) -> Any:
        resp = self.http.get(path, params=params)
        body = resp.json()
        if resp.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"{path} {params}: HTTP {resp.status_code} {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector (a scalar result becomes one unlabelled sample)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        data = self._get(
            "/api/v1/query_range",
            query=expr,
            start=f"{start:.3f}",
            end=f"{end:.3f}",
            step=f"{step:g}",
        )
        result: list[Any] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """A single-sample instant query's value (None when empty)."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr} gave {len(result)} series"
        return float(result[0]["value"][1])

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def rules(self) -> list[dict[str, Any]]:
        groups = self._get("/api/v1/rules")["groups"]
        return [rule for g in groups for rule in g["rules"]]

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        values: list[str] = self._get(
            f"/api/v1/label/{label}/values",
            **{"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"},
        )
        return values


def finite_values(series: list[Any]) -> list[float]:
    """Every finite number in an instant or range query result."""
    out = []
    for s in series:
        points = s.get("values") or [s["value"]]
        for _, raw in points:
            v = float(raw)
            if math.isfinite(v):
                out.append(v)
    return out
