"""The job-object parser: both upstream shapes, exact money, and no exception but its own."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genqueue.worker.upstream import (
    UpstreamJob,
    UpstreamProtocolError,
    cost_to_micro_usd,
    normalize_status,
    parse_job,
)

# The documented example from upstream-together.md, verbatim except for the doc's "..." elision
# inside "inputs" (which is not JSON).
LEGACY_EXAMPLE = """
{"id": "019a0068-794a-7213-90f6-cc4eb62e3da7", "model": "minimax/video-01-director",
 "status": "completed",
 "info": {"user_id": "66f0...", "errors": null},
 "inputs": {"prompt": "...", "width": 1366, "height": 768, "seconds": null, "seed": null},
 "outputs": {"cost": 0.28, "video_url": "https://api.together.ai/shrt/DwlaBdSakNRFlBxN"},
 "created_at": "2025-10-20T06:57:18.154804Z", "claimed_at": "0001-01-01T00:00:00Z",
 "done_at": "2025-10-20T07:00:12.234472Z"}
"""

# The SDK v3.1 ``VideoJob`` shape (together/types/video_job.py), completed.
SDK_COMPLETED = """
{"id": "019a0068-794a-7213-90f6-cc4eb62e3da7", "object": "video",
 "model": "minimax/video-01-director", "status": "completed",
 "created_at": 1760943438.154804, "completed_at": 1760943612.234472,
 "seconds": "5", "size": "1366x768", "error": null,
 "outputs": {"cost": 0.28, "video_url": "https://api.together.ai/shrt/DwlaBdSakNRFlBxN"}}
