"""The ``genqueue`` command line: worker, simulator, submit, status, wait, cancel, stats, demo.

Exit codes: 0 success; 1 not found, Redis unreachable or another runtime error; 2 invalid
request, usage or configuration; 3 ``wait`` timed out; 4 a waited-for request finished without
completing (failed, cancelled or expired); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
import redis
from rich.console import Console
from rich.table import Table

from genqueue import __version__
from genqueue.cli_budgets import budget as budget_group
from genqueue.cli_budgets import budget_table
from genqueue.cli_tenants import key as key_group
from genqueue.cli_tenants import tenant as tenant_group
from genqueue.cli_webhooks import webhooks
from genqueue.cliflags import (
    FLAG_RULE,
    log_options,
    request_field_options,
    secret_option,
    settings_options,
)
from genqueue.demo_report import format_usd
from genqueue.envhelp import env_help
from genqueue.gateway.settings import GatewaySettings
from genqueue.logs import LogFormat, configure_logging, register_secrets, scrub, secrets_in_env
from genqueue.producer import (
    Client,
    InvalidRequest,
    RequestNotFound,
    RequestView,
    Settings,
    Stats,
    WaitTimeout,
    WriteNotDurable,
)
from genqueue.producer.connections import sync_redis
from genqueue.producer.keys import NON_TERMINAL, TERMINAL
from genqueue.producer.models import GenerationRequest, Priority
from genqueue.producer.settings import redact_url
from genqueue.producer.tenants import TenantError, check_tenant_name
from genqueue.terminal import escape_controls, inert, inert_markup
from genqueue.worker.config import WorkerConfig

EXIT_NOT_FOUND = 1
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_NOT_COMPLETED = 4
EXIT_INTERRUPTED = 130

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: ``genqueue.gateway.auth.ENV_API_KEYS``, not imported from there: that loads FastAPI.
ENV_API_KEYS = "GENQUEUE_API_KEYS"

#: How long the CLI waits to connect to Redis before calling it unreachable.
_CONNECT_TIMEOUT_S = 5.0


class ConfigError(Exception):
    """The environment holds an unusable setting."""


def _err(message: str) -> None:
    # Messages can quote user input, upstream text or an exception carrying a URL: scrubbed of
    # secrets and printed as data.
    register_secrets(*secrets_in_env(os.environ))
    click.echo(f"genqueue: {escape_controls(scrub(message))}", err=True)


def _fail(code: int, message: str) -> NoReturn:
    _err(message)
    sys.exit(code)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class _Main(click.Group):
    """The root group: turns genqueue's errors into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidRequest as exc:
            _fail(EXIT_USAGE, str(exc))
        except RequestNotFound as exc:
            _fail(EXIT_NOT_FOUND, str(exc))
        except TenantError as exc:
            _fail(EXIT_USAGE, str(exc))
        except WaitTimeout as exc:
            _fail(EXIT_TIMEOUT, f"timed out: {exc}")
        except ConfigError as exc:
            _fail(EXIT_USAGE, f"configuration error: {exc}")
        except WriteNotDurable as exc:
            _fail(EXIT_RUNTIME, f"{exc}: retry with the same --idempotency-key")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            url = _redacted_redis_url()
            _fail(
                EXIT_RUNTIME,
                f"cannot reach Redis at {url} ({scrub(str(exc)) or type(exc).__name__}); "
                "check GENQUEUE_REDIS_URL",
            )
        except redis.RedisError as exc:
            _fail(EXIT_RUNTIME, f"Redis error at {_redacted_redis_url()}: {scrub(str(exc))}")
        except KeyboardInterrupt:
            _fail(EXIT_INTERRUPTED, "interrupted")


def _redacted_redis_url() -> str:
    try:
        return _settings().redis_url_redacted
    except ConfigError:
        return "(GENQUEUE_REDIS_URL)"


