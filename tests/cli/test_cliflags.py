"""Settings as flags with environment fallbacks, and grouped settings read by their old names."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner, Result

import genqueue.cli
import genqueue.gateway
import genqueue.worker.app
from genqueue.cli import ENV_API_KEYS, main
from genqueue.cliflags import settings_options
from genqueue.envhelp import env_vars
from genqueue.gateway.auth import ENV_API_KEYS as GATEWAY_ENV_API_KEYS
from genqueue.producer.envconfig import (
    SettingField,
    meta,
    replace_settings,
    setting_fields,
    values_from_env,
)
from genqueue.producer.settings import Settings
from genqueue.worker.config import WorkerConfig

#: ``genqueue --help``'s variables before the settings were grouped (collected at 99f51b3).
BEFORE = (Path(__file__).parent / "fixtures" / "env_names_before_grouping.txt").read_text()
#: Settings retired since, on purpose: ``GENQUEUE_CAP_WAIT_S`` (how often a request at the cap
#: asked again; admission replaced the asking: a set variable is now ignored).
RETIRED = {"GENQUEUE_CAP_WAIT_S"}
NAMES_BEFORE = [n for n in BEFORE.split() if n not in RETIRED]


@pytest.fixture(autouse=True)
def _no_global_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[WorkerConfig]:
    """The configs `genqueue worker` would have run a worker with (none is started)."""
    configs: list[WorkerConfig] = []

    async def fake_run_worker(cfg: WorkerConfig) -> None:
        configs.append(cfg)

    monkeypatch.setattr(genqueue.worker.app, "run_worker", fake_run_worker)
    return configs


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def clean_env(**extra: str) -> dict[str, str]:
    """Every known variable unset (CliRunner's ``None`` unsets), plus ``extra``."""
    env: dict[str, Any] = {s.env: None for s in setting_fields(WorkerConfig)}
    env.update(extra)
    return env


def _worker_help() -> str:
    result = CliRunner().invoke(main, ["worker", "--help"], terminal_width=400)
    assert result.exit_code == 0
    return " ".join(result.output.split())  # click wraps; the env var hint may span lines


def test_worker_help_lists_every_setting_with_its_variable() -> None:
    """`genqueue worker --help` has a flag for every setting, naming its variable."""
    text = _worker_help()
    for s in setting_fields(WorkerConfig):
        assert f"{s.flag} " in text, s.attribute
        assert f"[env var: {s.env}]" in text, s.attribute
    assert "--log-level" in text and "GENQUEUE_LOG_LEVEL" in text
    assert "--together-api-key" in text and "`ps`" in text  # the secret warns


def test_every_variable_named_before_grouping_is_still_listed_and_a_worker_flag() -> None:
    """Grouping the settings changed no variable: each name `genqueue --help` listed before is
    still listed, and is a flag's fallback in `genqueue worker --help`."""
    listed = {v.name for v in env_vars()}
    text = _worker_help()
    assert len(NAMES_BEFORE) > 50
    for name in NAMES_BEFORE:
        assert name in listed, name
        assert f"[env var: {name}]" in text, name


def _candidates(s: SettingField) -> list[Any]:
    """Values to try for a setting, other than its default (some ranges are narrow)."""
    d = s.default
    if s.choices:
        return [c for c in s.choices if c != d]
    if s.hint is bool:
        return [not d]
    if s.hint is int:
        return [d * 2, d + 1, max(0, d - 1)]
    if s.hint is float:
        return [d * 2, d / 2, d + 1, d + (1 - d) / 2]
    return ["sample-value"]


@pytest.mark.parametrize("name", NAMES_BEFORE)
def test_every_variable_named_before_grouping_is_still_read(
    name: str, started: list[WorkerConfig]
) -> None:
    """Setting a variable named before the settings were grouped changes the setting it named,
    wherever that setting now sits: in ``WorkerConfig.from_env`` and in `genqueue worker`."""
    fields = {s.env: s for s in setting_fields(WorkerConfig)}
    if name not in fields:
        assert name in ("GENQUEUE_LOG_LEVEL", "GENQUEUE_LOG_FORMAT")  # read by genqueue.logs
        return
    s = fields[name]
    for value in _candidates(s):
        if value == s.default:
            continue
        try:
            cfg = WorkerConfig.from_env({name: str(value)})
        except ValueError:
            continue  # out of this setting's range: try the next candidate
        env = {**clean_env(TOGETHER_API_KEY="k"), name: str(value)}
        result = invoke(env, "worker")
        assert result.exit_code == 0, result.output
        for config in (cfg, started[0]):
            got: Any = config
            for part in s.path:
                got = getattr(got, part)
            assert got == value, s.attribute
        return
    pytest.fail(f"no candidate value accepted for {name}")


def test_grouped_settings_are_typed_frozen_objects() -> None:
    """The schedule, webhook, download and timeout settings are frozen groups read from their
    old variables."""
    cfg = WorkerConfig.from_env(
        {
            "GENQUEUE_POLL_SCHEDULE": "fixed",
            "GENQUEUE_CONNECT_TIMEOUT_S": "2",
            "GENQUEUE_WEBHOOK_SECRET": "whsec_abc",
            "GENQUEUE_DOWNLOAD_DIR": "/tmp/v",
        }
    )
    assert cfg.schedule.mode == "fixed" and cfg.upstream_timeouts.connect_s == 2.0
    assert cfg.webhooks.secret == "whsec_abc" and cfg.downloads.dir == "/tmp/v"
    assert "whsec_abc" not in repr(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.webhooks.retry_s = 1.0  # type: ignore[misc]


def test_a_flag_beats_the_environment(started: list[WorkerConfig]) -> None:
    """A flag wins over its variable, for flat and grouped settings and the API key."""
    env = clean_env(
        GENQUEUE_MAX_JOBS="7",
        GENQUEUE_WEBHOOK_RETRY_S="9",
        TOGETHER_API_KEY="from-env",
    )
    result = invoke(
        env,
        "worker",
        "--max-jobs",
        "3",
        "--webhook-retry-s",
        "1.5",
        "--together-api-key",
        "from-flag",
    )
    assert result.exit_code == 0, result.output
    (cfg,) = started
    assert cfg.max_jobs == 3 and cfg.webhooks.retry_s == 1.5 and cfg.api_key == "from-flag"


def test_the_environment_is_used_without_the_flag(started: list[WorkerConfig]) -> None:
    """Without its flag a setting comes from its variable; with neither, the default."""
    env = clean_env(
        GENQUEUE_MAX_JOBS="7",
        GENQUEUE_POLL_FLOOR_S="2.5",
        GENQUEUE_READ_TIMEOUT_S="12",
        TOGETHER_API_KEY="k",
    )
    result = invoke(env, "worker")
    assert result.exit_code == 0, result.output
    (cfg,) = started
    assert cfg.max_jobs == 7 and cfg.schedule.poll_floor_s == 2.5
    assert cfg.upstream_timeouts.read_s == 12.0 and cfg.api_key == "k"
    assert cfg.downloads.retries == WorkerConfig().downloads.retries  # neither: the default


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({"GENQUEUE_MAX_JOBS": "many"}, []),
        ({}, ["--max-jobs", "many"]),
    ],
)
def test_a_bad_value_is_refused_naming_flag_and_variable(
    started: list[WorkerConfig], env: dict[str, str], args: list[str]
) -> None:
    """An unparsable value, from the flag or the variable, exits 2 naming both."""
    result = invoke(clean_env(TOGETHER_API_KEY="k", **env), "worker", *args)
    assert result.exit_code == 2
    assert "--max-jobs" in result.stderr and "GENQUEUE_MAX_JOBS" in result.stderr
    assert started == []


