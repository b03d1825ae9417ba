"""The ``genqueue`` command line, driven in-process with click's CliRunner on the test Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

import genqueue.cli
from genqueue.cli import main, parse_value
from genqueue.local_redis import free_port
from genqueue.producer.envconfig import setting_fields
from genqueue.producer.settings import Settings
from genqueue.worker.config import WorkerConfig

MODEL = "minimax/video-01-director"


@pytest.fixture(autouse=True)
def _no_global_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the commands from configuring process-wide logging onto CliRunner's streams."""
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """The environment that points the CLI at the test database and prefix."""
    return {
        "GENQUEUE_REDIS_URL": settings.redis_url,
        "GENQUEUE_KEY_PREFIX": settings.key_prefix,
        "TOGETHER_API_KEY": "",
    }


@pytest.fixture
def sync_redis(settings: Settings) -> Iterator[redis.Redis]:
    """A plain client on the test database."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    client.close()


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def submit_id(env: dict[str, str], *extra: str) -> str:
    result = run(env, "submit", "--model", MODEL, "--prompt", "a cat on a skateboard", *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_help_lists_every_env_var_with_defaults() -> None:
    """`genqueue --help` lists every GENQUEUE_* variable of Settings and WorkerConfig, the
    API key and the logging variables, with their defaults."""
    result = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    out = result.output
    for s in setting_fields(WorkerConfig):  # Settings is its first group
        assert s.env in out, s.attribute
    for name in ("TOGETHER_API_KEY", "GENQUEUE_LOG_LEVEL", "GENQUEUE_LOG_FORMAT"):
        assert name in out
    assert "redis://localhost:6379/0" in out
    assert "GENQUEUE_API_KEY" not in out
    for command in ("worker", "simulator", "submit", "status", "wait", "cancel", "stats", "demo"):
        assert command in out


def test_submit_with_a_bad_field_exits_2_naming_it_and_writes_nothing(
    env: dict[str, str], sync_redis: redis.Redis
) -> None:
    """An invalid request exits 2 with a message naming each bad field, and nothing reaches
    Redis."""
    result = run(
        env, "submit", "--model", MODEL, "--prompt", "x", "--param", "widht=1366",
        "--param", "height=0", "--param", "steps=5",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "widht" in result.stderr and "unknown field" in result.stderr
    assert "height" in result.stderr and "steps" in result.stderr
    assert result.stdout == ""
    assert sync_redis.dbsize() == 0


def test_submit_media_only_and_extra_body(env: dict[str, str]) -> None:
    """`submit` with only media (no --prompt) and an extra_body field is accepted, and the
    stored upstream body has the media and the extra field merged in unchanged."""
    media = '{"frame_images":[{"input_image":"https://example.com/a.png"}]}'
    result = run(
        env, "submit", "-m", "kwaivgI/kling-2.1-master", "--param", f"media={media}",
        "--param", 'extra_body={"loop":true}', "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request_id = json.loads(result.stdout)["id"]
    shown = json.loads(run(env, "status", request_id, "--json").stdout)
    assert shown["request"] == {
        "model": "kwaivgI/kling-2.1-master",
        "media": json.loads(media),
        "loop": True,
    }


def test_submit_misspelt_option_in_param_is_refused(env: dict[str, str]) -> None:
    """A misspelt genqueue option given as a field is refused, never sent upstream."""
    result = run(env, "submit", "-m", MODEL, "-p", "x", "--param", "deadline=30")
    assert result.exit_code == 2 and "deadline" in result.stderr


def test_submit_with_a_bad_option_exits_2_and_writes_nothing(
    env: dict[str, str], sync_redis: redis.Redis
) -> None:
    """A bad webhook URL is refused with exit 2 before anything is written."""
    result = run(env, "submit", "--model", MODEL, "--prompt", "x", "--webhook-url", "nope")
    assert result.exit_code == 2
    assert "webhook_url" in result.stderr
    assert sync_redis.dbsize() == 0


def test_status_of_an_unknown_id_exits_1(env: dict[str, str]) -> None:
    """`status` of an id that has no record exits 1 with a one-line message."""
    result = run(env, "status", "no-such-id")
    assert result.exit_code == 1
    assert "no request with id 'no-such-id'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cancel_of_an_unknown_id_exits_1(env: dict[str, str]) -> None:
    """`cancel` of an unknown id exits 1."""
    assert run(env, "cancel", "no-such-id").exit_code == 1


def test_stats_json_has_the_documented_shape(env: dict[str, str]) -> None:
    """`stats --json` prints Stats.to_json_dict(): counts by status, queue depth, totals."""
    submit_id(env)
    result = run(env, "stats", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {
        "requests_by_status", "tracking", "active_upstream", "inflight", "queue", "finished",
        "finished_by_outcome", "cost_usd", "total_cost_usd", "paused",
    }  # fmt: skip
    assert data["requests_by_status"]["pending"] == 1
    assert set(data["queue"]) == {"ready", "deferred", "lag_s"}
    assert data["queue"]["lag_s"] >= 0
    assert data["queue"]["ready"] + data["queue"]["deferred"] == 1
    assert data["paused"] == {}


def test_stats_table_renders_status_queue_and_pause_state(env: dict[str, str]) -> None:
    """`stats` without --json prints tables with the requests by status and the pause state."""
    submit_id(env)
    result = run(env, "stats")
    assert result.exit_code == 0, result.output
    assert "requests pending" in result.stdout
    assert "running" in result.stdout
    assert "total" in result.stdout


def test_submit_then_cancel_then_status_shows_cancelled(env: dict[str, str]) -> None:
    """A pending request cancelled from the CLI shows status `cancelled` in `status --json`."""
    request_id = submit_id(env)
    result = run(env, "cancel", request_id)
    assert result.exit_code == 0, result.output
    assert "cancelled" in result.stdout
    status = run(env, "status", request_id, "--json")
    assert status.exit_code == 0
    data = json.loads(status.stdout)
    assert data["id"] == request_id
    assert data["status"] == "cancelled"
    again = run(env, "cancel", request_id, "--json")
    assert json.loads(again.stdout)["outcome"] == "already_finished"


def test_params_are_typed_and_metadata_kept_as_strings(env: dict[str, str]) -> None:
    """--param values are parsed as ints, floats and booleans; --metadata values stay strings."""
    request_id = submit_id(
        env, "--param", "width=1366", "--param", "height=768", "--param", "guidance_scale=7.5",
        "--param", "generate_audio=true", "--param", "seconds=5", "--param", "ratio=16:9",
        "--metadata", "user=42", "--metadata", "team=video",
    )  # fmt: skip
    data = json.loads(run(env, "status", request_id, "--json").stdout)
    assert data["request"]["width"] == 1366
    assert data["request"]["height"] == 768
    assert data["request"]["guidance_scale"] == 7.5
    assert data["request"]["generate_audio"] is True
    assert data["request"]["seconds"] == "5"
    assert data["request"]["ratio"] == "16:9"
    assert data["metadata"] == {"user": "42", "team": "video"}


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1366", 1366),
        ("-3", -3),
        ("7.5", 7.5),
        ("1e3", 1000.0),
        ("true", True),
        ("False", False),
        ("null", None),
        ("16:9", "16:9"),
        ("720p", "720p"),
        ("nan", "nan"),
        ('"123"', "123"),
        ('{"image_url": "https://x/y.png"}', {"image_url": "https://x/y.png"}),
        ("{not json", "{not json"),
        ("", ""),
    ],
)
def test_parse_value_types_values(raw: str, value: Any) -> None:
    """A --param value becomes an int, float, bool, None, JSON object or else a string."""
    assert parse_value(raw) == value
    assert type(parse_value(raw)) is type(value)


@pytest.mark.parametrize(
    "args",
    [
        ["--param", "width"],
        ["--param", "=5"],
        ["--param", "width=1", "--param", "width=2"],
        ["--param", "model=other"],
        ["--metadata", "novalue"],
    ],
)
def test_malformed_params_exit_2(
    env: dict[str, str], sync_redis: redis.Redis, args: list[str]
) -> None:
    """A malformed, repeated or reserved KEY=VALUE is a usage error (exit 2), nothing written."""
    result = run(env, "submit", "--model", MODEL, "--prompt", "x", *args)
    assert result.exit_code == 2
    assert sync_redis.dbsize() == 0


def test_submit_json_prints_the_id(env: dict[str, str]) -> None:
    """`submit --json` prints {"id": ...}; the same idempotency key gives the same id."""
    first = run(env, "submit", "-m", MODEL, "-p", "x", "--idempotency-key", "k1", "--json")
    second = run(env, "submit", "-m", MODEL, "-p", "x", "--idempotency-key", "k1", "--json")
    assert first.exit_code == second.exit_code == 0
    assert json.loads(first.stdout)["id"] == json.loads(second.stdout)["id"]


def test_wait_times_out_with_exit_3(env: dict[str, str]) -> None:
    """`wait --timeout` on a request no worker picks up exits 3 naming its status."""
    request_id = submit_id(env)
    result = run(env, "wait", request_id, "--timeout", "0.3")
    assert result.exit_code == 3
    assert "pending" in result.stderr


def test_wait_on_a_cancelled_request_exits_4(env: dict[str, str]) -> None:
    """`wait` on a request that finished without completing prints it and exits 4."""
    request_id = submit_id(env)
    run(env, "cancel", request_id)
    result = run(env, "wait", request_id, "--json")
    assert result.exit_code == 4
    assert json.loads(result.stdout)["status"] == "cancelled"


def test_status_prints_a_readable_record(env: dict[str, str]) -> None:
    """`status` without --json prints the record's fields as a table."""
    request_id = submit_id(env, "--metadata", "user=7")
    result = run(env, "status", request_id)
    assert result.exit_code == 0
    assert request_id in result.stdout
    assert "pending" in result.stdout
    assert MODEL in result.stdout


