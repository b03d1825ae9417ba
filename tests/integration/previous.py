"""Running a previous version of genqueue beside this one (upgrade tests): its tree exported
from git as an import root, the environment that points a process at it, and its workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest

from genqueue.producer import Settings
from tests.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
#: The folders the package maps into ``genqueue`` (pyproject.toml ``package-dir``).
MAPPED = ("producer", "worker", "simulator", "gateway")


def export_root(commit: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``commit``'s package as an import root (``genqueue`` with its mapped subpackages):
    put it on ``PYTHONPATH`` to run that version (needs the git history)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "genqueue", *MAPPED],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    src = tmp_path_factory.mktemp("old-src")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    root = tmp_path_factory.mktemp("old-root")
    shutil.copytree(src / "genqueue", root / "genqueue")
    for sub in MAPPED:
        shutil.copytree(src / sub, root / "genqueue" / sub)
    return root


def env_for(
    settings: Settings, upstream: str, old_root: Path | None, *, time_scale: float
) -> dict[str, str]:
    """The environment of a producer or worker of the version at ``old_root`` (None: this
    one) on ``settings``' Redis and prefix, against the simulator at ``upstream``."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if old_root is not None:
        env["PYTHONPATH"] = str(old_root)
    env.update(
        GENQUEUE_REDIS_URL=settings.redis_url,
        GENQUEUE_KEY_PREFIX=settings.key_prefix,
        GENQUEUE_UPSTREAM_URL=upstream,
        TOGETHER_API_KEY="test-key",
        GENQUEUE_TIME_SCALE=str(time_scale),
        GENQUEUE_POLL_DELAY_S="0.02",
        GENQUEUE_RECONCILE_INTERVAL_S="2",
        GENQUEUE_LOG_FORMAT="json",
        GENQUEUE_LOG_LEVEL="WARNING",
    )
    return env


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts, stopped at its end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        stop_process(p)


def worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A ``genqueue worker`` process with ``env``, logging to ``log``."""
    # Run from the log's folder: the checkout's own ``genqueue/`` must not shadow the import.
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "genqueue", "worker"],
            env=env, stdout=out, stderr=out, cwd=log.parent,
        )  # fmt: skip


_OLD_SUBMIT = """
import json, sys
import genqueue.producer.keys as keys
from genqueue.producer import Client, Settings
model, n, absent, keyed = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
assert not hasattr(keys.Field, absent), "not the previous version"
with Client(Settings.from_env()) as c:
    ids = [c.submit({"model": model, "prompt": f"old {i}"},
                    **({"idempotency_key": f"old-{i}"} if keyed else {}))
           for i in range(n)]
print(json.dumps(ids))
"""


def submit_old(
    env: dict[str, str], cwd: Path, model: str, n: int, *, absent: str, keyed: bool = False
) -> list[str]:
    """Submit ``n`` requests with the producer of the version ``env`` points at (checked to be
    the previous one: its ``Field`` has no ``absent``); ``keyed``: idempotency keys old-0, ...
    Returns their ids."""
    out = subprocess.run(
        [sys.executable, "-c", _OLD_SUBMIT, model, str(n), absent, "1" if keyed else "0"],
        env=env, check=True, capture_output=True, cwd=cwd,
    )  # fmt: skip
    ids: list[str] = json.loads(out.stdout)
    return ids