@click.group(cls=_Main, context_settings=_CONTEXT, epilog=env_help())
@click.version_option(__version__, prog_name="genqueue")
def main() -> None:
    """genqueue: a durable job queue for slow, paid AI video generations (Redis + arq).

    Run workers with `genqueue worker`, enqueue with `genqueue submit`, watch with
    `genqueue stats`; `genqueue demo` runs the whole thing against the simulator.

    \b
    Exit codes: 0 ok; 1 not found / Redis unreachable / runtime error; 2 invalid request,
    usage or configuration; 3 wait timed out; 4 finished but not completed; 130 interrupted.
    """


# --- worker / simulator ---------------------------------------------------------------------


@main.command(epilog=FLAG_RULE)
@settings_options(WorkerConfig)
@log_options
def worker(config: WorkerConfig, log_level: str | None, log_format: LogFormat | None) -> None:
    """Run a worker until SIGTERM/SIGINT.

    Every setting is a flag (below) or its environment variable; needs TOGETHER_API_KEY. A lost
    Redis does not stop it: it reconnects with backoff.
    """
    from genqueue.worker.app import run_worker
    from genqueue.worker.runtime import UnsafeRedis

    configure_logging(log_level, log_format)
    cfg = config
    _register_flag_secrets(cfg.settings, api_key=cfg.api_key, webhook_secret=cfg.webhooks.secret)
    if not cfg.api_key:
        _fail(
            EXIT_USAGE,
            "TOGETHER_API_KEY is empty: set it to your Together AI API key "
            "(any value works against the simulator)",
        )
    import structlog

    structlog.get_logger("genqueue.cli").info(
        "worker_starting",
        redis=cfg.settings.redis_url_redacted,
        key_prefix=cfg.settings.key_prefix,
        upstream=redact_url(cfg.upstream_url),
        time_scale=cfg.time_scale,
        max_jobs=cfg.max_jobs,
        max_inflight=cfg.max_inflight,
        worker_name=cfg.worker_name,
    )
    # Until arq installs its own handlers, a SIGTERM still means "stop cleanly".
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        asyncio.run(run_worker(cfg))
    except UnsafeRedis as exc:
        _fail(EXIT_RUNTIME, f"refusing to start on {cfg.settings.redis_url_redacted}: {exc}")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _register_flag_secrets(settings: Settings, **values: str) -> None:
    # A secret given as a flag is not in the environment, where the log scrubber looks.
    register_secrets(
        *secrets_in_env(
            {
                "GENQUEUE_REDIS_URL": settings.redis_url,
                "TOGETHER_API_KEY": values.get("api_key", ""),
                "GENQUEUE_WEBHOOK_SECRET": values.get("webhook_secret", ""),
            }
        )
    )


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    sys.exit(0)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    help="Multiplies every simulated duration.  [default: 1.0]  [env var: GENQUEUE_SIM_TIME_SCALE]",
)
@click.option(
    "--seed",
    type=int,
    help="Seed of the job outcomes.  [default: 0]  [env var: GENQUEUE_SIM_SEED]",
)
@click.option(
    "--shape",
    type=click.Choice(["sdk", "legacy"]),
    help="Response shape of GET /v2/videos/{id}.  [default: sdk]  [env var: GENQUEUE_SIM_SHAPE]",
)
@click.option(
    "--failure-share",
    type=click.FloatRange(0, 1),
    help="Share of jobs that fail upstream.  [default: 0.05]  "
    "[env var: GENQUEUE_SIM_FAILURE_SHARE]",
)
@click.option(
    "--idempotency/--no-idempotency",
    "honour_idempotency",
    default=None,
    help="Honour Idempotency-Key (replay the job of a repeated key). Together documents no "
    "idempotency: off unless asked.  [default: no-idempotency]  "
    "[env var: GENQUEUE_SIM_HONOUR_IDEMPOTENCY]",
)
@click.option(
    "--faults",
    help="Upstream fault profile: none, flaky, chaos, optionally with overrides, e.g. "
    "'chaos,hang_share=0' or 'error_5xx_share=0.1,rate_limit_rps=50'.  [default: none]  "
    "[env var: GENQUEUE_SIM_FAULTS]",
)
@click.option(
    "--api-key",
    metavar="SECRET",
    help="Accept only this bearer key (default: any non-empty key); `ps` shows flags: prefer "
    "the variable.  [env var: GENQUEUE_SIM_API_KEY]",
)
@click.option("--access-log", is_flag=True, help="Log every request.")
def simulator(
    host: str,
    port: int,
    time_scale: float | None,
    seed: int | None,
    shape: str | None,
    failure_share: float | None,
    honour_idempotency: bool | None,
    faults: str | None,
    api_key: str | None,
    access_log: bool,
) -> None:
    """Serve the fake Together video API.

    Ground truth at GET /_sim/stats. Unset options fall back to GENQUEUE_SIM_* variables,
    then to the defaults shown.
    """
    import dataclasses

    from genqueue.simulator import SimConfig, parse_faults, serve

    try:
        base = SimConfig.from_env()
        over: dict[str, Any] = {}
        for name, value in (
            ("time_scale", time_scale),
            ("seed", seed),
            ("shape", shape),
            ("failure_share", failure_share),
            ("api_key", api_key),
            ("honour_idempotency", honour_idempotency),
        ):
            if value is not None:
                over[name] = value
        if faults is not None:
            over["faults"] = parse_faults(faults)
        config = dataclasses.replace(base, **over)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _err(
        f"simulator on http://{host}:{port} (time scale {config.time_scale:g}, "
        f"seed {config.seed}, shape {config.shape}, failure share {config.failure_share:g}, "
        f"idempotency {'on' if config.honour_idempotency else 'off'}, "
        f"faults {faults or 'from env/none'})"
    )
    # uvicorn shuts down gracefully, then re-raises the signal it caught: make that SIGTERM
    # an exit 0 (like the worker's) rather than death by signal (143).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    serve(config, host, port, access_log=access_log)


