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
        ({"prompt": "x" * 32_001}, "prompt"),
        ({"width": 0}, "width"),
        ({"height": 100_000}, "height"),
        ({"seconds": "abc"}, "seconds"),
        ({"seconds": -1}, "seconds"),
        ({"output_format": "GIF"}, "output_format"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"steps": 5}, "steps"),
        ({"steps": 51}, "steps"),
        ({"ratio": ""}, "ratio"),
        ({"frame_images": [{"frame": "last"}]}, "frame_images.0.input_image"),
        (
            {"media": {"frame_images": [{"input_image": "a", "frame": "middle"}]}},
            "media.frame_images.0.frame",
        ),
        ({"extra_body": {"steps": 20}}, "extra_body"),
        ({"extra_body": {"webhook_url": "https://x.example"}}, "extra_body"),
        ({"extra_body": {"blob": "x" * 20_000}}, "extra_body"),
        ({"webhok_url": "https://x.example"}, "webhok_url"),
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


def test_missing_fields_all_reported() -> None:
    """Every bad field is reported at once."""
    with pytest.raises(InvalidRequest) as info:
        parse_request({"prompt": "", "steps": 1})
    assert {e.field for e in info.value.errors} == {"model", "prompt", "steps"}


def test_neither_prompt_nor_media_is_refused() -> None:
    """prompt is optional as in the spec, but a request needs a prompt or media."""
    with pytest.raises(InvalidRequest, match="prompt or media") as info:
        parse_request({"model": "kwaivgI/kling-2.1-master"})
    assert [e.field for e in info.value.errors] == ["prompt"]


def test_media_only_request_is_valid_and_passed_on_unchanged() -> None:
    """An image-to-video request with only media.frame_images is accepted as sent."""
    media = {"frame_images": [{"input_image": "https://example.com/a.png", "frame": 0}]}
    req = parse_request({"model": "kwaivgI/kling-2.1-master", "media": media})
    assert req.upstream_body() == {"model": "kwaivgI/kling-2.1-master", "media": media}


def test_deprecated_top_level_images_are_accepted_and_passed_on() -> None:
    """Top-level frame_images/reference_images (deprecated, still in the spec) reach the body."""
    frames = [{"input_image": "a", "frame": "first"}, {"input_image": "b", "frame": 48.5}]
    req = parse_request({"model": "m", "frame_images": frames, "reference_images": ["r"]})
    assert req.upstream_body() == {
        "model": "m",
        "frame_images": frames,
        "reference_images": ["r"],
    }


def test_unknown_media_fields_pass_through() -> None:
    """media is open in the spec (fields depend on the model): unknown keys are kept."""
    media = {"mask_image": {"url": "m"}, "source_video": {"video": "v"}}
    assert parse_request({**VALID, "media": media}).upstream_body()["media"] == media


def test_extra_body_is_merged_unchanged_and_kept_out_of_the_fields() -> None:
    """A field the spec does not know yet goes through extra_body into the body unchanged."""
    extra = {"camera_motion": {"type": "dolly", "speed": 0.5}, "loop": True}
    req = parse_request({**VALID, "extra_body": extra, "metadata": {"k": "v"}})
    assert req.upstream_body() == {**VALID, **extra}


def test_spec_float_guidance_and_negative_seed_are_accepted() -> None:
    """guidance_scale takes the floats the spec's own text recommends; seed any int64."""
    req = parse_request({**VALID, "guidance_scale": 7.5, "seed": -1, "steps": 10})
    assert req.upstream_body()["guidance_scale"] == 7.5


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
        assert req.model and (req.prompt is None or req.prompt.strip())


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
