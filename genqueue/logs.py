"""structlog set-up: JSON lines in production, readable lines in a terminal.

Request and upstream ids are bound per task through ``structlog.contextvars``; secrets are
scrubbed by a processor as a last line of defence (the code never logs them on purpose).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

_SECRET_KEYS = re.compile(r"(api_key|authorization|password|secret|token)", re.I)
_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]+@")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)


def scrub(text: str) -> str:
    """Remove URL passwords and bearer tokens from a string."""
    return _BEARER.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def _scrub_secrets(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key) and value:
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
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
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub_secrets,
    ]
    if as_json:
        processors.append(structlog.processors.format_exc_info)
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
                _scrub_secrets,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("arq").setLevel(logging.WARNING)