# --- producer commands ----------------------------------------------------------------------


@contextlib.contextmanager
def _client(tenant: str | None = None) -> Iterator[Client]:
    configure_logging()  # the client's rare warnings go to stderr, never into --json output
    settings = _settings()
    if tenant is not None:
        check_tenant_name(tenant)
    try:
        conn = sync_redis(
            settings.redis_url, decode_responses=True, socket_connect_timeout=_CONNECT_TIMEOUT_S
        )
    except ValueError as exc:  # a malformed URL (the message never holds its password)
        raise ConfigError(f"GENQUEUE_REDIS_URL: {exc}") from None
    client = Client(settings, client=conn, tenant=tenant)
    try:
        yield client
    finally:
        client.close()
        conn.close()


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def parse_value(raw: str) -> Any:
    """A ``--param`` value typed: ints, floats, true/false, null, JSON objects/arrays and
    "quoted" JSON strings; anything else stays a string."""
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    if _INT.fullmatch(raw.strip()):
        return int(raw)
    if _FLOAT.fullmatch(raw.strip()):
        return float(raw)
    if raw[:1] in "{[" or (len(raw) >= 2 and raw[0] == raw[-1] == '"'):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw


def _pairs(
    param: click.Parameter, values: tuple[str, ...], convert: Callable[[str], Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param=param)
        if key in out:
            raise click.BadParameter(f"{key!r} given twice", param=param)
        out[key] = convert(value)
    return out


def _params_cb(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    out = _pairs(param, values, parse_value)
    for reserved in ("model", "prompt", "metadata"):
        if reserved in out:
            raise click.BadParameter(f"use --{reserved} for {reserved!r}", param=param)
    return out


def _metadata_cb(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    return _pairs(param, values, str)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _ts(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _dur(seconds: float | None) -> str | None:
    return None if seconds is None else f"{seconds:.3f} s"


def record_table(view: RequestView) -> Table:
    """A request's record as a two-column table."""
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    status = view.status + (" (cancel requested)" if view.cancel_requested else "")
    status += " (still tracked upstream for its cost)" if view.tracking else ""
    prompt = str(view.request.get("prompt", ""))
    rows: list[tuple[str, str | None]] = [
        ("id", view.id),
        ("status", status),
        ("model", view.model),
        ("prompt", prompt if len(prompt) <= 200 else prompt[:197] + "..."),
        ("upstream id", view.upstream_id),
        ("upstream status", view.upstream_status),
        ("video url", view.video_url),
        ("cost", None if view.cost_micro_usd is None else format_usd(view.cost_micro_usd)),
        ("cost unknown", "the job completed without a usable cost" if view.cost_unknown else None),
        (
            "superseded jobs",
            (
                f"cost {format_usd(view.superseded_cost_micro_usd or 0)}"
                + (
                    f", {len(view.superseded_pending)} still followed"
                    if view.superseded_pending
                    else ""
                )
            )
            if view.superseded_cost_micro_usd is not None or view.superseded_pending
            else None,
        ),
        (
            "possibly billed",
            f"{view.possibly_billed} attempt(s) that may have created a job nobody can find"
            if view.possibly_billed
            else None,
        ),
        ("error", view.error),
        ("polls / attempts", f"{view.polls} / {view.attempts}"),
        ("enqueued at", _ts(view.enqueued_at)),
        ("finished at", _ts(view.finished_at)),
        ("queue wait", _dur(view.queue_wait_s)),
        (
            "waiting for a slot",
            _WAITING_TEXT.get(view.waiting, view.waiting) if view.waiting else None,
        ),
        ("priority", view.priority if view.priority != "normal" else None),
        ("upstream generation", _dur(view.upstream_duration_s)),
        ("end to end", _dur(view.total_duration_s)),
        ("detection lag", _dur(view.detection_lag_s)),
        ("metadata", json.dumps(view.metadata) if view.metadata else None),
        # A receiver's URL may carry its own credentials: shown without them.
        ("webhook url", redact_url(view.webhook_url) if view.webhook_url else None),
        ("idempotency key", view.idempotency_key),
    ]
    for key, value in rows:
        if value not in (None, ""):
            t.add_row(key, inert(str(value)))
    return t


def _show(view: RequestView, as_json: bool) -> None:
    if as_json:
        _echo_json(view.to_json_dict())
    else:
        Console(soft_wrap=False).print(record_table(view))


def _finished(view: RequestView, as_json: bool) -> None:
    _show(view, as_json)
    if view.status != "completed":
        sys.exit(EXIT_NOT_COMPLETED)


_TIMEOUT = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Give up after this many seconds (exit 3).  [default: no limit]",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_TENANT = click.option(
    "--tenant",
    help="Act for this tenant (submit as it; see only its requests and figures). "
    "Default: submit as `default`, see every tenant's.",
)


@main.command()
@click.option("--model", "-m", required=True, help="Upstream model id.")
@click.option(
    "--prompt", "-p", help="Text prompt (optional when the request has media, e.g. images)."
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_params_cb,
    help="Another request field, typed (width=1366, guidance_scale=7.5, "
    "generate_audio=true, media='{...}'); a field Together added after this release goes "
    "in extra_body='{...}'; repeatable.",
)
@click.option(
    "--metadata",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_metadata_cb,
    help="A tag kept with the request (string); repeatable.",
)
@click.option("--idempotency-key", help="The same key returns the same request id.")
@click.option("--webhook-url", help="Called when the request finishes.")
@click.option("--deadline-s", type=float, help="Give up after this many seconds.")
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "low"]),
    default="normal",
    show_default=True,
    help="Orders admission among the tenant's requests waiting for a slot.",
)
@click.option("--wait", is_flag=True, help="Wait for the request to finish and print it.")
@_TIMEOUT
@_JSON
@_TENANT
@request_field_options(GenerationRequest)
def submit(
    model: str,
    prompt: str | None,
    fields: dict[str, Any],
    params: dict[str, Any],
    metadata: dict[str, str],
    idempotency_key: str | None,
    webhook_url: str | None,
    deadline_s: float | None,
    priority: Priority,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    tenant: str | None,
) -> None:
    """Enqueue a generation and print its id.

    With --wait, print its finished record instead (exit 4 if it did not complete, 3 on
    --timeout)."""
    twice = sorted(fields.keys() & params.keys())
    if twice:
        flag = "--" + twice[0].replace("_", "-")
        raise click.UsageError(f"{twice[0]!r} given twice: by --param and by {flag}")
    request: dict[str, Any] = {"model": model, **fields, **params}
    if prompt is not None:
        request["prompt"] = prompt
    if metadata:
        request["metadata"] = metadata
    with _client(tenant) as client:
        request_id = client.submit(
            request,
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
            deadline_s=deadline_s,
            priority=priority,
        )
        if not wait:
            if as_json:
                _echo_json({"id": request_id})
            else:
                click.echo(request_id)
            return
        _err(f"submitted {request_id}; waiting")
        view = client.wait(request_id, timeout)
    _finished(view, as_json)


