"""The configuration environment variables, generated from the settings dataclasses.

``genqueue --help`` prints this list, so it cannot drift from what ``Settings.from_env`` and
``WorkerConfig.from_env`` really read (see ``genqueue.producer.envconfig`` for the rule).
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass
from typing import Any

from genqueue.gateway.settings import GatewaySettings
from genqueue.producer.envconfig import ENV_PREFIX, SettingField, setting_fields
from genqueue.worker.config import WorkerConfig

#: Appended to a secret's doc: a flag is visible to every user of the machine.
SECRET_NOTE = "Secret: never printed; prefer the variable to the flag (`ps` shows flags)."


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    default: str
    doc: str


def format_default(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "(computed)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value == "":
        return "(empty)"
    return str(value)


def setting_doc(s: SettingField, *, choices: bool = True) -> str:
    """The field's ``#:`` doc, its choices, and the secret note."""
    doc = s.doc
    if s.choices and choices:
        doc = (doc + " " if doc else "") + "One of " + "|".join(s.choices) + "."
    if s.secret:
        doc = (doc + " " if doc else "") + SECRET_NOTE
    return doc


def _vars_of(cls: type) -> list[EnvVar]:
    return [EnvVar(s.env, format_default(s.default), setting_doc(s)) for s in setting_fields(cls)]


def env_vars() -> list[EnvVar]:
    """Every configuration variable with its default: producer settings, worker ones, the
    gateway's limits, then logging."""
    return [
        *_vars_of(WorkerConfig),  # its ``settings`` group comes first: the producer's
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
        "Each is also a flag of `genqueue worker` (the producer's of `gateway` and `exporter`):",
        "the name without GENQUEUE_ (other variables: the whole name), lower-case with dashes,",
        "e.g. --max-jobs, --together-api-key. A flag beats its variable.",
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
