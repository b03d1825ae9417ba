"""Command-line flags generated from the settings dataclasses, each falling back to its variable.

A flag's name is its variable's without ``GENQUEUE_`` (other variables: the whole name),
lower-case with dashes: ``GENQUEUE_MAX_JOBS`` → ``--max-jobs``, ``TOGETHER_API_KEY`` →
``--together-api-key``. Precedence: flag, then variable, then default. A new field of a
settings dataclass gets its flag without touching this module.
"""

from __future__ import annotations

import functools
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from genqueue.envhelp import SECRET_NOTE, format_default, setting_doc
from genqueue.producer.envconfig import ENV_PREFIX, SettingField, replace_settings, setting_fields

F = TypeVar("F", bound=Callable[..., Any])

FLAG_RULE = (
    "Every setting is a flag named after its variable without GENQUEUE_ (other variables: the "
    "whole name), lower-case with dashes: GENQUEUE_MAX_JOBS is --max-jobs, TOGETHER_API_KEY is "
    "--together-api-key. A flag beats its variable, which beats the default."
)


# The click types are typed Any: ``click.ParamType`` is generic only from click 8.2.
def click_type(s: SettingField) -> Any:
    if s.choices:
        return click.Choice(s.choices)
    if s.hint is bool:
        return click.BOOL
    if s.hint is int:
        return click.INT
    if s.hint is float:
        return click.FLOAT
    return click.STRING


def _option(s: SettingField) -> click.Option:
    # The default stays None so an unset flag and variable leave the dataclass default alone.
    return click.Option(
        [s.flag, s.name],
        envvar=s.env,
        show_envvar=True,
        type=click_type(s),
        default=None,
        metavar="SECRET" if s.secret else None,
        help=f"{setting_doc(s, choices=False)}  [default: {format_default(s.default)}]".lstrip(),
    )


class ConfigInvalid(click.UsageError):
    """The flags and variables, each well-typed, make an invalid configuration together."""


def flag_hints(message: str, fields: Sequence[SettingField]) -> str:
    """The flags and variables of the settings a validation message names (``poll_jitter``,
    ``connect_timeout_s``, ``webhooks.max_age_s``), e.g. ``--poll-jitter/GENQUEUE_POLL_JITTER``."""
    hits = []
    for s in fields:
        names = {s.name, s.attribute} | ({s.path[-1]} if _unique_leaf(s, fields) else set())
        if any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", message) for n in names):
            hits.append(f"{s.flag}/{s.env}")
    return ", ".join(hits)


def _unique_leaf(s: SettingField, fields: Sequence[SettingField]) -> bool:
    return sum(1 for o in fields if o.path[-1] == s.path[-1]) == 1


def settings_options(cls: type, *, into: str = "config") -> Callable[[F], F]:
    """Add a flag for every setting of ``cls``; the command receives the built instance as
    ``into`` (flags over variables over defaults). A type error names the flag and the
    variable (click's own message); an invalid combination does too (``ConfigInvalid``)."""
    fields = setting_fields(cls)

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {s.name: kwargs.pop(s.name) for s in fields}
            given = {k: v for k, v in values.items() if v is not None}
            try:
                kwargs[into] = replace_settings(cls(), given)
            except ValueError as exc:
                hints = flag_hints(str(exc), fields)
                hint = f" ({hints})" if hints else ""
                raise ConfigInvalid(f"configuration error: {exc}{hint}") from None
            return func(*args, **kwargs)

        params: list[click.Parameter] = getattr(func, "__click_params__", [])
        # click lists decorator-added params bottom-up: the command's own flags first, then
        # the settings in field order.
        generated = [_option(s) for s in reversed(fields)]
        wrapper.__click_params__ = generated + params  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def log_options(func: F) -> F:
    """``--log-level`` and ``--log-format``, falling back to their variables."""
    func = click.option(
        "--log-format",
        envvar=ENV_PREFIX + "LOG_FORMAT",
        show_envvar=True,
        type=click.Choice(["auto", "json", "console"]),
        help="auto: console on a terminal, JSON otherwise.  [default: auto]",
    )(func)
    return click.option(
        "--log-level",
        envvar=ENV_PREFIX + "LOG_LEVEL",
        show_envvar=True,
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
        help="[default: INFO]",
    )(func)


