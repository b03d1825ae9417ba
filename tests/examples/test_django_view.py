"""examples/django_view.py: the views' logic with a real sync ``Client`` on the test Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from genqueue.producer import Client, Settings
from tests.examples import load_example

views = load_example("django_view")

REQ = {"model": "minimax/video-01-director", "prompt": "a red fox", "metadata": {"order": "o-1"}}


@pytest.fixture
def gq(settings: Settings) -> Iterator[Client]:
    with Client(settings) as c:
        yield c


def _fields(reply: object) -> dict[str, str]:
    return {f["field"]: f["message"] for f in reply.body["error"]["fields"]}  # type: ignore[attr-defined]


def test_submit_answers_202_with_the_id_of_a_stored_record(gq: Client) -> None:
    """A valid body is enqueued: 202 with the id and a Location, and the record exists pending
    with the request, metadata and webhook given."""
    reply = views.submit_generation(
        {**REQ, "webhook_url": "https://app.example/hooks"}, gq, "order-1"
    )
    assert reply.status == 202
    rid = reply.body["id"]
    assert reply.headers["Location"] == reply.body["status_url"] == f"/videos/{rid}/"
    view = gq.get(rid)
    assert view.status == "pending" and view.model == REQ["model"]
    assert view.request["prompt"] == "a red fox" and "webhook_url" not in view.request
    assert view.metadata == {"order": "o-1"}
    assert view.webhook_url == "https://app.example/hooks"
    assert view.idempotency_key == "order-1"


def test_the_same_idempotency_key_gives_the_same_id(gq: Client, settings: Settings) -> None:
    """Two submits with one Idempotency-Key name one request (one record); another key or none
    makes a new one."""
    first = views.submit_generation(REQ, gq, "order-7")
    again = views.submit_generation({**REQ, "prompt": "changed"}, gq, "order-7")
    assert again.status == 202 and again.body["id"] == first.body["id"]
    assert gq.get(first.body["id"]).request["prompt"] == "a red fox"  # the first body wins
    other = views.submit_generation(REQ, gq, "order-8")
    none = views.submit_generation(REQ, gq, None)
    assert len({first.body["id"], other.body["id"], none.body["id"]}) == 3
    r = redis.Redis.from_url(settings.redis_url)
    try:
        assert len(list(r.scan_iter(f"{settings.key_prefix}:req:*"))) == 3
    finally:
        r.close()


@pytest.mark.parametrize(
    ("body", "key", "bad"),
    [
        ({"model": REQ["model"]}, None, "prompt"),
        ({**REQ, "width": 0}, None, "width"),
        ({**REQ, "colour": "red"}, None, "colour"),
        ({**REQ, "deadline_s": "soon"}, None, "deadline_s"),
        ({**REQ, "deadline_s": -5}, None, "deadline_s"),
        ({**REQ, "webhook_url": "ftp://x"}, None, "webhook_url"),
        (REQ, "has spaces", "Idempotency-Key"),
        (["not", "an", "object"], None, "body"),
    ],
)
def test_bad_input_answers_400_naming_the_field(
    gq: Client, settings: Settings, body: object, key: str | None, bad: str
) -> None:
    """Bad input answers 400 with the offending field named, and writes nothing."""
    reply = views.submit_generation(body, gq, key)
    assert reply.status == 400
    assert bad in _fields(reply), reply.body
    r = redis.Redis.from_url(settings.redis_url)
    try:
        assert list(r.scan_iter(f"{settings.key_prefix}:*")) == []
    finally:
        r.close()


def test_a_body_that_is_not_json_answers_400() -> None:
    """``parse_json`` returns the parsed body, or a 400 reply for bytes that are not JSON."""
    assert views.parse_json(b'{"a": 1}') == {"a": 1}
    for raw in (b"{nope", b"", b"\xff\xfe"):
        reply = views.parse_json(raw)
        assert isinstance(reply, views.Reply) and reply.status == 400


def test_status_answers_the_record_or_404(gq: Client) -> None:
    """The status view answers 200 with the JSON-ready record of a known id, 404 otherwise."""
    rid = views.submit_generation(REQ, gq, None).body["id"]
    reply = views.generation_status(rid, gq)
    assert reply.status == 200 and reply.body["id"] == rid and reply.body["status"] == "pending"
    json.dumps(reply.body)  # what JsonResponse will do
    assert views.generation_status("no-such-id", gq).status == 404


def test_an_unreachable_redis_answers_503() -> None:
    """With Redis down, submit and status answer 503 instead of raising."""
    from genqueue.local_redis import free_port

    down = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", key_prefix="gq-down")
    with Client(down) as c:
        assert views.submit_generation(REQ, c, "k").status == 503
        assert views.generation_status("x", c).status == 503


def test_the_module_imports_without_django() -> None:
    """The example imports whether or not Django is installed (its core needs no Django)."""
    try:
        import django  # noqa: F401
    except ImportError:
        assert views.DJANGO_AVAILABLE is False
    else:
        assert views.DJANGO_AVAILABLE is True
