"""Secrets never reach logs or the terminal: Redis passwords (in the userinfo and in the
query string), TOGETHER_API_KEY, the gateway's API keys and the webhook secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager
from click.testing import CliRunner
from structlog.testing import capture_logs

import genqueue.cli
from genqueue.cli import main
from genqueue.gateway import create_app
from genqueue.local_redis import free_port
from genqueue.logs import scrub
from genqueue.producer import Client, InvalidRequest
from genqueue.producer.keys import Field
from genqueue.producer.settings import Settings, redact_url
from genqueue.worker.arq_redis import arq_pool
from tests.processes import stop_process, wait_until
from tests.security.conftest import KEY, OTHER_KEY, REQ, RedisUser

TOGETHER_KEY = "tgp_v1_sec-test-upstream-key-0123456789"
WEBHOOK_SECRET = "whsec_c2VjLXRlc3Qtd2ViaG9vay1zZWNyZXQ="


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("redis://:s3cret-pw@h:6379/0", "s3cret-pw"),
        ("redis://user:s3cret-pw@h/0", "s3cret-pw"),
        ("redis://h/0?password=s3cret-pw", "s3cret-pw"),
        ("redis://h/0?db=1&username=u&password=s3cret-pw&ssl_cert_reqs=none", "s3cret-pw"),
        ("rediss://u:p%40ss-word@h:6380/0?PASSWORD=s3cret-pw", "s3cret-pw"),
        ("redis://u:p@ss-w@rd@h/0", "ss-w@rd"),
    ],
)
def test_redact_url_hides_passwords_in_userinfo_and_query(url: str, secret: str) -> None:
    """redact_url and the log scrubber leave no password, whether in the userinfo or the query,
    and keep the host visible."""
    for redacted in (redact_url(url), scrub(f"connecting to {url} failed")):
        assert secret not in redacted and "p%40ss" not in redacted
        assert "h" in redacted and "***" in redacted


def test_settings_repr_shows_no_redis_url() -> None:
    """A Settings printed whole (a debug line, a traceback's locals) shows no password."""
    assert "s3cret" not in repr(Settings(redis_url="redis://h/0?password=s3cret"))


async def test_worker_arq_pool_reads_the_password_from_the_query() -> None:
    """The worker's arq pool authenticates with a query-string password as redis-py does."""
    query = arq_pool("redis://h:6380/2?username=u&password=pw", queue_name="q")
    userinfo = arq_pool("redis://u:pw@h/0", queue_name="q")
    try:
        kw = query.connection_pool.connection_kwargs
        assert (kw["host"], kw["port"], kw["db"], kw["username"], kw["password"]) == (
            "h", 6380, 2, "u", "pw",
        )  # fmt: skip
        assert userinfo.connection_pool.connection_kwargs["password"] == "pw"
    finally:
        await query.aclose()
        await userinfo.aclose()


@pytest.mark.parametrize("where", ["userinfo", "query"])
async def test_gateway_logs_no_secret(
    redis_user: RedisUser, settings: Settings, where: str
) -> None:
    """Start-up, requests (a refused key included) and shut-down of a gateway on a
    password-protected Redis log neither the password nor any API key."""
    url = redis_user.url_in_userinfo() if where == "userinfo" else redis_user.url_in_query()
    app = create_app(Settings(redis_url=url, key_prefix=settings.key_prefix), [KEY, OTHER_KEY])
    with capture_logs() as events:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                ok = await http.post(
                    "/v1/generations", json=REQ, headers={"Authorization": f"Bearer {KEY}"}
                )
                assert ok.status_code == 201
                bad = await http.get("/v1/stats", headers={"Authorization": "Bearer nope-key-x"})
                assert bad.status_code == 403
    text = json.dumps(events, default=str)
    assert "gateway_started" in text
    for secret in (redis_user.password, KEY, OTHER_KEY, "nope-key-x"):
        assert secret not in text


def test_log_processor_scrubs_messages_and_tracebacks(redis_user: RedisUser) -> None:
    """Whatever code logs by mistake (an exception quoting the URL, a stdlib library's line),
    configure_logging's output holds none of the configured secrets, in JSON and console."""
    url = redis_user.url_in_query()
    program = textwrap.dedent(
        """
        import logging, os, structlog
        from genqueue.logs import configure_logging
        configure_logging(fmt=os.environ["FMT"])
        url, key = os.environ["GENQUEUE_REDIS_URL"], os.environ["TOGETHER_API_KEY"]
        log = structlog.get_logger("t")
        try:
            raise ConnectionError(f"Error connecting to {url} as {key}")
        except ConnectionError:
            log.exception("boom", note=os.environ["GENQUEUE_WEBHOOK_SECRET"])
        log.warning("failed", error=RuntimeError(os.environ["GENQUEUE_API_KEYS"].split(",")[1]))
        logging.getLogger("redis").error("pool %s", url)
        """
    )
    env = {
        **os.environ,
        "GENQUEUE_REDIS_URL": url,
        "TOGETHER_API_KEY": TOGETHER_KEY,
        "GENQUEUE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GENQUEUE_API_KEYS": f"{KEY},{OTHER_KEY}",
    }
    for fmt in ("json", "console"):
        done = subprocess.run(
            [sys.executable, "-c", program],
            env={**env, "FMT": fmt},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert "boom" in done.stderr and "pool" in done.stderr
        for secret in (redis_user.password, TOGETHER_KEY, WEBHOOK_SECRET, OTHER_KEY):
            assert secret not in done.stderr + done.stdout, fmt


def test_cli_errors_show_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI command that cannot reach Redis names the URL without the query-string password."""
    # In-process: the real configure_logging would cache every logger for the whole session.
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)
    url = f"redis://127.0.0.1:{free_port()}/0?password=s3cret-query-pw"
    result = CliRunner().invoke(main, ["stats"], env={"GENQUEUE_REDIS_URL": url})
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.stderr
    assert "s3cret-query-pw" not in result.output


def test_cli_wrong_password_error_shows_no_password(
    redis_user: RedisUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's refusal of a wrong password is reported without that password."""
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)
    wrong = redis_user.url_in_query().replace(redis_user.password, "not-the-pw-123")
    result = CliRunner().invoke(main, ["stats"], env={"GENQUEUE_REDIS_URL": wrong})
    assert result.exit_code == 1
    assert "not-the-pw-123" not in result.output and redis_user.password not in result.output


def test_worker_start_up_logs_no_secret(
    redis_user: RedisUser, settings: Settings, tmp_path: Path
) -> None:
    """`genqueue worker` on a Redis user whose password is in the URL's query string starts
    (its health key appears), and its stderr holds neither the password, TOGETHER_API_KEY nor
    the webhook secret."""
    stderr_path = tmp_path / "worker.stderr"
    env = {
        **os.environ,
        "GENQUEUE_REDIS_URL": redis_user.url_in_query(),
        "GENQUEUE_KEY_PREFIX": settings.key_prefix,
        "GENQUEUE_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}",
        "TOGETHER_API_KEY": TOGETHER_KEY,
        "GENQUEUE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GENQUEUE_LOG_FORMAT": "json",
        "GENQUEUE_WORKER_NAME": "sec-worker",
    }
    admin = redis.Redis.from_url(settings.redis_url)
    health_key = f"{settings.key_prefix}:health:sec-worker"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "genqueue", "worker"], env=env, stdout=err, stderr=err
        )
    try:
        wait_until(
            lambda: admin.exists(health_key) or proc.poll() is not None, 30, "the worker's health"
        )
        assert proc.poll() is None, stderr_path.read_text()
    finally:
        stop_process(proc)
        admin.close()
    logged = stderr_path.read_text()
    assert "worker_starting" in logged
    for secret in (redis_user.password, TOGETHER_KEY, WEBHOOK_SECRET):
        assert secret not in logged


