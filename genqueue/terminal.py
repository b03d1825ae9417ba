"""Printing user and upstream text as data: no escape sequence, control character or rich
markup in it reaches the terminal as anything but visible characters.

Prompts, metadata, model ids and upstream error texts are chosen by whoever submitted the
request or by the upstream; printed raw they could move the cursor, retitle the terminal,
plant OSC-8 links or, through rich, inject ``[link=...]`` markup.
"""

from __future__ import annotations

import re

from rich.markup import escape as escape_markup
from rich.text import Text

# C0 and C1 controls (ESC, BEL, CR, newline, ...), DEL, and the bidirectional overrides that
# reorder what is shown (U+202A-U+202E, U+2066-U+2069).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a visible ``\\xNN`` / ``\\uNNNN``."""
    return _CONTROL.sub(_visible, text)


def inert(text: str) -> Text:
    """A rich ``Text`` that shows ``text`` literally (markup not parsed, controls escaped)."""
    return Text(escape_controls(text))


def inert_markup(text: str) -> str:
    """``text`` made safe to embed in a rich markup string (controls and ``[`` escaped)."""
    return escape_markup(escape_controls(text))