def test_an_out_of_range_value_is_refused_naming_flag_and_variable(
    started: list[WorkerConfig],
) -> None:
    """A well-typed value the config refuses exits 2 naming the flag and the variable."""
    result = invoke(clean_env(TOGETHER_API_KEY="k"), "worker", "--poll-jitter", "2")
    assert result.exit_code == 2
    assert "poll_jitter must be in [0, 1)" in result.stderr
    assert "--poll-jitter/GENQUEUE_POLL_JITTER" in result.stderr
    assert started == []


@dataclasses.dataclass(frozen=True)
class Extra:
    #: A brand-new grouped setting.
    limit: int = 1


@dataclasses.dataclass(frozen=True)
class Config:
    #: A brand-new flat setting.
    enabled: bool = False
    extra: Extra = dataclasses.field(default_factory=Extra, metadata=meta(env_prefix="EXTRA_"))


def test_a_new_setting_gets_its_flag_without_touching_the_cli() -> None:
    """Flags come from the dataclasses: a new field, in a group or not, is a flag at once."""

    @click.command()
    @settings_options(Config)
    def cmd(config: Config) -> None:
        click.echo(f"{config.enabled} {config.extra.limit}")

    result = CliRunner().invoke(cmd, ["--enabled", "yes"], env={"GENQUEUE_EXTRA_LIMIT": "4"})
    assert result.output.strip() == "True 4"
    help_text = CliRunner().invoke(cmd, ["--help"], terminal_width=400).output
    assert "--extra-limit" in help_text and "GENQUEUE_EXTRA_LIMIT" in help_text
    assert "A brand-new grouped setting." in help_text