@main.command()
@click.argument("request_id")
@_JSON
@_TENANT
def status(request_id: str, as_json: bool, tenant: str | None) -> None:
    """Print a request's record (exit 1 if unknown, or not --tenant's)."""
    with _client(tenant) as client:
        view = client.get(request_id)
    _show(view, as_json)


@main.command()
@click.argument("request_id")
@_TIMEOUT
@_JSON
@_TENANT
def wait(request_id: str, timeout: float | None, as_json: bool, tenant: str | None) -> None:
    """Wait until a request finishes and print it.

    Exit 4 if it finished without completing, 3 on --timeout."""
    with _client(tenant) as client:
        view = client.wait(request_id, timeout)
    _finished(view, as_json)


_CANCEL_TEXT = {
    "cancelled": "cancelled",
    "requested": "cancel requested: it takes effect at the request's next step",
    "already_finished": "already finished: nothing to cancel",
}


@main.command()
@click.argument("request_id")
@_JSON
@_TENANT
def cancel(request_id: str, as_json: bool, tenant: str | None) -> None:
    """Cancel a request.

    A request already created upstream shows `cancelled` at once; its billed job is still
    tracked until the upstream finishes, so its cost is recorded."""
    with _client(tenant) as client:
        outcome = client.cancel(request_id)
    if as_json:
        _echo_json({"id": request_id, "outcome": outcome})
    else:
        click.echo(f"{escape_controls(request_id)}: {_CANCEL_TEXT.get(outcome, outcome)}")