"""


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _load(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def test_legacy_documented_example() -> None:
    """The documented legacy example parses to its fields, cost exactly 280000 micro-dollars."""
    job = parse_job(_load(LEGACY_EXAMPLE))
    assert job == UpstreamJob(
        id="019a0068-794a-7213-90f6-cc4eb62e3da7",
        status="completed",
        raw_status="completed",
        model="minimax/video-01-director",
        created_at=_utc("2025-10-20T06:57:18.154804"),
        started_at=None,
        done_at=_utc("2025-10-20T07:00:12.234472"),
        cost_micro_usd=280_000,
        video_url="https://api.together.ai/shrt/DwlaBdSakNRFlBxN",
        error=None,
    )
    assert job.is_terminal


def test_legacy_claimed_at_set_is_started_at() -> None:
    """A real legacy claimed_at (not the zero time) becomes started_at."""
    payload = _load(LEGACY_EXAMPLE)
    payload["claimed_at"] = "2025-10-20T06:57:20.5Z"
    assert parse_job(payload).started_at == _utc("2025-10-20T06:57:20.5")


def test_sdk_completed_example() -> None:
    """The SDK v3.1 completed shape parses to the same facts as the legacy one."""
    job = parse_job(_load(SDK_COMPLETED))
    assert job.status == "completed"
    assert job.created_at == pytest.approx(1760943438.154804)
    assert job.done_at == pytest.approx(1760943612.234472)
    assert job.started_at is None
    assert job.cost_micro_usd == 280_000
    assert job.video_url == "https://api.together.ai/shrt/DwlaBdSakNRFlBxN"
    assert job.error is None


def test_cost_parsed_from_plain_floats_is_still_exact() -> None:
    """A payload decoded with plain floats gives the same exact micro-dollars (via repr)."""
    assert parse_job(json.loads(SDK_COMPLETED)).cost_micro_usd == 280_000


def test_sdk_failed() -> None:
    """An SDK-shape failure carries error.message and is terminal without outputs."""
    job = parse_job(
        {
            "id": "v-1",
            "status": "failed",
            "created_at": 1760943438,
            "completed_at": 1760943500.5,
            "error": {"message": "prompt rejected by safety filter", "code": "content_policy"},
        }
    )
    assert (job.status, job.error, job.done_at, job.cost_micro_usd, job.video_url) == (
        "failed",
        "prompt rejected by safety filter",
        1760943500.5,
        None,
        None,
    )
    assert job.is_terminal


def test_sdk_in_progress() -> None:
    """An in-progress job has no outputs and is not terminal; started_at is used when sent."""
    job = parse_job(
        {
            "id": "v-2",
            "object": "video",
            "model": "google/veo-3.0",
            "status": "in_progress",
            "created_at": 1760943438.0,
            "started_at": 1760943440.25,
            "completed_at": None,
            "seconds": "8",
            "size": "1280x720",
            "error": None,
            "outputs": None,
        }
    )
    assert (job.status, job.started_at, job.done_at, job.is_terminal) == (
        "in_progress",
        1760943440.25,
        None,
        False,
    )


def test_unknown_status_is_kept_raw() -> None:
    """An unknown status normalizes to "unknown", keeps raw_status, and is not terminal."""
    job = parse_job({"id": "v-3", "status": "warming_up"})
    assert (job.status, job.raw_status, job.is_terminal) == ("unknown", "warming_up", False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("queued", "queued"),
        ("IN_PROGRESS", "in_progress"),
        ("in-progress", "in_progress"),
        (" completed ", "completed"),
        ("canceled", "cancelled"),
        ("cancelled", "cancelled"),
        ("failed", "failed"),
        ("unknown", "unknown"),
        ("succeeded", "unknown"),
        ("", "unknown"),
    ],
)
def test_normalize_status(raw: str, expected: str) -> None:
    """Status strings normalize by case, separators and the US spelling of cancelled only."""
    assert normalize_status(raw) == expected


def test_completed_without_video_url() -> None:
    """A completed job without a video_url is still completed, with video_url None."""
    job = parse_job({"id": "v-4", "status": "completed", "outputs": {"cost": 1}})
    assert (job.status, job.video_url, job.cost_micro_usd) == ("completed", None, 1_000_000)


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        (None, None),
        ("out of memory", "out of memory"),
        (["first", {"message": "second"}], "first; second"),
        ({"message": "bad frame"}, "bad frame"),
        ({"stage": "decode", "reason": 7}, '{"reason": 7, "stage": "decode"}'),
        ([], None),
        ({}, None),
        ("x" * 2000, "x" * 499 + "…"),
    ],
)
def test_legacy_info_errors_shapes(errors: object, expected: str | None) -> None:
    """info.errors of any shape (null, string, list, dict) becomes one readable string."""
    job = parse_job({"id": "v-5", "status": "failed", "info": {"errors": errors}})
    assert job.error == expected


@pytest.mark.parametrize(
    ("cost", "micro"),
    [
        (Decimal("0.28"), 280_000),
        (0.28, 280_000),
        (0.1 + 0.2, 300_000),
        (Decimal("0.0000005"), 1),
        (Decimal("0.0000004999"), 0),
        (Decimal("1.2345675"), 1_234_568),
        ("0.28", 280_000),
        (3, 3_000_000),
        (0, 0),
        (None, None),
        (Decimal("1000000"), 1_000_000_000_000),
    ],
)
def test_cost_to_micro_usd(cost: object, micro: int | None) -> None:
    """Costs convert to integer micro-dollars exactly, rounding half up."""
    assert cost_to_micro_usd(cost) == micro


@pytest.mark.parametrize(
    "cost",
    [-0.01, Decimal("NaN"), float("inf"), Decimal("1000000.01"), "cheap", True, [1], {"usd": 1}],
)
def test_bad_cost_keeps_the_completed_job_with_cost_unknown(cost: object) -> None:
    """A negative, non-finite, absurd or non-numeric cost leaves the job completed with its
    URL, the cost None (unknown, never zero) and the reason kept."""
    job = parse_job(
        {"id": "v-6", "status": "completed", "outputs": {"cost": cost, "video_url": "https://v/x"}}
    )
    assert (job.status, job.video_url, job.cost_micro_usd) == ("completed", "https://v/x", None)
    assert job.cost_unknown and job.cost_problem


def test_missing_cost_of_a_completed_job_is_unknown() -> None:
    """A completed job without a cost is marked cost-unknown; a failed one is not."""
    assert parse_job({"id": "v-7", "status": "completed", "outputs": {}}).cost_unknown
    assert not parse_job({"id": "v-8", "status": "failed"}).cost_unknown


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "job",
        {},
        {"status": "queued"},
        {"id": "", "status": "queued"},
        {"id": "   ", "status": "queued"},
        {"id": 42, "status": "queued"},
        {"id": "v", "status": None},
        {"id": "v", "status": 3},
        {"id": "v"},
        {"id": "v", "status": "queued", "created_at": "yesterday"},
        {"id": "v", "status": "queued", "created_at": float("nan")},
        {"id": "v", "status": "queued", "done_at": [2025]},
        {"id": "v", "status": "queued", "created_at": True},
        {"id": "v", "status": "queued", "outputs": "none"},
        {"id": "v", "status": "queued", "outputs": {"video_url": 5}},
        {"id": "v", "status": "queued", "model": {"name": "m"}},
        {"id": "v", "status": "queued", "info": "x"},
        {"id": "a\nb", "status": "queued"},
        {"id": "x" * 513, "status": "queued"},
    ],
)
def test_not_a_job_object(payload: object) -> None:
    """Anything that is not a job object raises UpstreamProtocolError, labelled by operation."""
    with pytest.raises(UpstreamProtocolError) as info:
        parse_job(payload, operation="create")
    assert info.value.operation == "create"


def test_extra_and_missing_optional_fields_are_tolerated() -> None:
    """Only id and status are required; unknown fields are ignored."""
    job = parse_job({"id": "v-7", "status": "queued", "priority": 3, "x": {"y": [1]}})
    assert job == UpstreamJob(id="v-7", status="queued", raw_status="queued")


def test_timestamps_accept_offsets_nanoseconds_and_zero() -> None:
    """RFC 3339 offsets and 9-digit fractions parse; the zero time and 0 mean "not set"."""
    job = parse_job(
        {
            "id": "v-8",
            "status": "completed",
            "created_at": "2025-10-20T08:57:18.154804123+02:00",
            "claimed_at": "0001-01-01T00:00:00Z",
            "done_at": 0,
        }
    )
    assert job.created_at == _utc("2025-10-20T06:57:18.154804")
    assert (job.started_at, job.done_at) == (None, None)


# --- properties ----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)


def _containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    # A named function, not a lambda: hypothesis >= 6.150 cannot see a multi-line lambda's
    # use of its argument and fails the test with a deprecation warning.
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=12), children, max_size=4
    )


json_values = st.recursive(
    json_scalars,
    _containers,
    max_leaves=25,
)

FIELDS = [
    "id",
    "status",
    "model",
    "created_at",
    "claimed_at",
    "started_at",
    "done_at",
    "completed_at",
    "error",
    "info",
    "outputs",
]


def _check(payload: object) -> None:
    try:
        job = parse_job(payload)
    except UpstreamProtocolError:
        return
    assert isinstance(job, UpstreamJob)
    assert isinstance(job.id, str) and job.id.strip()
    assert job.status in {"queued", "in_progress", "completed", "failed", "cancelled", "unknown"}
    for value in (job.created_at, job.started_at, job.done_at):
        assert value is None or (isinstance(value, float) and math.isfinite(value))
    assert job.cost_micro_usd is None or (
        isinstance(job.cost_micro_usd, int) and 0 <= job.cost_micro_usd <= 10**12
    )
    assert job.error is None or isinstance(job.error, str)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_never_raises_anything_else(payload: object) -> None:
    """Any JSON-like value parses to a valid UpstreamJob or raises UpstreamProtocolError."""
    _check(payload)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([LEGACY_EXAMPLE, SDK_COMPLETED]),
    mutations=st.lists(
        st.tuples(
            st.sampled_from(["set", "delete", "set_output", "set_info"]),
            st.sampled_from([*FIELDS, "cost", "video_url", "errors"]),
            json_values,
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_mutated_job_never_raises_anything_else(
    base: str, mutations: list[tuple[str, str, object]]
) -> None:
    """Any mutation of a valid job object parses or raises UpstreamProtocolError, nothing else."""
    payload = copy.deepcopy(_load(base))
    for action, key, value in mutations:
        if action == "set":
            payload[key] = value
        elif action == "delete":
            payload.pop(key, None)
        elif action == "set_output" and isinstance(payload.get("outputs"), dict):
            payload["outputs"][key] = value
        elif action == "set_info" and isinstance(payload.get("info"), dict):
            payload["info"][key] = value
    _check(payload)


def test_deeply_nested_error_is_handled() -> None:
    """A pathologically nested error value is rendered or rejected, never a RecursionError."""
    deep: object = "bottom"
    for _ in range(5000):
        deep = [deep]
    _check({"id": "v", "status": "failed", "error": deep})
    nested: object = "x"
    for _ in range(5000):
        nested = {"detail": nested, "other": 1}
    _check({"id": "v", "status": "failed", "info": {"errors": nested}})
