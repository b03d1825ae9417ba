"""Generation requests as a backend submits them, validated before anything is written."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from genqueue.producer.addresses import Network, url_refusal
from genqueue.producer.errors import FieldError, InvalidRequest
from genqueue.producer.keys import PRIORITIES

MAX_PROMPT_CHARS = 32_000
"""Together's own limit on ``prompt`` (``CreateVideoBody``: 1-32,000 characters)."""
MAX_MEDIA_JSON_BYTES = 64 * 1024
MAX_EXTRA_BODY_JSON_BYTES = 16 * 1024
"""``extra_body`` is for a field or two the spec does not know yet, not for payloads."""
MAX_METADATA_ENTRIES = 16
MAX_WEBHOOK_URL_CHARS = 2_048
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_MEDIA_DEPTH = 32

#: Error type of a request with neither prompt nor media (reported on the ``prompt`` field).
PROMPT_OR_MEDIA = "prompt_or_media"

#: Options genqueue keeps beside a request: never sent upstream, so never allowed in
#: ``extra_body`` (a misplaced one would silently reach Together instead of being refused).
GENQUEUE_OPTIONS = frozenset(
    {"metadata", "webhook_url", "deadline_s", "idempotency_key", "priority"}
)

#: Orders admission within a tenant (then the earliest deadline): ``producer/admission.py``.
Priority = Literal["high", "normal", "low"]


