"""The gateway examples end to end: `genqueue simulator`, `genqueue worker` and `genqueue
gateway` as real processes, driven by examples/node/generate.mjs, examples/curl.sh and
examples/async_batch.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from genqueue.local_redis import free_port
from genqueue.producer import Settings
from genqueue.producer.record import read_full_sync
from tests.examples import EXAMPLES, load_example
from tests.processes import stop_process, wait_until

pytestmark = pytest.mark.slow

TIME_SCALE = "0.01"
API_KEY = "gq-example-key-0123456789"
NODE_SCRIPT = EXAMPLES / "node" / "generate.mjs"
CURL_SCRIPT = EXAMPLES / "curl.sh"


@dataclass(frozen=True)
class Stack:
    gateway_url: str
    simulator_url: str
    settings: Settings
    env: dict[str, str]
    logs: Path

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for an example client: the gateway's URL and key, nothing of Redis."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENQUEUE_")}
        return {
            **env,
            "GENQUEUE_GATEWAY_URL": self.gateway_url,
            "GENQUEUE_API_KEY": API_KEY,
            "GENQUEUE_TIMEOUT_S": "45",
            **extra,
        }

    def sim_stats(self) -> dict[str, object]:
        data: dict[str, object] = httpx.get(f"{self.simulator_url}/_sim/stats", timeout=5).json()
        return data

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log"))
        )


def _up(url: str, proc: subprocess.Popen[bytes], log: Path) -> Callable[[], bool]:
    def check() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(url, timeout=1).is_success
        except httpx.TransportError:
            return False

    return check


def _require(tool: str) -> str:
    """The tool's path; skip without it, except in CI (``CI`` set), where it must exist."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"`{tool}` is not on PATH, and CI is set: install it")
        pytest.skip(f"`{tool}` is not installed")
    return path


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Simulator, worker and gateway processes on free ports, on a flushed test database with
    a unique key prefix (shared by this module's tests, which run one after another)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    settings = Settings(redis_url=redis_url, key_prefix=f"gqx-{uuid.uuid4().hex[:8]}")
    logs = tmp_path_factory.mktemp("example-stack")
    sim_port, gw_port = free_port(), free_port()
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    env = {
        **os.environ,
        "GENQUEUE_REDIS_URL": settings.redis_url,
        "GENQUEUE_KEY_PREFIX": settings.key_prefix,
        "GENQUEUE_UPSTREAM_URL": sim_url,
        "TOGETHER_API_KEY": "x",
        "GENQUEUE_TIME_SCALE": TIME_SCALE,
        "GENQUEUE_POLL_DELAY_S": "0.02",
        "GENQUEUE_API_KEYS": API_KEY,
        "GENQUEUE_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    genqueue = (sys.executable, "-m", "genqueue")
    commands = {
        "simulator": [
            *(*genqueue, "simulator", "--port", str(sim_port), "--time-scale", TIME_SCALE),
            *("--seed", "7", "--failure-share", "0"),
        ],
        "worker": [*genqueue, "worker"],
        "gateway": [*genqueue, "gateway", "--port", str(gw_port)],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    files = []
    try:
        for name, cmd in commands.items():
            f = (logs / f"{name}.log").open("wb")
            files.append(f)
            procs[name] = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        wait_until(
            _up(f"{sim_url}/_sim/stats", procs["simulator"], logs / "simulator.log"),
            30,
            "the simulator",
        )
        wait_until(
            _up(f"{gw_url}/readyz", procs["gateway"], logs / "gateway.log"), 30, "the gateway"
        )
        yield Stack(gw_url, sim_url, settings, env, logs)
    finally:
        for proc in procs.values():
            stop_process(proc)
        for f in files:
            f.close()


def _run(
    cmd: list[str], env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)


# --- examples/node/generate.mjs -------------------------------------------------------------


@pytest.mark.timeout(90)
def test_node_script_creates_waits_and_prints_a_completed_record(stack: Stack) -> None:
    """`node generate.mjs` creates a generation through the gateway, long-polls it to the end
    and prints the completed record (exit 0); rerun with the same Idempotency-Key it buys
    nothing new and prints the same generation."""
    node = _require("node")
    env = stack.client_env(IDEMPOTENCY_KEY=f"node-{uuid.uuid4()}")
    before = stack.sim_stats()["jobs_created"]
    result = _run([node, str(NODE_SCRIPT), "a lighthouse at dusk"], env)
    assert result.returncode == 0, result.stderr + stack.log_tail()
    record = json.loads(result.stdout)
    assert record["status"] == "completed"
    assert record["video_url"].startswith(stack.simulator_url)
    assert Decimal(record["cost_usd"]) > 0
    assert record["request"]["prompt"] == "a lighthouse at dusk"
    assert record["metadata"] == {"source": "node-example"}
    assert f"created {record['id']} (201" in result.stderr

    again = _run([node, str(NODE_SCRIPT), "a lighthouse at dusk"], env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == record["id"]
    assert stack.sim_stats()["jobs_created"] == before + 1  # type: ignore[operator]


@pytest.mark.timeout(60)
def test_node_script_exits_1_when_the_generation_fails(stack: Stack) -> None:
    """A generation that ends `failed` (a model the upstream refuses) is printed, and the
    script exits 1."""
    node = _require("node")
    env = stack.client_env(GENQUEUE_MODEL="acme/no-such-model")
    result = _run([node, str(NODE_SCRIPT)], env)
    assert result.returncode == 1, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and record["error"]
    assert "generation failed" in result.stderr


@pytest.mark.timeout(60)
def test_node_script_reports_http_errors_and_missing_config(stack: Stack) -> None:
    """A key the gateway refuses exits 1 naming the HTTP 403; no key at all exits 2."""
    node = _require("node")
    refused = _run([node, str(NODE_SCRIPT)], stack.client_env(GENQUEUE_API_KEY="wrong-key"))
    assert refused.returncode == 1 and "HTTP 403" in refused.stderr, refused.stderr
    env = stack.client_env()
    del env["GENQUEUE_API_KEY"]
    missing = _run([node, str(NODE_SCRIPT)], env)
    assert missing.returncode == 2 and "GENQUEUE_API_KEY" in missing.stderr


# --- examples/curl.sh -----------------------------------------------------------------------


def _path_without_jq(tmp_path: Path) -> str:
    """A PATH holding only what curl.sh needs besides jq (proves jq is optional)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "curl", "sed", "mktemp", "rm", "date", "head", "tr", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("jq", ["with_jq", "without_jq"])
def test_curl_script_walks_through_the_api(stack: Stack, tmp_path: Path, jq: str) -> None:
    """`curl.sh` creates with an Idempotency-Key (201 + Location), gets the same id for the
    same key, long-polls to `completed`, cancels a second generation, reads stats and exits
    0; with or without jq installed."""
    _require("curl")
    if jq == "with_jq" and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    bash = shutil.which("bash")
    assert bash
    env = stack.client_env(IDEMPOTENCY_KEY=f"curl-{uuid.uuid4()}")
    if jq == "without_jq":
        env["PATH"] = _path_without_jq(tmp_path)
    result = _run([bash, str(CURL_SCRIPT), "a kite over dunes"], env)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr + stack.log_tail()
    assert "HTTP/1.1 201" in out and "Location: /v1/generations/" in out
    assert "status: completed" in out
    assert "outcome: cancelled" in out or "outcome: requested" in out
    assert "outcome: already_finished" in out
    assert "total_cost_usd" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"completed: {stack.simulator_url}") and "cost $0." in last
    # The generation it waited for is in Redis, completed, with the prompt given.
    rid = out.split("Location: /v1/generations/")[1].split()[0]
    with redis.Redis.from_url(stack.settings.redis_url, decode_responses=True) as r:
        rec = read_full_sync(r, stack.settings.keys, rid)
    assert rec["status"] == "completed" and "a kite over dunes" in rec["request"]


@pytest.mark.timeout(30)
def test_curl_script_fails_on_a_refused_key(stack: Stack) -> None:
    """With a key the gateway refuses, `curl.sh` stops at the first call with a non-zero exit
    and the gateway's error on stderr."""
    _require("curl")
    bash = shutil.which("bash")
    assert bash
    result = _run([bash, str(CURL_SCRIPT)], stack.client_env(GENQUEUE_API_KEY="wrong-key"))
    assert result.returncode != 0
    assert "error: POST /v1/generations" in result.stderr and "not accepted" in result.stderr


# --- examples/async_batch.py ----------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_async_batch_waits_for_every_generation_and_prints_the_cost(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`async_batch.main` submits N generations with the async client, waits for all of them
    concurrently, prints each and the total cost, and returns 0; rerun with the same batch id
    it buys nothing new."""
    batch = load_example("async_batch")
    monkeypatch.setenv("GENQUEUE_REDIS_URL", stack.settings.redis_url)
    monkeypatch.setenv("GENQUEUE_KEY_PREFIX", stack.settings.key_prefix)
    before = stack.sim_stats()["jobs_created"]
    batch_id = f"b-{uuid.uuid4().hex[:8]}"
    assert await batch.main(["-n", "4", "--batch-id", batch_id, "--timeout", "45"]) == 0
    out = capsys.readouterr().out
    assert out.count(" completed ") == 4, out
    total = Decimal(out.strip().splitlines()[-1].removeprefix("total cost: $"))
    assert total > 0
    assert stack.sim_stats()["jobs_created"] == before + 4  # type: ignore[operator]
    assert await batch.main(["-n", "4", "--batch-id", batch_id, "--timeout", "45"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"total cost: ${total}"
    assert stack.sim_stats()["jobs_created"] == before + 4  # type: ignore[operator]
