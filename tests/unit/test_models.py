"""Request validation: any input gives a valid request or one clear InvalidRequest."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genqueue.producer.errors import InvalidRequest
from genqueue.producer.models import GenerationRequest, parse_request, validate_options

VALID = {"model": "minimax/video-01-director", "prompt": "a red fox in snow"}


def test_minimal_request_is_valid_and_body_excludes_metadata() -> None:
    """A model and a prompt suffice; metadata stays out of the upstream body."""
    req = parse_request({**VALID, "metadata": {"customer": "c-42"}, "width": 1366})
    assert req.upstream_body() == {**VALID, "width": 1366}
    assert req.metadata == {"customer": "c-42"}


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"model": ""}, "model"),
        ({"model": "has space"}, "model"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 8001}, "prompt"),
        ({"width": 10}, "width"),
        ({"height": 100_000}, "height"),
        ({"seconds": "abc"}, "seconds"),
        ({"seconds": -1}, "seconds"),
        ({"output_format": "GIF"}, "output_format"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"ratio": "wide"}, "ratio"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"bad key": "v"}}, "metadata.bad key.[key]"),
        ({"media": {"frame_images": ["x" * 70_000]}}, "media"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_field_is_named(patch: dict[str, Any], field: str) -> None:
    """Each kind of bad input raises InvalidRequest naming the offending field."""
    with pytest.raises(InvalidRequest) as info:
        parse_request({**VALID, **patch})
    assert field in [e.field for e in info.value.errors]
    assert field.split(".")[0] in str(info.value)


def test_missing_model_and_prompt_both_reported() -> None:
    """Every missing required field is reported at once."""
    with pytest.raises(InvalidRequest) as info:
        parse_request({})
    assert {e.field for e in info.value.errors} == {"model", "prompt"}


def test_seconds_number_is_normalised_to_string() -> None:
    """A number of seconds is sent upstream as the string the API expects."""
    assert parse_request({**VALID, "seconds": 5}).seconds == "5"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "a b"}, "idempotency_key"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
        ({"webhook_url": "ftp://x"}, "webhook_url"),
        ({"webhook_url": "https://"}, "webhook_url"),
        ({"deadline_s": 0}, "deadline_s"),
        ({"deadline_s": float("nan")}, "deadline_s"),
        ({"deadline_s": 10**9}, "deadline_s"),
    ],
)
def test_bad_options_are_named(kwargs: dict[str, Any], field: str) -> None:
    """Options beside the request are checked and named too."""
    full: dict[str, Any] = {"idempotency_key": None, "webhook_url": None, "deadline_s": None}
    full.update(kwargs)
    with pytest.raises(InvalidRequest) as info:
        validate_options(max_deadline_s=86400.0, **full)
    assert [e.field for e in info.value.errors] == [field]


def _containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    # A named function, not a lambda: hypothesis >= 6.150 cannot see a multi-line lambda's
    # use of its argument and fails the test with a deprecation warning.
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=10), children, max_size=4
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    _containers,
    max_leaves=20,
)
fields = st.sampled_from([*GenerationRequest.model_fields, "bogus"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(fields, json_values, max_size=8))
def test_any_input_gives_a_request_or_invalid_request(data: dict[str, Any]) -> None:
    """Arbitrary JSON-like input never crashes validation with anything but InvalidRequest."""
    try:
        req = parse_request(data)
    except InvalidRequest as exc:
        assert exc.errors
    else:
        assert req.model and req.prompt.strip()


def test_deep_media_and_lone_surrogates_are_refused() -> None:
    """Absurdly nested media and strings that are not valid Unicode are refused up front."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(900):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(InvalidRequest, match="media"):
        parse_request({**VALID, "media": deep})
    for bad in ({"prompt": "x\ud800y"}, {"media": {"caption": "x\ud800y"}}):
        with pytest.raises(InvalidRequest, match=r"(?i)unicode"):
            parse_request({**VALID, **bad})
