"""A real Prometheus for the observability tests: found, or unpacked from the Debian package."""

from __future__ import annotations

import os

import pytest

from tests.observability.tools import PrometheusTools, find_prometheus


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    """prometheus and promtool; skipped without them on a developer machine, failed in CI."""
    tools, reason = find_prometheus()
    if tools is None:
        message = (
            f"no Prometheus: {reason}. Install it with `apt-get install prometheus` "
            "(Debian/Ubuntu), as .ci/run does"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return tools
