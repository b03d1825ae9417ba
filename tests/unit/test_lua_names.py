"""The Lua scripts use exactly the names Python defines: record fields (``Field``), statuses,
timer kinds and reply tags (``producer/keys.py``, ``producer/replies.py``)."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

from genqueue.producer.contracts import SIDE_EFFECTS
from genqueue.producer.keys import ALL_STATUSES, HOLDING_SLOT, POLL_TASK, SUBMIT_TASK, Field
from genqueue.producer.replies import TAGS_BY_SCRIPT
from genqueue.producer.scripts import OTHER_SCRIPT_NAMES, SCRIPT_NAMES, assemble, source

LUA = files("genqueue.producer") / "lua"
FIELDS = {v for k, v in vars(Field).items() if k.isupper() and isinstance(v, str)}
_QUOTED = re.compile(r"^'([^']*)'$")


def lua_files() -> dict[str, str]:
    """Every Lua file shipped in ``producer/lua`` by name."""
    return {f.name: f.read_text() for f in LUA.iterdir() if f.name.endswith(".lua")}


def _args(text: str, start: int) -> list[str]:
    """The comma-separated arguments from ``start`` up to the closing parenthesis."""
    depth, out, cur = 0, [], ""
    for ch in text[start:]:
        if ch in "({":
            depth += 1
        elif ch in ")}":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def _literal(arg: str) -> str | None:
    m = _QUOTED.match(arg)
    return m.group(1) if m else None


def record_fields(lua: str) -> set[str]:
    """Every literal record field name the Lua reads or writes: ``HGET``/``HSET``/``HDEL``/
    ``HINCRBY``/``HMGET`` on ``K_REC``, the ``get``/``num``/``set_if`` helpers, and the
    ``<effect>_state``/``<effect>_attempts`` fields of ``owe``."""
    names: set[str] = set()
    for m in re.finditer(r"redis\.call\('(HGET|HSET|HDEL|HINCRBY|HMGET)', K_REC,", lua):
        command, args = m.group(1), _args(lua, m.end())
        # HSET: field, value, ...; HDEL/HMGET: fields; HGET/HINCRBY: one field.
        picked = {"HSET": args[0::2], "HDEL": args, "HMGET": args}.get(command, args[:1])
        names |= {n for a in picked if (n := _literal(a)) is not None}
    names |= set(re.findall(r"\b(?:get|num|set_if)\('([^']*)'", lua))
    for effect in re.findall(r"\bowe\('([^']*)'\)", lua):
        names |= {f"{effect}_state", f"{effect}_attempts"}
    return names


def statuses(lua: str) -> set[str]:
    """Every literal status the Lua compares a status with or moves a record to."""
    found = set(re.findall(r"\b(?:status|new|UPSTREAM_STATUS|OUTCOME)\s*[~=]=\s*'([^']*)'", lua))
    found |= set(re.findall(r"\b(?:set_status|visible_terminal)\([^,]+,\s*'([^']*)'", lua))
    found |= set(re.findall(r"\bemit\('([^']*)'", lua))
    found |= set(re.findall(r"\blocal new = '([^']*)'", lua))
    found |= set(re.findall(r"'status', '([^']*)'", lua))
    return found - {""}  # '' is "no status" (a failed check saw none)


def counts_fields(lua: str) -> set[str]:
    """Literal fields of the status counts hash (written directly or through ``count``, which
    also writes the tenant's own field)."""
    return set(re.findall(r"(?:'HINCRBY', |\bcount\()K_COUNTS, '([^']*)'", lua))


def timer_kinds(lua: str) -> set[str]:
    found = set(re.findall(r"\bnext_step\('([^']*)'", lua))
    found |= set(re.findall(r"get\('timer'\) ~= '([^']*)'", lua))
    found |= set(re.findall(r"\barm\('([a-z]+):", lua))
    return found


def reply_tags(lua: str) -> set[str]:
    """The tags a script's own body answers with."""
    found = set(re.findall(r"return \{'([A-Z_]+)'", lua))
    found |= set(re.findall(r"table\.insert\(record, 1, '([A-Z_]+)'\)", lua))
    return found


def test_every_record_field_the_lua_names_is_a_field() -> None:
    """A quoted record field anywhere in the Lua is one of ``Field``'s values."""
    seen: set[str] = set()
    for name, text in lua_files().items():
        used = record_fields(text)
        assert used <= FIELDS, (name, sorted(used - FIELDS))
        seen |= used
    # The parse found the fields (a regex that matched nothing would pass vacuously).
    assert {Field.STATUS, Field.SEQ, Field.LEASE_OWNER, Field.UPSTREAM_IDS} <= seen


def test_side_effect_fields_are_fields() -> None:
    """Each side effect's ``_state``/``_attempts`` fields, built in Lua, are ``Field`` values."""
    for effect in SIDE_EFFECTS:
        assert {f"{effect}_state", f"{effect}_attempts"} <= FIELDS


def test_every_status_the_lua_names_is_a_status() -> None:
    """Statuses and counts fields in the Lua are Python's statuses (counts: or ``tracking``)."""
    all_statuses = set(ALL_STATUSES)
    seen: set[str] = set()
    for name, text in lua_files().items():
        used = statuses(text)
        assert used <= all_statuses, (name, sorted(used - all_statuses))
        assert counts_fields(text) <= all_statuses | set(HOLDING_SLOT), name
        seen |= used
    assert {"pending", "submitting", "queued", "in_progress", "cancelled", "expired"} <= seen


def test_timer_kinds_are_the_task_names() -> None:
    for name, text in lua_files().items():
        assert timer_kinds(text) <= {SUBMIT_TASK, POLL_TASK}, name


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_reply_tags_match_the_reply_parser(script: str) -> None:
    """A transition script answers exactly the tags its Python reply type accepts."""
    own = (LUA / f"{script}.lua").read_text()
    assert reply_tags(own) == {str(t) for t in TAGS_BY_SCRIPT[script]}


def test_the_checks_catch_a_misspelt_name() -> None:
    """The parsers see a wrong field, status and tag (so the tests above can fail)."""
    lua = (
        "redis.call('HSET', K_REC, 'stauts', 'x', 'seq', '1')\n"
        "set_status(status, 'complete')\n"
        "return {'OKAY'}\n"
    )
    assert record_fields(lua) - FIELDS == {"stauts"}
    assert statuses(lua) - set(ALL_STATUSES) == {"complete"}
    assert reply_tags(lua) == {"OKAY"}
    assert counts_fields("count(K_COUNTS, 'pendng', 1)") == {"pendng"}


def test_every_script_assembles_and_names_its_keys_and_args() -> None:
    """Every script assembles (each include resolved) and reads KEYS/ARGV by number only in
    its header of named locals (the optional trailing inline-arm group is read from the end
    in ``_transition.lua``; claim_due's retirements are a list after ARGV[9])."""
    for script in (*SCRIPT_NAMES, *OTHER_SCRIPT_NAMES):
        text = source(script)
        assert not re.search(r"^--- @include", text, re.M), script
        own = re.sub(r"--[^\n]*", "", (LUA / f"{script}.lua").read_text())
        lines = [line for line in own.splitlines() if line.strip()]
        header = 0
        while header < len(lines) and re.match(r"local .*(KEYS|ARGV)\[\d+\]", lines[header]):
            header += 1
        assert header > 0, script
        late = re.findall(r"(?:KEYS|ARGV)\[\d+\]", "\n".join(lines[header:]))
        assert not late, (script, late)


def test_an_include_is_expanded_once() -> None:
    """A helper included twice (directly and through another helper) appears once."""
    text = assemble('--- @include "numbers"\n--- @include "rate_limit"\n')
    assert text.count("local function istr") == 1