#: Why a request waits in its admission queue, as ``status`` says it.
_WAITING_TEXT = {
    "cap": "yes: the in-flight cap is full",
    "tenant_cap": "yes: its tenant's own in-flight cap is full",
    "paused": "yes: creates are paused",
    "budget": "yes: its spend budget cannot cover it (the next period, or a raised budget)",
}


def stats_tables(stats: Stats) -> list[Table]:
    """``Stats`` as rich tables: the queue now, then finished requests and cost by model."""
    title = "Queue" if stats.tenant is None else f"Queue (tenant {stats.tenant})"
    now = Table(title=title, show_header=False, title_justify="left")
    now.add_column(style="bold")
    now.add_column(justify="right")
    for s in NON_TERMINAL:
        now.add_row(f"requests {s}", str(stats.requests_by_status.get(s, 0)))
    now.add_row("tracking (billed job after cancel/deadline)", str(stats.tracking))
    now.add_row("active upstream jobs", str(stats.active_upstream))
    now.add_row("slots reserved (admitted, create not started)", str(stats.admitted))
    for reason, n in stats.waiting.items():
        now.add_row(f"waiting for a slot ({reason})", str(n))
    now.add_row("in flight (index)", str(stats.inflight))
    now.add_row("timers ready (due or running)", str(stats.queue_ready))
    now.add_row("timers deferred", str(stats.queue_deferred))
    now.add_row("queue lag (oldest due timer)", f"{stats.queue_lag_ms / 1000:.1f} s")
    if stats.paused:
        p = stats.paused
        until = p.get("until_ms")
        until_s = (_ts(int(until) / 1000) if until and until.isdigit() else None) or "?"
        # The reason and code come from the upstream's answer: markup-escaped.
        now.add_row(
            "creates",
            f"[red]PAUSED[/red] ({inert_markup(str(p.get('reason', '?')))}, "
            f"HTTP {inert_markup(str(p.get('code', '?')))}, until {until_s})",
        )
    else:
        now.add_row("creates", "[green]running[/green]")

    done = Table(title="Finished (cluster totals)", title_justify="left")
    done.add_column("model")
    for outcome in TERMINAL:
        done.add_column(outcome, justify="right")
    done.add_column("cost", justify="right")
    models = sorted({m for m, _ in stats.finished} | set(stats.cost_micro_usd))
    for m in models:
        done.add_row(
            inert(m),
            *(str(stats.finished.get((m, o), 0)) for o in TERMINAL),
            format_usd(stats.cost_micro_usd.get(m, 0)),
        )
    by_outcome = stats.finished_by_outcome
    done.add_section()
    done.add_row(
        "total",
        *(str(by_outcome.get(o, 0)) for o in TERMINAL),
        format_usd(stats.total_cost_micro_usd),
        style="bold",
    )
    tables = [now, done, money_table(stats)]
    if stats.budget is not None:
        tables.append(budget_table(stats.budget, only=stats.tenant))
    return tables


