"""Finding (or unpacking) a real Prometheus, and reading the committed observability files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "genqueue.json"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
COMPOSE = ROOT / "docker-compose.yml"
PROVISIONING = ROOT / "grafana" / "provisioning"
MONITORING_DOC = ROOT / "docs" / "monitoring.md"

#: Where the Debian package is unpacked when it is not installed (no root, no service started).
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "genqueue" / "prometheus"


@dataclass(frozen=True)
class PrometheusTools:
    prometheus: str
    promtool: str


def _installed() -> PrometheusTools | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus and promtool:
        return PrometheusTools(prometheus, promtool)
    unpacked = CACHE / "usr" / "bin"
    if (unpacked / "prometheus").exists() and (unpacked / "promtool").exists():
        return PrometheusTools(str(unpacked / "prometheus"), str(unpacked / "promtool"))
    return None


def _unpack_debian_package() -> str:
    """``apt-get download prometheus`` and unpack it into CACHE; '' or why it failed."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return "neither prometheus nor apt-get/dpkg-deb is available"
    with tempfile.TemporaryDirectory(prefix="genqueue-prometheus-deb-") as tmp:
        got = subprocess.run(
            ["apt-get", "download", "prometheus"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if got.returncode or not debs:
            return f"`apt-get download prometheus` failed: {got.stderr.strip()[-300:]}"
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(CACHE)], check=True, timeout=120)
    return ""


def find_prometheus() -> tuple[PrometheusTools | None, str]:
    """The prometheus and promtool binaries: installed (``apt-get install prometheus``),
    or the Debian package unpacked into a cache folder; else None and the reason."""
    tools = _installed()
    if tools is not None:
        return tools, ""
    reason = _unpack_debian_package()
    tools = _installed()
    if tools is None:
        return None, reason or "the unpacked Debian package holds no prometheus/promtool"
    return tools, ""


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows left out), including panels inside collapsed rows."""
    out: list[dict[str, Any]] = []
    for p in board["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


#: Grafana's Prometheus macros and the dashboard's variables, as a query sees them.
_MACRO = re.compile(r"\$(__rate_interval|__interval|__range|model|tenant)\b|\$\{(\w+)\}")


def substitute(expr: str, *, rate_interval: str, interval: str, range_: str) -> str:
    """``expr`` with Grafana's macros replaced as Grafana would for the given intervals and
    the ``model`` and ``tenant`` variables at "All" (their allValue ``.*``)."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__range": range_,
        "model": ".*",
        "tenant": ".*",
    }

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _MACRO.sub(repl, expr)
