"""The configuration environment variables, generated from the settings dataclasses.

``genqueue --help`` prints this list, so it cannot drift from what ``Settings.from_env`` and
``WorkerConfig.from_env`` really read (``GENQUEUE_`` + the field name upper-cased).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

from genqueue.gateway.settings import GatewaySettings
from genqueue.producer.settings import ENV_PREFIX, Settings
from genqueue.worker.config import WorkerConfig

_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:\s*\S")
_DOC_LINE = re.compile(r"^\s+#:\s?(.*)$")

#: Fields read under another name, or not from the environment at all.
_RENAMED = {"api_key": "TOGETHER_API_KEY"}
_SKIPPED = {"settings"}
_SECRET = {"api_key"}


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    default: str
    doc: str


def _field_docs(cls: type) -> dict[str, str]:
    """``#:`` comments written just above each field of a dataclass (best effort)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        m = _DOC_LINE.match(line)
        if m:
            pending.append(m.group(1).strip())
            continue
        f = _FIELD_LINE.match(line)
        if f and pending:
            docs[f.group(1)] = " ".join(pending)
        pending = []
    return docs


def _choices(hint: Any) -> tuple[str, ...]:
    if typing.get_origin(hint) is typing.Literal:
        return tuple(str(a) for a in typing.get_args(hint))
    return ()


def _format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value == "":
        return "(empty)"
    return str(value)


def _vars_of(cls: type) -> list[EnvVar]:
    docs = _field_docs(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in _SKIPPED:
            continue
        name = _RENAMED.get(f.name, ENV_PREFIX + f.name.upper())
        if f.default is not dataclasses.MISSING:
            default = _format_default(f.default)
        elif f.name == "worker_name":
            default = "<hostname>:<pid>"
        else:
            default = "(computed)"
        doc = docs.get(f.name, "")
        choices = _choices(hints.get(f.name))
        if choices:
            doc = (doc + " " if doc else "") + "One of " + "|".join(choices) + "."
        if f.name in _SECRET:
            doc = (doc + " " if doc else "") + "Required by `genqueue worker`; never printed."
        out.append(EnvVar(name, default, doc))
    return out


def env_vars() -> list[EnvVar]:
    """Every configuration variable with its default: producer settings, worker ones, the
    gateway's limits, then logging."""
    return [
        *_vars_of(Settings),
        *_vars_of(WorkerConfig),
        *_vars_of(GatewaySettings),
        EnvVar(ENV_PREFIX + "LOG_LEVEL", "INFO", "DEBUG|INFO|WARNING|ERROR."),
        EnvVar(
            ENV_PREFIX + "LOG_FORMAT",
            "auto",
            "auto|json|console (auto: console on a terminal, JSON otherwise).",
        ),
    ]


def env_help(doc_width: int = 90) -> str:
    """The list as a click epilog block (``\\b`` keeps click from re-wrapping it)."""
    items = env_vars()
    width = max(len(v.name) for v in items)
    lines = [
        "Configuration (environment variables, with defaults; *_s are seconds):",
        "",
        "\b",
    ]
    for v in items:
        lines.append(f"{v.name:<{width}}  {v.default}")
        if v.doc:
            lines += textwrap.wrap(
                v.doc, width=doc_width, initial_indent="    ", subsequent_indent="    "
            )
    lines += [
        "",
        "\b",
        "The simulator also reads GENQUEUE_SIM_* (e.g. GENQUEUE_SIM_TIME_SCALE);",
        "its command-line options take precedence.",
    ]
    return "\n".join(lines)
