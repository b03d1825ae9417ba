"""Settings and worker config: typed from the environment, refusing unsafe combinations."""

import pytest

from genqueue.producer.settings import Settings, redact_url
from genqueue.worker.config import UpstreamTimeoutSettings, WorkerConfig


def test_settings_from_env_are_typed() -> None:
    """GENQUEUE_* variables override defaults with the defaults' types."""
    s = Settings.from_env(
        {"GENQUEUE_REDIS_URL": "redis://r:1/2", "GENQUEUE_RETENTION_S": "60", "OTHER": "x"}
    )
    assert s.redis_url == "redis://r:1/2" and s.retention_s == 60.0


def test_bad_env_value_names_the_variable() -> None:
    """An unparseable value names its variable."""
    with pytest.raises(ValueError, match="GENQUEUE_RETENTION_S"):
        Settings.from_env({"GENQUEUE_RETENTION_S": "soon"})


def test_worker_config_reads_api_key_and_upstream_without_showing_the_key() -> None:
    """TOGETHER_API_KEY is read but never shown in the config's repr."""
    cfg = WorkerConfig.from_env(
        {
            "TOGETHER_API_KEY": "sk-secret-123",
            "GENQUEUE_UPSTREAM_URL": "http://sim:8090",
            "GENQUEUE_MAX_INFLIGHT": "7",
            "GENQUEUE_TIME_SCALE": "0.5",
        }
    )
    assert cfg.api_key == "sk-secret-123" and cfg.upstream_url == "http://sim:8090"
    assert cfg.max_inflight == 7 and cfg.time_scale == 0.5
    assert "sk-secret-123" not in repr(cfg)


def test_http_timeouts_must_fit_inside_the_task_timeout() -> None:
    """The create call must end before its task can time out (rule 3)."""
    with pytest.raises(ValueError, match="task_timeout_s"):
        WorkerConfig(
            upstream_timeouts=UpstreamTimeoutSettings(connect_s=10, read_s=25), task_timeout_s=30
        )


def test_lease_outlives_the_task() -> None:
    """The submit lease is longer than any create attempt can run (rule 1)."""
    cfg = WorkerConfig()
    assert (
        cfg.lease_s
        > cfg.task_timeout_s
        > cfg.upstream_timeouts.connect_s + cfg.upstream_timeouts.read_s
    )


def test_redact_url_hides_password() -> None:
    """Redis URLs are logged without their password."""
    assert redact_url("rediss://u:pw@h:6380/0") == "rediss://u:***@h:6380/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GENQUEUE_ADAPTIVE_CONFIDENCE": "0.3"}, "adaptive_confidence"),
        ({"GENQUEUE_ADAPTIVE_CONFIDENCE": "1"}, "adaptive_confidence"),
        ({"GENQUEUE_ADAPTIVE_SAMPLES": "5"}, "adaptive_samples"),
    ],
)
def test_schedule_sample_settings_are_checked(env: dict[str, str], message: str) -> None:
    """A confidence outside [0.5, 1) or a sample smaller than the completions needed before
    the sample is used is refused at start-up."""
    with pytest.raises(ValueError, match=message):
        WorkerConfig.from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GENQUEUE_MAX_JOBS": "1.5"}, r"GENQUEUE_MAX_JOBS: cannot parse '1.5' \(an integer\)"),
        ({"GENQUEUE_POLL_SCHEDULE": "sometimes"}, r"GENQUEUE_POLL_SCHEDULE: .*adaptive\|fixed"),
        ({"GENQUEUE_WEBHOOK_TIMEOUT_S": "soon"}, r"GENQUEUE_WEBHOOK_TIMEOUT_S: .*\(a number\)"),
    ],
)
def test_an_unparsable_variable_says_what_was_expected(env: dict[str, str], message: str) -> None:
    """A value of the wrong type names its variable and the type or choices expected."""
    with pytest.raises(ValueError, match=message):
        WorkerConfig.from_env(env)