def money_table(stats: Stats) -> Table:
    """Spend the totals can't state exactly: possibly billed attempts (priced at the
    model's mean recorded cost), completed jobs of unknown cost, superseded jobs."""
    t = Table(title="Unrecorded or uncertain spend", title_justify="left")
    t.add_column("model")
    t.add_column("possibly billed", justify="right")
    t.add_column("estimate", justify="right")
    t.add_column("cost unknown", justify="right")
    t.add_column("superseded jobs", justify="right")
    estimate = stats.possibly_billed_estimate_micro_usd
    models = sorted(set(stats.possibly_billed) | set(stats.cost_unknown) | set(stats.superseded))
    for m in models:
        t.add_row(
            inert(m),
            str(stats.possibly_billed.get(m, 0)),
            format_usd(estimate.get(m, 0)),
            str(stats.cost_unknown.get(m, 0)),
            str(stats.superseded.get(m, 0)),
        )
    t.add_section()
    t.add_row(
        "total",
        str(sum(stats.possibly_billed.values())),
        format_usd(sum(estimate.values())),
        str(sum(stats.cost_unknown.values())),
        f"{sum(stats.superseded.values())} ({stats.superseded_running} running)",
        style="bold",
    )
    return t


@main.command(epilog=FLAG_RULE)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--allow-anonymous",
    is_flag=True,
    help="Accept requests without a key, as the default tenant's (development only).",
)
@secret_option(
    "--api-keys", ENV_API_KEYS, "Bearer API keys of the default tenant, comma-separated."
)
@settings_options(Settings, into="settings")
@settings_options(GatewaySettings, into="limits")
@click.option(
    "--root-path",
    default="",
    help="The path prefix a reverse proxy strips in front of the gateway (e.g. /genqueue).",
)
@log_options
def gateway(
    host: str,
    port: int,
    allow_anonymous: bool,
    api_keys: str | None,
    settings: Settings,
    limits: GatewaySettings,
    root_path: str,
    log_level: str | None,
    log_format: LogFormat | None,
) -> None:
    """Serve the HTTP gateway for backends in other languages (OpenAPI at /openapi.json).

    Bearer API keys: those created with `genqueue key create` (looked up in Redis at every
    request), and GENQUEUE_API_KEYS (comma-separated) or --api-keys as `default`'s keys."""
    from genqueue.gateway import GatewayConfigError, serve
    from genqueue.gateway.auth import parse_api_keys

    configure_logging(log_level, log_format)
    _err(f"gateway on http://{host}:{port} for {settings.redis_url_redacted}")
    try:
        # click already fell back to the variable: an empty list means "no keys at all".
        keys = parse_api_keys(api_keys or "")
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        register_secrets(*keys)
        _register_flag_secrets(settings)
        serve(
            settings,
            host,
            port,
            keys,
            allow_anonymous=allow_anonymous,
            root_path=root_path,
            limits=limits,
        )
    except GatewayConfigError as exc:
        raise ConfigError(str(exc)) from None


