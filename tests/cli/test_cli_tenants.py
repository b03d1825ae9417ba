"""``genqueue tenant`` and ``genqueue key``, and ``--tenant`` on the request commands."""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner, Result
from standardwebhooks import Webhook

import genqueue.cli
from genqueue.cli import main
from genqueue.producer.api_keys import key_digest
from genqueue.producer.settings import Settings
from genqueue.producer.tenants import new_webhook_secret

MODEL = "minimax/video-01-director"
ADMISSION_DEFAULTS = {"weight": 1.0, "max_inflight": 0, "max_waiting": 0}


@pytest.fixture(autouse=True)
def _no_global_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_KEY_PREFIX": settings.key_prefix}


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_tenant_set_list_and_generated_secret_shown_once(env: dict[str, str]) -> None:
    """`tenant set NAME` needs no flag; a generated secret is printed once and signs; `tenant
    list` shows default and the tenant, never a secret."""
    made = run(env, "tenant", "set", "acme", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout) == {
        "name": "acme",
        "webhook_secrets": 0,
        "created": True,
        **ADMISSION_DEFAULTS,
    }
    gen = run(env, "tenant", "set", "acme", "--generate-webhook-secret", "--json")
    secret = json.loads(gen.stdout)["webhook_secret"]
    Webhook(secret)  # a usable Standard Webhooks secret
    listed = run(env, "tenant", "list", "--json")
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [
        {"name": "default", "webhook_secrets": 0, **ADMISSION_DEFAULTS},
        {"name": "acme", "webhook_secrets": 1, **ADMISSION_DEFAULTS},
    ]
    assert secret not in listed.stdout
    piped = CliRunner().invoke(
        main, ["tenant", "set", "acme", "--webhook-secret", "-", "--json"], env=env,
        input=new_webhook_secret() + "\n",
    )  # fmt: skip
    assert piped.exit_code == 0, piped.output
    assert json.loads(piped.stdout)["webhook_secrets"] == 2  # the piped one, then the first
    assert run(env, "tenant", "set", "Bad:Name").exit_code != 0
    assert run(env, "tenant", "set", "acme", "--webhook-secret", "nope").exit_code != 0


def test_key_create_list_revoke(env: dict[str, str], settings: Settings) -> None:
    """`key create --tenant` prints the key once (only its hash is stored); `key list` shows
    ids, never keys; `key revoke` deletes it; a key for an unknown tenant is refused."""
    assert run(env, "key", "create", "--tenant", "acme").exit_code != 0  # not configured
    run(env, "tenant", "set", "acme")
    made = run(env, "key", "create", "--tenant", "acme", "--name", "backend", "--json")
    assert made.exit_code == 0, made.output
    out = json.loads(made.stdout)
    assert set(out) == {"key", "tenant", "id"} and out["tenant"] == "acme"
    with redis.Redis.from_url(settings.redis_url, decode_responses=True) as conn:
        stored = conn.hgetall(settings.keys.api_keys)
    assert list(stored) == [key_digest(out["key"])] and out["key"] not in repr(stored)
    admin = run(env, "key", "create", "--admin", "--json")
    assert json.loads(admin.stdout)["tenant"] is None
    listed = run(env, "key", "list", "--json").stdout
    assert out["id"] in listed and out["key"] not in listed
    assert run(env, "key", "revoke", out["id"]).exit_code == 0
    assert run(env, "key", "revoke", out["id"]).exit_code != 0
    assert out["id"] not in run(env, "key", "list", "--json").stdout
    assert run(env, "key", "create").exit_code != 0  # neither --tenant nor --admin


def test_tenant_flag_scopes_requests_and_delete_waits_for_them(env: dict[str, str]) -> None:
    """`submit --tenant` refuses an unknown tenant; `status`/`cancel --tenant` see only that
    tenant's requests; `stats --tenant` is its own; `tenant delete` is refused while it has
    requests in flight and revokes its keys once done."""
    submit = ("submit", "--model", MODEL, "--prompt", "a kite")
    assert run(env, *submit, "--tenant", "acme").exit_code != 0
    run(env, "tenant", "set", "acme")
    run(env, "key", "create", "--tenant", "acme")
    rid = run(env, *submit, "--tenant", "acme").stdout.strip()
    assert run(env, "status", rid, "--tenant", "default").exit_code != 0
    assert json.loads(run(env, "status", rid, "--json").stdout)["tenant"] == "acme"
    stats = json.loads(run(env, "stats", "--tenant", "acme", "--json").stdout)
    assert stats["requests_by_status"]["pending"] == 1 and stats["tenant"] == "acme"
    other = json.loads(run(env, "stats", "--tenant", "default", "--json").stdout)
    assert other["requests_by_status"]["pending"] == 0
    busy = run(env, "tenant", "delete", "acme")
    assert busy.exit_code != 0 and "in flight" in busy.output
    assert run(env, "cancel", rid, "--tenant", "default").exit_code != 0
    assert run(env, "cancel", rid, "--tenant", "acme").exit_code == 0
    gone = run(env, "tenant", "delete", "acme")
    assert gone.exit_code == 0 and "1 API key(s) revoked" in gone.stdout
    assert run(env, "key", "list", "--json").stdout == ""
    assert run(env, "tenant", "delete", "default").exit_code != 0


def test_tenant_admission_settings_and_submit_priority(
    env: dict[str, str], settings: Settings
) -> None:
    """`tenant set --weight --max-inflight --max-waiting` stores and shows them (bad values
    refused); `submit --priority` is stored and `status` says why a request waits."""
    made = run(env, "tenant", "set", "acme", "--weight", "3", "--max-inflight", "1",
               "--max-waiting", "5", "--json")  # fmt: skip
    assert made.exit_code == 0, made.output
    got = json.loads(made.stdout)
    assert (got["weight"], got["max_inflight"], got["max_waiting"]) == (3.0, 1, 5)
    table = run(env, "tenant", "list").stdout
    assert "weight" in table and "max in flight" in table
    assert run(env, "tenant", "set", "acme", "--weight", "0").exit_code != 0
    assert run(env, "tenant", "set", "acme", "--max-inflight", "-1").exit_code != 0
    first = run(env, "submit", "--model", MODEL, "--prompt", "x", "--tenant", "acme")
    second = run(env, "submit", "--model", MODEL, "--prompt", "y", "--tenant", "acme",
                 "--priority", "high")  # fmt: skip
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    shown = run(env, "status", second.stdout.strip(), "--json")
    view = json.loads(shown.stdout)
    assert (view["priority"], view["waiting"]) == ("high", "tenant_cap")
    text = run(env, "status", second.stdout.strip()).stdout
    assert "tenant's own in-flight cap" in text
