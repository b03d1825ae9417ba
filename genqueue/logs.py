"""structlog set-up: JSON lines in production, readable lines in a terminal.

Request and upstream ids are bound per task through ``structlog.contextvars``; secrets are
scrubbed by a processor as a last line of defence (the code never logs them on purpose).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import structlog

from genqueue.producer.connections import is_sentinel_url, parse_sentinel_url

LogFormat = Literal["auto", "json", "console"]

_SECRET_KEYS = re.compile(r"(api_key|authorization|password|secret|token)", re.I)
# Greedy up to the last "@" of the authority: a password may itself contain "@".
_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]*:)[^\s/?#]*@")
_QUERY_PASSWORD = re.compile(
    r"([?&;](?:password|passwd|pass|pwd|secret|token|auth)=)[^&;#\s'\"]*", re.I
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
#: Secrets shorter than this are not searched for in text (a 3-letter test key would blank
#: every word containing it); real keys and passwords are far longer.
MIN_SECRET_CHARS = 6
#: Every configured secret, blanked wherever it appears (see :func:`register_secrets`).
_known: set[str] = set()


def register_secrets(*values: str) -> None:
    """Blank these exact values in every log line and CLI error from now on (this process)."""
    _known.update(v for v in values if len(v) >= MIN_SECRET_CHARS)


def secrets_in_env(env: Mapping[str, str]) -> list[str]:
    """The secrets the environment configures: the upstream key, the webhook secret, the
    gateway's API keys and any password in ``GENQUEUE_REDIS_URL``."""
    found = [env.get("TOGETHER_API_KEY", ""), env.get("GENQUEUE_WEBHOOK_SECRET", "")]
    found += [k.strip() for k in env.get("GENQUEUE_API_KEYS", "").split(",")]
    url = env.get("GENQUEUE_REDIS_URL", "")
    try:
        parts = urlsplit(url)
        found.append(parts.password or "")
    except ValueError:
        pass
    if is_sentinel_url(url):  # redis+sentinel://[user:pw@]h1:26379,h2:26379/SERVICE/DB
        with contextlib.suppress(ValueError):  # a malformed URL has nothing more to find
            found.append(quote(parse_sentinel_url(url).password or "", safe=""))
    for match in _QUERY_PASSWORD.finditer(url):
        found.append(url[match.end(1) : match.end()])
    return list(dict.fromkeys([unquote(v) for v in found if v] + [v for v in found if v]))


def scrub(text: str) -> str:
    """Remove URL passwords (userinfo and ``?password=``), bearer tokens and every registered
    secret from a string."""
    text = _BEARER.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    for secret in _known:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    if isinstance(value, Mapping):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    return value


def _scrub_secrets(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key) and value:
            event_dict[key] = "***"
        else:
            event_dict[key] = _scrub_value(value)
    return event_dict


def configure_logging(level: str | None = None, fmt: LogFormat | None = None) -> None:
    """Configure structlog and stdlib logging once per process.

    ``GENQUEUE_LOG_LEVEL`` (default INFO) and ``GENQUEUE_LOG_FORMAT`` (auto|json|console;
    auto = console on a terminal, JSON otherwise) are read when arguments are None.
    """
    level_name = (level or os.environ.get("GENQUEUE_LOG_LEVEL") or "INFO").upper()
    fmt = fmt or os.environ.get("GENQUEUE_LOG_FORMAT", "auto")  # type: ignore[assignment]
    if fmt not in ("auto", "json", "console"):
        fmt = "auto"
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    register_secrets(*secrets_in_env(os.environ))
    # Tracebacks are rendered to text *before* the scrubber, so an exception's message (a
    # redis-py error quoting a URL, say) is scrubbed like any other field.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrub_secrets,
    ]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries' stdlib log records (arq, uvicorn, redis) go through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                _scrub_secrets,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("arq").setLevel(logging.WARNING)


class bound_context:
    """``structlog.contextvars.bound_contextvars`` for the hot path: binds ``kw`` for the
    block and restores each key's previous value (or none) by its ``contextvars`` token.
    structlog's copies the whole context first to save the keys it overwrites, through a
    generator context manager: ~3 % of a worker's CPU at two blocks per status check."""

    __slots__ = ("_kw", "_tokens")

    def __init__(self, **kw: Any) -> None:
        self._kw = kw
        self._tokens: Mapping[str, Any] = {}

    def __enter__(self) -> None:
        self._tokens = structlog.contextvars.bind_contextvars(**self._kw)

    def __exit__(self, *exc: object) -> None:
        structlog.contextvars.reset_contextvars(**self._tokens)