def _depth(value: object, limit: int) -> int:
    """Nesting depth of a JSON-like value, counting no further than ``limit + 1``."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def _bounded_json(value: object, max_bytes: int) -> None:
    """Raise ValueError unless ``value`` is plain JSON, nested at most ``MAX_MEDIA_DEPTH``
    levels, of at most ``max_bytes``."""
    if _depth(value, MAX_MEDIA_DEPTH) > MAX_MEDIA_DEPTH:
        raise ValueError(f"must be nested at most {MAX_MEDIA_DEPTH} levels deep")
    try:
        size = len(json.dumps(value, allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError):
        raise ValueError("must be plain JSON") from None
    if size > max_bytes:
        raise ValueError(f"must be at most {max_bytes} bytes of JSON")


ModelId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:+-]*$"),
]
MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
MetadataValue = Annotated[str, StringConstraints(max_length=256)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=MAX_WEBHOOK_URL_CHARS)]


class _SpecObject(BaseModel):
    """A nested object of Together's spec: its known fields typed, later additions kept.

    The spec leaves these objects open (no ``additionalProperties: false``) and which media
    fields a model accepts depends on the model, so unknown keys pass through unchanged.
    """

    model_config = ConfigDict(extra="allow", frozen=True)


class FrameImage(_SpecObject):
    """``VideoFrameImageInput``: an image pinned to a frame (a number, ``first`` or ``last``)."""

    input_image: Url
    frame: int | float | str | None = None

    @field_validator("frame", mode="before")
    @classmethod
    def _frame_number_or_end(cls, v: object) -> object:
        if v is None or v in ("first", "last"):
            return v
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError("must be a frame number, 'first' or 'last'")
        return v


class VideoRef(_SpecObject):
    """``VideoRef``: ``{"video": url}``."""

    video: Url


class AudioRef(_SpecObject):
    """``AudioRef``: ``{"audio": url}``."""

    audio: Url


class VideoMedia(_SpecObject):
    """``VideoMedia``: the media inputs; which ones a model accepts depends on the model."""

    frame_images: list[FrameImage] | None = None
    frame_videos: list[VideoRef] | None = None
    reference_images: list[Url] | None = None
    reference_videos: list[VideoRef] | None = None
    source_video: Url | VideoRef | None = None
    audio_inputs: list[Url | AudioRef] | None = None


class GenerationRequest(BaseModel):
    """A video generation: every field of Together's ``CreateVideoBody`` with the spec's
    constraints, ``extra_body`` for fields the spec does not know yet, and ``metadata`` tags
    kept by genqueue.

    Unknown top-level fields are refused (a typo must not silently become a default video, nor
    a misspelt genqueue option reach Together); new upstream fields go in ``extra_body``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    model: ModelId
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS)] | None = (
        None
    )
    negative_prompt: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)] | None = None
    width: Annotated[int, Field(ge=1, le=16_384)] | None = None
    height: Annotated[int, Field(ge=1, le=16_384)] | None = None
    seconds: str | None = None
    fps: Annotated[int, Field(ge=1, le=240)] | None = None
    steps: Annotated[int, Field(ge=10, le=50)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    # The spec types it integer, yet recommends 6.0-10.0: floats are accepted (tests/contract).
    guidance_scale: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    output_format: Literal["MP4", "WEBM"] | None = None
    output_quality: Annotated[int, Field(ge=0, le=100)] | None = None
    ratio: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    resolution: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    generate_audio: bool | None = None
    media: VideoMedia | None = None
    frame_images: list[FrameImage] | None = Field(
        default=None,
        description="Deprecated: use media.frame_images (still accepted and passed on).",
        json_schema_extra={"deprecated": True},
    )
    reference_images: list[Url] | None = Field(
        default=None,
        description="Deprecated: use media.reference_images (still accepted and passed on).",
        json_schema_extra={"deprecated": True},
    )
    extra_body: dict[str, Any] | None = Field(
        default=None,
        description="Fields Together's spec does not know yet, merged into the upstream "
        f"create body unchanged (plain JSON, at most {MAX_EXTRA_BODY_JSON_BYTES} bytes; "
        "known fields and genqueue options are refused here).",
    )
    metadata: Annotated[
        dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_ENTRIES)
    ] = Field(default_factory=dict)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_as_string(cls, v: object) -> object:
        # The upstream takes a string ("5"); accept a number from callers and normalise it.
        if isinstance(v, bool):
            raise ValueError("must be a number of seconds")
        if isinstance(v, int | float):
            v = f"{v:g}"
        if isinstance(v, str):
            try:
                n = float(v)
            except ValueError:
                raise ValueError("must be a number of seconds, e.g. '5'") from None
            if not 0 < n <= 600:
                raise ValueError("must be between 0 and 600 seconds")
        return v

    @field_validator("media", mode="before")
    @classmethod
    def _media_bounded(cls, v: object) -> object:
        if v is not None:
            if not isinstance(v, dict):
                raise ValueError("must be an object")
            _bounded_json(v, MAX_MEDIA_JSON_BYTES)
        return v

    @field_validator("extra_body")
    @classmethod
    def _extra_body_unknown_fields_only(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        _bounded_json(v, MAX_EXTRA_BODY_JSON_BYTES)
        known = sorted(k for k in v if k in cls.model_fields and k not in GENQUEUE_OPTIONS)
        if known:
            raise ValueError(f"{', '.join(known)}: a known field, give it as a field")
        options = sorted(k for k in v if k in GENQUEUE_OPTIONS)
        if options:
            raise ValueError(f"{', '.join(options)}: a genqueue option, never sent upstream")
        return v

    @model_validator(mode="after")
    def _prompt_or_media(self) -> Self:
        # The spec makes prompt optional (an image-to-video model may take only images), but a
        # request with neither text nor media describes no video at all.
        if self.prompt is None and not (self.media or self.frame_images or self.reference_images):
            raise PydanticCustomError(
                PROMPT_OR_MEDIA, "needs a prompt or media (e.g. media.frame_images)"
            )
        return self

    def upstream_body(self) -> dict[str, Any]:
        """The JSON body of the upstream's create call: the set fields, then ``extra_body``
        merged in unchanged (genqueue's own fields left out)."""
        body = self.model_dump(exclude_none=True, exclude={"metadata", "extra_body"})
        if self.extra_body:
            body.update(self.extra_body)
        return body


def _field_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"]) or "request"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == PROMPT_OR_MEDIA:
            path = "prompt"
        out.append(FieldError(path, msg))
    return out


def parse_request(data: GenerationRequest | dict[str, Any]) -> GenerationRequest:
    """Validate a request given as a model or a plain dict; raise :class:`InvalidRequest`."""
    if isinstance(data, GenerationRequest):
        return data
    if not isinstance(data, dict):
        raise InvalidRequest([FieldError("request", "must be an object")])
    try:
        req = GenerationRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(_field_errors(exc)) from None
    try:
        # Lone surrogates survive JSON escaping but break every UTF-8 consumer downstream.
        json.dumps(req.model_dump(), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest([FieldError("request", "contains invalid Unicode")]) from None
    return req


def validate_options(
    *,
    idempotency_key: str | None,
    webhook_url: str | None,
    deadline_s: float | None,
    max_deadline_s: float,
    allow_nets: tuple[Network, ...] = (),
    priority: str = "normal",
) -> None:
    """Check the options that travel beside a request; raise :class:`InvalidRequest`.

    A webhook URL is refused here for what needs no lookup (scheme, credentials, an
    internal address in any spelling; see ``producer/addresses.py``); workers check the
    resolved addresses again at delivery.
    """
    errors: list[FieldError] = []
    if idempotency_key is not None and (
        not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS
        or not idempotency_key.isprintable()
        or any(c.isspace() for c in idempotency_key)
    ):
        errors.append(
            FieldError(
                "idempotency_key",
                f"must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable characters, no spaces",
            )
        )
    if webhook_url is not None:
        why = (
            f"must be at most {MAX_WEBHOOK_URL_CHARS} characters"
            if len(webhook_url) > MAX_WEBHOOK_URL_CHARS
            else url_refusal(webhook_url, allow_nets)
        )
        if why:
            errors.append(FieldError("webhook_url", why))
    if deadline_s is not None and not (0 < deadline_s <= max_deadline_s):
        errors.append(FieldError("deadline_s", f"must be > 0 and <= {max_deadline_s:g} seconds"))
    if priority not in PRIORITIES:
        errors.append(FieldError("priority", "must be one of: " + ", ".join(PRIORITIES)))
    if errors:
        raise InvalidRequest(errors)
