"""Settings dataclasses read from the environment (and, in the CLI, from flags): one rule.

Every leaf field of a settings dataclass is one *setting*; a field whose type is itself a
dataclass is a group of them (``WorkerConfig.webhooks``). A setting's variable is
``GENQUEUE_`` + the env prefixes of the groups it sits in + its field name, upper-cased
(``webhooks.retry_s`` in a group with prefix ``WEBHOOK_`` → ``GENQUEUE_WEBHOOK_RETRY_S``),
unless the field names its variable (``meta(env="TOGETHER_API_KEY")``). Its *name* is the
variable without ``GENQUEUE_`` (other variables: the whole name), lower-cased: the CLI flag
is that name with dashes (``--max-jobs``, ``--together-api-key``), and ``replace_settings``
takes it as a keyword. Values are typed by the field's annotation (str, int, float, bool,
``Literal``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

ENV_PREFIX = "GENQUEUE_"

T = TypeVar("T")

_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:\s*\S")
_DOC_LINE = re.compile(r"^\s+#:\s?(.*)$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def meta(
    *,
    env: str | None = None,
    env_prefix: str | None = None,
    secret: bool = False,
    default_text: str | None = None,
) -> dict[str, Any]:
    """Field metadata: ``env`` the variable's full name (instead of the rule), ``env_prefix``
    of a group's variables (appended to its parent's), ``secret`` (never printed; the flag's
    help warns that ``ps`` shows it), ``default_text`` for a computed default."""
    out: dict[str, Any] = {}
    if env is not None:
        out["env"] = env
    if env_prefix is not None:
        out["env_prefix"] = env_prefix
    if secret:
        out["secret"] = True
    if default_text is not None:
        out["default_text"] = default_text
    return out


@dataclass(frozen=True, slots=True)
class SettingField:
    """One setting: where it sits in the config, its variable, type, default and doc."""

    path: tuple[str, ...]
    env: str
    hint: Any
    default: Any
    doc: str
    secret: bool

    @property
    def name(self) -> str:
        """The variable without ``GENQUEUE_`` (other variables whole), lower-cased."""
        return self.env.removeprefix(ENV_PREFIX).lower()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def attribute(self) -> str:
        """The dotted attribute path, e.g. ``webhooks.retry_s``."""
        return ".".join(self.path)

    @property
    def choices(self) -> tuple[str, ...]:
        if typing.get_origin(self.hint) is typing.Literal:
            return tuple(str(a) for a in typing.get_args(self.hint))
        return ()

    def parse(self, raw: str) -> Any:
        """``raw`` typed like the field; ValueError naming the variable otherwise."""
        try:
            return _parse(self.hint, raw)
        except ValueError as exc:
            raise ValueError(f"{self.env}: cannot parse {raw!r}{exc}") from None


def _parse(hint: Any, raw: str) -> Any:
    """``raw`` as ``hint``; a ValueError says what was expected (`` (an integer)``)."""
    if typing.get_origin(hint) is typing.Literal:
        choices = [str(a) for a in typing.get_args(hint)]
        if raw not in choices:
            raise ValueError(" (one of " + "|".join(choices) + ")")
        return raw
    if hint is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(" (true or false)")
    try:
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
    except ValueError:
        raise ValueError(" (an integer)" if hint is int else " (a number)") from None
    return raw


def field_docs(cls: type) -> dict[str, str]:
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


@functools.cache
def setting_fields(cls: type) -> tuple[SettingField, ...]:
    """Every setting of a settings dataclass, groups flattened in field order."""
    return tuple(_walk(cls, (), ENV_PREFIX))


def _walk(cls: type, path: tuple[str, ...], prefix: str) -> list[SettingField]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[SettingField] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            out += _walk(hint, (*path, f.name), prefix + f.metadata.get("env_prefix", ""))
            continue
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        else:
            default = f.metadata.get("default_text", dataclasses.MISSING)
        out.append(
            SettingField(
                path=(*path, f.name),
                env=f.metadata.get("env", prefix + f.name.upper()),
                hint=hint,
                default=default,
                doc=docs.get(f.name, ""),
                secret=bool(f.metadata.get("secret", False)),
            )
        )
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise TypeError(f"{cls.__name__}: two settings share a variable")
    return out


def by_name(cls: type) -> dict[str, SettingField]:
    return {s.name: s for s in setting_fields(cls)}


def values_from_env(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """The settings of ``cls`` whose variables are set (and non-empty) in ``env``, typed."""
    out: dict[str, Any] = {}
    for s in setting_fields(cls):
        raw = env.get(s.env)
        if raw is not None and raw != "":
            out[s.name] = s.parse(raw)
    return out


def replace_settings(config: T, values: Mapping[str, Any]) -> T:
    """``config`` with the settings named in ``values`` (by setting name) replaced, each group
    rebuilt once, so validation sees all the new values together."""
    fields = by_name(type(config))
    by_path: dict[tuple[str, ...], Any] = {}
    for name, value in values.items():
        if name not in fields:
            raise TypeError(f"{type(config).__name__} has no setting {name!r}")
        by_path[fields[name].path] = value
    replaced: T = _replace(config, by_path)
    return replaced


def _replace(obj: Any, by_path: Mapping[tuple[str, ...], Any]) -> Any:
    changes: dict[str, Any] = {}
    groups: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in by_path.items():
        if len(path) == 1:
            changes[path[0]] = value
        else:
            groups.setdefault(path[0], {})[path[1:]] = value
    for group, sub in groups.items():
        changes[group] = _replace(getattr(obj, group), sub)
    return dataclasses.replace(obj, **changes) if changes else obj


def from_env(cls: type[T], env: Mapping[str, str]) -> T:
    """An instance of settings dataclass ``cls`` from its variables; unset ones default."""
    return replace_settings(cls(), values_from_env(cls, env))