def secret_option(flag: str, envvar: str, help_text: str) -> Callable[[F], F]:
    """A secret taken from its variable, or (visibly in ``ps``) from a flag."""
    return click.option(
        flag,
        envvar=envvar,
        show_envvar=True,
        metavar="SECRET",
        help=f"{help_text} {SECRET_NOTE}",
    )


# --- request fields (``genqueue submit``) -----------------------------------------------------

#: Fields with their own options already, or not a plain value.
_NOT_FIELD_FLAGS = ("model", "prompt", "metadata")

_FIELD_HELP = {
    "negative_prompt": "What to avoid in the video.",
    "width": "Width in pixels.",
    "height": "Height in pixels.",
    "seconds": "Clip duration in seconds.",
    "fps": "Frames per second.",
    "steps": "Denoising steps.",
    "seed": "Seed of the generation.",
    "guidance_scale": "How closely the video follows the prompt.",
    "output_format": "Container of the video.",
    "output_quality": "Compression quality.",
    "ratio": "Aspect ratio, e.g. 16:9.",
    "resolution": "Video resolution, e.g. 720p.",
    "generate_audio": "Generate audio too.",
    "media": "Media inputs as JSON, e.g. '{\"frame_images\": [...]}'.",
    "frame_images": "Deprecated: use --media '{\"frame_images\": [...]}' (JSON list).",
    "reference_images": "Deprecated: use --media '{\"reference_images\": [...]}' (JSON list).",
    "extra_body": "Fields Together added after this release, as a JSON object.",
}


def _unwrap(hint: Any) -> Any:
    """``Annotated[int, ...] | None`` → ``int``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return hint


#: Field types given as plain values; any other (``media``) is given as JSON.
_PLAIN = (bool, int, float, str)


def _is_json(hint: Any) -> bool:
    hint = _unwrap(hint)
    return hint not in _PLAIN and typing.get_origin(hint) is not typing.Literal


def _field_type(hint: Any) -> Any:
    hint = _unwrap(hint)
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(hint)])
    if hint is bool:
        return click.BOOL
    if hint is int:
        return click.INT
    if hint is float:
        return click.FLOAT
    return click.STRING  # anything else (``media``) is JSON, decoded by the wrapper


def request_field_names(model: type[BaseModel]) -> list[str]:
    return [n for n in model.model_fields if n not in _NOT_FIELD_FLAGS]


def request_field_options(model: type[BaseModel]) -> Callable[[F], F]:
    """A flag for every request field of ``model`` but model, prompt and metadata (``--width``,
    ``--negative-prompt``, ...); the command receives the given ones as ``fields``."""
    names = request_field_names(model)
    json_names = {n for n in names if _is_json(model.model_fields[n].annotation)}

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in names}
            fields = {n: v for n, v in given.items() if v is not None}
            for n in fields.keys() & json_names:
                try:
                    fields[n] = json.loads(fields[n])
                except ValueError as exc:
                    flag = "--" + n.replace("_", "-")
                    raise click.BadParameter(f"not JSON: {exc}", param_hint=flag) from None
            kwargs["fields"] = fields
            return func(*args, **kwargs)

        params: list[click.Parameter] = getattr(func, "__click_params__", [])
        generated = [
            click.Option(
                ["--" + n.replace("_", "-"), n],
                type=_field_type(model.model_fields[n].annotation),
                default=None,
                metavar="JSON" if n in json_names else None,
                help=_FIELD_HELP.get(n, f"The request's {n}."),
            )
            for n in reversed(names)
        ]
        wrapper.__click_params__ = generated + params  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
