"""The official ``together`` SDK (v3.1), unchanged, against the simulator served by uvicorn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import together
from together import Together
from together.types import VideoJob

from genqueue.simulator import SimConfig, SimServer, run_in_thread, running_simulator

API_KEY = "test-key"
MINIMAX = "minimax/video-01-director"
# 150 s median * 0.001: a job completes in a fraction of a second of wall time.
FAST = {"time_scale": 0.001, "failure_share": 0.0, "api_key": API_KEY}


@pytest.fixture(scope="module")
def sdk_server() -> Iterator[SimServer]:
    """A real simulator (sdk shape) on a free port for this module."""
    with running_simulator(SimConfig(**FAST)) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture(scope="module")
def legacy_server() -> Iterator[SimServer]:
    """A real simulator answering in the legacy shape."""
    with running_simulator(SimConfig(shape="legacy", **FAST)) as server:  # type: ignore[arg-type]
        yield server


def client(base_url: str, api_key: str = API_KEY, **kwargs: Any) -> Together:
    # max_retries=0: the SDK's own retries would otherwise hide errors from these tests.
    return Together(base_url=base_url, api_key=api_key, max_retries=0, **kwargs)


def wait_until_terminal(sdk: Together, job_id: str, timeout: float = 10.0) -> VideoJob:
    deadline = time.monotonic() + timeout
    while True:
        job = sdk.videos.retrieve(job_id)
        if job.status in ("completed", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def ground_truth(server: SimServer, job_id: str) -> dict[str, Any]:
    jobs = httpx.get(f"{server.base_url}/_sim/jobs").json()
    return next(j for j in jobs if j["id"] == job_id)


def test_sdk_create_and_retrieve_until_completed(sdk_server: SimServer) -> None:
    """The SDK creates, polls to completion, and reads id, status, video_url and the true cost."""
    with client(sdk_server.base_url) as sdk:
        created = sdk.videos.create(
            model=MINIMAX, prompt="a lighthouse at dawn", width=1366, height=768, seconds="5"
        )
        assert isinstance(created, VideoJob)
        assert created.status in ("queued", "in_progress")
        job = wait_until_terminal(sdk, created.id)
    assert job.id == created.id
    assert job.status == "completed"
    assert job.outputs is not None
    assert job.outputs.video_url.startswith(sdk_server.base_url + "/")
    download = httpx.get(job.outputs.video_url, follow_redirects=True)
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    assert len(download.content) > 1000
    truth = ground_truth(sdk_server, job.id)
    assert truth["status"] == "completed"
    # The SDK types cost as int but builds models leniently, so 0.28 arrives as a float.
    assert Decimal(str(job.outputs.cost)) * 1_000_000 == truth["cost_micro_usd"]
    assert isinstance(job.created_at, float) and isinstance(job.completed_at, float)
    assert (job.seconds, job.size) == ("5", "1366x768")
    # Nothing beyond the spec's VideoJob reaches the SDK (its models keep unknown keys).
    assert not job.model_extra


def test_sdk_base_url_is_the_bare_origin(sdk_server: SimServer) -> None:
    """The SDK appends /v2/videos to base_url itself: a base_url ending in /v1 gets 404."""
    with client(sdk_server.base_url + "/v1") as sdk, pytest.raises(together.NotFoundError):
        sdk.videos.retrieve("anything")
    with client(sdk_server.base_url + "/") as sdk:
        job = sdk.videos.create(model=MINIMAX, prompt="x")
        assert sdk.videos.retrieve(job.id).id == job.id


def test_sdk_sees_api_errors(sdk_server: SimServer) -> None:
    """Bad key, unknown model and unknown id surface as the SDK's typed errors."""
    with (
        client(sdk_server.base_url, api_key="wrong") as sdk,
        pytest.raises(together.AuthenticationError),
    ):
        sdk.videos.create(model=MINIMAX, prompt="x")
    with client(sdk_server.base_url) as sdk:
        with pytest.raises(together.BadRequestError) as bad:
            sdk.videos.create(model="acme/not-a-model", prompt="x")
        assert isinstance(bad.value.body, dict) and bad.value.body["error"]["param"] == "model"
        with pytest.raises(together.NotFoundError):
            sdk.videos.retrieve("019a0068-0000-7000-8000-000000000000")


def test_sdk_strict_validation_rejects_real_world_values(sdk_server: SimServer) -> None:
    """With _strict_response_validation the SDK rejects a queued job (status not in its Literal)."""
    with (
        client(sdk_server.base_url, _strict_response_validation=True) as strict,
        pytest.raises(together.APIResponseValidationError),
    ):
        strict.videos.create(model=MINIMAX, prompt="x")


def test_sdk_with_legacy_shape_is_lenient(legacy_server: SimServer) -> None:
    """The SDK takes the legacy shape unvalidated: id, status, outputs work; times stay strings."""
    with client(legacy_server.base_url) as sdk:
        created = sdk.videos.create(model=MINIMAX, prompt="a lighthouse at dawn")
        # "queued" is outside the SDK's status Literal, yet it is passed through as sent.
        assert str(created.status) == "queued"
        job = wait_until_terminal(sdk, created.id)
    assert job.id == created.id
    assert job.status == "completed"
    assert job.outputs is not None
    assert httpx.get(job.outputs.video_url, follow_redirects=True).status_code == 200
    truth = ground_truth(legacy_server, job.id)
    assert Decimal(str(job.outputs.cost)) * 1_000_000 == truth["cost_micro_usd"]
    # Fields the legacy shape lacks are None; its RFC 3339 times are kept as raw strings.
    assert isinstance(job.created_at, str) and job.created_at.endswith("Z")
    assert (job.seconds, job.size, job.completed_at, job.object) == (None, None, None, None)
    # Legacy-only fields survive as pydantic extras.
    assert job.model_extra is not None
    assert {"info", "inputs", "claimed_at", "done_at"} <= set(job.model_extra)
    assert job.model_extra["claimed_at"] != "0001-01-01T00:00:00Z"


def test_run_in_thread_serves_until_stopped() -> None:
    """run_in_thread answers on a free port at once and refuses connections after stop()."""
    base_url, stop = run_in_thread(SimConfig(), port=0)
    try:
        assert httpx.get(f"{base_url}/_sim/stats").json()["jobs_created"] == 0
    finally:
        stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/_sim/stats")