@main.command()
def resume() -> None:
    """Resume upstream creates paused by the circuit breaker (401/402/403 or an outage).

    Paused creates also resume by themselves: after GENQUEUE_PAUSE_S one request probes the
    upstream and its success resumes them for everyone."""
    with _client() as client:
        was_paused = client.resume_creates()
    click.echo("creates resumed" if was_paused else "creates were not paused")


@main.command(epilog=FLAG_RULE)
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to bind.")
@click.option("--port", default=9108, show_default=True, type=click.IntRange(1, 65535))
@settings_options(Settings, into="settings")
@log_options
def exporter(
    host: str, port: int, settings: Settings, log_level: str | None, log_format: LogFormat | None
) -> None:
    """Serve cluster-wide metrics read from Redis at scrape time (run ONE per cluster).

    Queue depth, requests by status, finished totals and cost by model, creates paused,
    workers alive; requests, finished and cost by tenant. Workers serve their own
    per-process metrics with GENQUEUE_METRICS_PORT."""
    import threading

    from prometheus_client import start_http_server

    from genqueue.worker.exporter_metrics import exporter_registry

    configure_logging(log_level, log_format)
    _register_flag_secrets(settings)
    start_http_server(port, addr=host, registry=exporter_registry(settings))
    _err(f"exporter on http://{host}:{port}/metrics for {settings.redis_url_redacted}")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    threading.Event().wait()


@main.command()
@_JSON
@_TENANT
def stats(as_json: bool, tenant: str | None) -> None:
    """Show queue depth, requests by status, totals and cost.

    Finished requests by model and outcome, cost by model, and whether creates are paused.
    With --tenant, that tenant's own requests and totals (queue depth stays the cluster's)."""
    with _client(tenant) as client:
        snapshot = client.stats()
    if as_json:
        _echo_json(snapshot.to_json_dict())
        return
    console = Console()
    for table in stats_tables(snapshot):
        console.print(table)


# --- demo -------------------------------------------------------------------------------------


@main.command()
@click.option("--videos", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Wall seconds per simulated second, for the simulator and the workers alike.  "
    "[default: 0.125]",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Simulator seed.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Wall seconds to wait for all videos.  [default: 1800 simulated s, at least 60]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(
    videos: int,
    workers: int,
    time_scale: float | None,
    seed: int,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Run everything against the simulator and check the books.

    Starts the simulator and N worker processes, submits the videos, shows progress by status,
    then a summary with latencies in simulated seconds. Exit 1 if a video was lost or the cost
    genqueue recorded differs from what the simulator billed.

    Uses GENQUEUE_REDIS_URL if it answers, else a private redis-server; a fresh key prefix
    per run.
    """
    from genqueue.demo import DEFAULT_TIME_SCALE, DemoOptions, run_demo

    configure_logging(level="WARNING")
    code = run_demo(
        DemoOptions(
            videos=videos,
            workers=workers,
            time_scale=time_scale or DEFAULT_TIME_SCALE,
            seed=seed,
            timeout_s=timeout,
            as_json=as_json,
        )
    )
    sys.exit(code)


main.add_command(webhooks)
main.add_command(tenant_group)
main.add_command(budget_group)
main.add_command(key_group)

if __name__ == "__main__":  # pragma: no cover
    main()