def test_status_hides_credentials_in_a_webhook_url(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`genqueue status` shows a webhook URL without the password or token it carries.

    A token in the query is accepted at submit; a password in the userinfo is refused there
    (docs/security.md, "Outbound calls"), so it is written into the spec the way a request
    submitted before that rule holds it."""
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)
    with pytest.raises(InvalidRequest, match="credentials"), Client(settings) as client:
        client.submit(REQ, webhook_url="https://hooks:pw@receiver.example/in")
    with Client(settings) as client:
        request_id = client.submit(
            REQ, webhook_url="https://receiver.example/in?token=hook-token-456"
        )
    hook = "https://hooks:hook-pw-123@receiver.example/in?token=hook-token-456"
    spec_key = settings.keys.spec(request_id)
    with redis.Redis.from_url(settings.redis_url) as conn:
        spec = json.loads(conn.get(spec_key))  # type: ignore[arg-type]
        conn.set(spec_key, json.dumps({**spec, Field.WEBHOOK_URL: hook}))
    env = {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_KEY_PREFIX": settings.key_prefix}
    result = CliRunner().invoke(main, ["status", request_id], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "receiver.example" in result.stdout
    assert "hook-pw-123" not in result.stdout and "hook-token-456" not in result.stdout


def test_secrets_given_as_worker_flags_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret passed to `genqueue worker` as a flag (not in the environment) is blanked
    from every later log line, like one from the environment."""
    import genqueue.worker.app

    seen: list[str] = []

    async def fake_run_worker(cfg: object) -> None:
        seen.append(scrub(f"upstream key {TOGETHER_KEY} webhook secret {WEBHOOK_SECRET}"))

    monkeypatch.setattr(genqueue.worker.app, "run_worker", fake_run_worker)
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)
    env = {"TOGETHER_API_KEY": "", "GENQUEUE_WEBHOOK_SECRET": ""}
    result = CliRunner().invoke(
        main,
        ["worker", "--together-api-key", TOGETHER_KEY, "--webhook-secret", WEBHOOK_SECRET],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert seen and TOGETHER_KEY not in seen[0] and WEBHOOK_SECRET not in seen[0]
