"""The wheel as users get it: built, checked, installed into a fresh venv, and run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from genqueue.local_redis import free_port
from genqueue.producer.settings import Settings
from tests.processes import stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
MODEL = "minimax/video-01-director"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `python -m build` makes from this checkout (no build isolation: offline)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("genqueue-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; its dependencies are borrowed from the test
    venv's site-packages by a plain path entry, which runs none of that directory's ``.pth``
    hooks (so this checkout's editable install cannot leak in)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (env_dir / "bin" / "genqueue").write_text(
        f"#!{python}\nfrom genqueue.cli import main\nmain()\n"
    )
    (env_dir / "bin" / "genqueue").chmod(0o755)
    return env_dir


def test_the_wheel_holds_only_genqueue_at_the_top_level(wheel: Path) -> None:
    """Every file in the wheel is under ``genqueue/`` or its dist-info, the Lua scripts and
    ``py.typed`` included."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"genqueue", "genqueue-0.1.0.dist-info"}, tops
    assert "genqueue/py.typed" in names
    assert "genqueue/producer/lua/begin_submit.lua" in names
    for part in ("producer", "worker", "worker/upstream", "simulator", "gateway"):
        assert f"genqueue/{part}/__init__.py" in names


def test_twine_accepts_the_wheel(wheel: Path) -> None:
    """`twine check` passes on the built wheel (metadata and README render)."""
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_installed_wheel_imports_from_its_own_copy(installed: Path, tmp_path: Path) -> None:
    """In the fresh venv, ``genqueue`` and its parts come from the installed wheel, and the
    old top-level names (``producer``, ``worker``...) do not exist."""
    code = (
        "import importlib.util, json, genqueue, genqueue.worker.app, genqueue.gateway.app;"
        "from genqueue import AsyncClient, Client, Settings;"
        "print(json.dumps({'file': genqueue.__file__, 'old': [n for n in "
        "('producer', 'worker', 'simulator', 'gateway') if importlib.util.find_spec(n)]}))"
    )
    out = subprocess.run(
        [str(installed / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    seen = json.loads(out)
    assert seen["file"].startswith(str(installed)), seen
    assert seen["old"] == []


@pytest.fixture
def stack(installed: Path, settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The installed wheel's `genqueue simulator` and `genqueue worker` as processes."""
    port = free_port()
    sim_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "GENQUEUE_REDIS_URL": settings.redis_url,
        "GENQUEUE_KEY_PREFIX": settings.key_prefix,
        "GENQUEUE_UPSTREAM_URL": sim_url,
        "TOGETHER_API_KEY": "test-key",
        "GENQUEUE_TIME_SCALE": "0.01",
        "GENQUEUE_POLL_DELAY_S": "0.02",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTHONPATH", None)
    genqueue = str(installed / "bin" / "genqueue")
    logs = (tmp_path / "sim.log").open("wb"), (tmp_path / "worker.log").open("wb")
    sim = subprocess.Popen(
        [
            genqueue,
            "simulator",
            "--port",
            str(port),
            "--time-scale",
            "0.01",
            "--seed",
            "3",
            "--failure-share",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [genqueue, "worker"], cwd=tmp_path, env=env, stdout=logs[1], stderr=subprocess.STDOUT
    )

    def sim_up() -> bool:
        assert sim.poll() is None, (tmp_path / "sim.log").read_text()
        try:
            return httpx.get(f"{sim_url}/_sim/stats", timeout=1).is_success
        except httpx.TransportError:
            return False

    try:
        wait_until(sim_up, 30, "the installed simulator")
        yield {**env, "GENQUEUE_BIN": genqueue, "SIM_URL": sim_url}
    finally:
        for proc in (worker, sim):
            stop_process(proc)
        for log in logs:
            log.close()


@pytest.mark.timeout(120)
def test_a_submit_runs_through_the_installed_wheel(stack: dict[str, str], tmp_path: Path) -> None:
    """The installed wheel's CLI submits a request that its worker completes against its
    simulator."""
    result = subprocess.run(
        [
            stack["GENQUEUE_BIN"],
            "submit",
            "--model",
            MODEL,
            "--prompt",
            "a wheel in a field",
            "--wait",
            "--timeout",
            "60",
            "--json",
        ],
        cwd=tmp_path,
        env=stack,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "completed"
    assert record["video_url"].startswith(stack["SIM_URL"])