def test_unreachable_redis_exits_1_with_a_redacted_url() -> None:
    """With Redis unreachable a command exits 1 with one line naming the URL, password
    hidden, and no traceback."""
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    result = run({"GENQUEUE_REDIS_URL": url}, "stats")
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.stderr
    assert "***" in result.stderr
    assert "s3cret-pw" not in result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_configuration_exits_2() -> None:
    """An unparsable GENQUEUE_* value is a configuration error (exit 2) naming the variable."""
    result = run({"GENQUEUE_WAIT_RECHECK_S": "soon"}, "stats")
    assert result.exit_code == 2
    assert "GENQUEUE_WAIT_RECHECK_S" in result.stderr


def test_worker_refuses_to_start_without_an_api_key(env: dict[str, str]) -> None:
    """`worker` with TOGETHER_API_KEY empty exits 2 with one clear line."""
    result = run(env, "worker")
    assert result.exit_code == 2
    assert "TOGETHER_API_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_simulator_rejects_an_invalid_option() -> None:
    """`simulator --shape` accepts only sdk|legacy (exit 2 otherwise)."""
    result = CliRunner().invoke(main, ["simulator", "--shape", "xml"])
    assert result.exit_code == 2


def test_resume_ends_a_pause(settings: Settings) -> None:
    """`genqueue resume` ends a circuit-breaker pause that `stats` showed."""
    r = redis.Redis.from_url(settings.redis_url)
    r.hset(settings.keys.pause, mapping={"reason": "HTTP 402", "code": "402", "until_ms": "1"})
    r.close()
    env = {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_KEY_PREFIX": settings.key_prefix}
    runner = CliRunner()
    shown = runner.invoke(main, ["stats", "--json"], env=env)
    assert json.loads(shown.output)["paused"]["code"] == "402"
    result = runner.invoke(main, ["resume"], env=env)
    assert result.exit_code == 0 and "resumed" in result.output
    assert json.loads(runner.invoke(main, ["stats", "--json"], env=env).output)["paused"] == {}