def test_replace_settings_takes_setting_names() -> None:
    """Settings are replaced by their names, each group rebuilt with all its new values."""
    cfg = replace_settings(
        WorkerConfig(), {"poll_floor_s": 40.0, "poll_cap_s": 50.0, "webhook_secret": "s"}
    )
    assert (cfg.schedule.poll_floor_s, cfg.schedule.poll_cap_s) == (40.0, 50.0)
    assert cfg.webhooks.secret == "s"
    with pytest.raises(TypeError, match="no setting"):
        replace_settings(WorkerConfig(), {"poll_flor_s": 1.0})
    assert values_from_env(Settings, {"GENQUEUE_RETENTION_S": ""}) == {}


def test_gateway_takes_settings_and_api_keys_as_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """`genqueue gateway` reads its settings and API keys from flags over variables."""
    served: list[tuple[Settings, list[str]]] = []

    def fake_serve(settings: Settings, host: str, port: int, keys: Any, **_: Any) -> None:
        served.append((settings, list(keys)))

    monkeypatch.setattr(genqueue.gateway, "serve", fake_serve)
    env = clean_env(GENQUEUE_KEY_PREFIX="from-env", GENQUEUE_API_KEYS="a,b")
    result = invoke(env, "gateway", "--key-prefix", "from-flag")
    assert result.exit_code == 0, result.output
    assert served[0][0].key_prefix == "from-flag" and served[0][1] == ["a", "b"]
    assert ENV_API_KEYS == GATEWAY_ENV_API_KEYS


def test_exporter_help_lists_the_producer_settings() -> None:
    """`genqueue exporter` takes the producer settings (e.g. --redis-url) as flags."""
    out = CliRunner().invoke(main, ["exporter", "--help"], terminal_width=400).output
    for s in setting_fields(Settings):
        assert s.flag in out and s.env in out


def test_submit_field_flags_reach_the_request(settings: Settings) -> None:
    """`submit --width --seconds --negative-prompt ...` put typed fields into the request."""
    env = {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_KEY_PREFIX": settings.key_prefix}
    result = invoke(
        env,
        "submit",
        "-m",
        "minimax/video-01-director",
        "-p",
        "a cat",
        "--width",
        "1280",
        "--height",
        "720",
        "--seconds",
        "6",
        "--fps",
        "24",
        "--steps",
        "30",
        "--seed",
        "42",
        "--negative-prompt",
        "blur",
        "--output-format",
        "WEBM",
        "--generate-audio",
        "true",
        "--media",
        '{"frame_images": []}',
        "--param",
        "guidance_scale=7.5",
    )
    assert result.exit_code == 0, result.output
    rid = result.stdout.strip()
    status = invoke(env, "status", rid, "--json")
    request = json.loads(status.stdout)["request"]
    assert request["width"] == 1280 and request["height"] == 720 and request["seconds"] == "6"
    assert request["fps"] == 24 and request["steps"] == 30 and request["seed"] == 42
    assert request["negative_prompt"] == "blur" and request["output_format"] == "WEBM"
    assert request["generate_audio"] is True and request["media"] == {"frame_images": []}
    assert request["guidance_scale"] == 7.5


def test_submit_refuses_a_field_given_by_flag_and_param(settings: Settings) -> None:
    """A field given both as its flag and as --param exits 2 and writes nothing."""
    env = {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_KEY_PREFIX": settings.key_prefix}
    result = invoke(
        env, "submit", "-m", "m/x", "-p", "a cat", "--width", "640", "--param", "width=800"
    )
    assert result.exit_code == 2 and "--width" in result.stderr
    r = redis.Redis.from_url(settings.redis_url)
    assert r.keys(settings.key_prefix + "*") == []
    r.close()


def test_simulator_help_names_variables_it_reads() -> None:
    """Each variable `genqueue simulator --help` names is a GENQUEUE_SIM_* field of SimConfig."""
    from genqueue.simulator import SimConfig

    out = " ".join(CliRunner().invoke(main, ["simulator", "--help"]).output.split())
    named = re.findall(r"\[env var: GENQUEUE_SIM_([A-Z_]+)", out)
    assert len(named) == 7
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    for name in named:
        assert name.lower() in fields, name


def test_submit_refuses_media_that_is_not_json(settings: Settings) -> None:
    """`submit --media` must be JSON: otherwise exit 2 naming the flag."""
    env = {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_KEY_PREFIX": settings.key_prefix}
    result = invoke(env, "submit", "-m", "m/x", "-p", "a cat", "--media", "{oops")
    assert result.exit_code == 2 and "--media" in result.stderr
