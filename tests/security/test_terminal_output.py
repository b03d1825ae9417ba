"""User and upstream text reaches the terminal as inert data: escape sequences, OSC-8 links
and rich markup in a prompt, an upstream error, a model id or a pause reason are shown as
visible characters, never interpreted."""

from __future__ import annotations

import io

import pytest
import redis
from click.testing import CliRunner
from rich.console import Console

import genqueue.cli
from genqueue.cli import main, record_table, stats_tables
from genqueue.producer import Client, Settings, Stats
from genqueue.producer.keys import Field
from genqueue.terminal import escape_controls, inert_markup

OSC8 = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
CLEAR = "\x1b[2J\x1b[H"
TITLE = "\x1b]0;pwned\x07"
MARKUP = "[bold red]loud[/bold red] [link=https://evil.example/]here[/link]"
HOSTILE = f"a fox {OSC8} {CLEAR}{TITLE} {MARKUP} \u202eevil\r\nfake: row"


def _render(renderable: object) -> str:
    """What a real (colour) terminal would receive."""
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=400, color_system="truecolor").print(renderable)
    return out.getvalue()


def _assert_inert(shown: str) -> None:
    # Nothing of the hostile text is interpreted: no OSC (links, titles), no cursor/clear
    # sequence, no bidi override, the markup printed literally.
    for raw in ("\x1b]", "\x1b[2J", "\x07", "\u202e", "\r"):
        assert raw not in shown
    assert "evil.example" in shown and "\\x1b]8;;https://evil.example/" in shown
    assert "[bold red]loud[/bold red]" in shown
    assert "[link=https://evil.example/]here[/link]" in shown
    assert "\\u202eevil" in shown


def test_escape_controls_makes_every_control_visible() -> None:
    """C0/C1 controls, DEL and bidi overrides become \\xNN / \\uNNNN; other text is kept."""
    assert escape_controls("a\x1b[31mb\x7f\x9b\u2066c é 🎬") == "a\\x1b[31mb\\x7f\\x9b\\u2066c é 🎬"
    assert inert_markup("[b]x[/b]\x1b") == "\\[b]x\\[/b]\\x1b"


@pytest.fixture
def hostile_id(settings: Settings) -> str:
    """A request whose prompt and upstream error are hostile."""
    with Client(settings) as client:
        request_id = client.submit({"model": "minimax/video-01-director", "prompt": HOSTILE})
    raw = redis.Redis.from_url(settings.redis_url)
    raw.hset(settings.keys.record(request_id), Field.ERROR, f"upstream said: {HOSTILE}")
    raw.close()
    return request_id


def test_status_prints_prompt_and_upstream_error_inert(
    settings: Settings, hostile_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`genqueue status` shows a hostile prompt and upstream error as visible characters."""
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)
    env = {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_KEY_PREFIX": settings.key_prefix}
    result = CliRunner().invoke(main, ["status", hostile_id], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    _assert_inert(result.stdout)
    assert "upstream said:" in result.stdout


def test_record_table_is_inert_on_a_real_terminal(settings: Settings, hostile_id: str) -> None:
    """On a colour terminal the record table still interprets none of the user's text."""
    with Client(settings) as client:
        view = client.get(hostile_id)
    _assert_inert(_render(record_table(view)))


def test_stats_tables_show_model_and_pause_reason_inert() -> None:
    """Model ids and the upstream's pause reason in `genqueue stats` are shown literally."""
    stats = Stats(
        requests_by_status={},
        tracking=0,
        active_upstream=0,
        inflight=0,
        queue_ready=0,
        queue_deferred=0,
        finished={(HOSTILE, "completed"): 1},
        cost_micro_usd={HOSTILE: 5},
        paused={"reason": HOSTILE, "code": "402", "until_ms": ""},
    )
    shown = "".join(_render(t) for t in stats_tables(stats))
    _assert_inert(shown)


def test_cli_error_lines_are_inert(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error line quoting user input (an unknown id) prints its control characters visibly."""
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)
    env = {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_KEY_PREFIX": settings.key_prefix}
    result = CliRunner().invoke(main, ["status", f"nope{TITLE}{CLEAR}"], env=env)
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "\\x1b]0;pwned\\x07" in result.stderr
