"""Generation requests as a backend submits them, validated before anything is written."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from genqueue.producer.addresses import Network, url_refusal
from genqueue.producer.errors import FieldError, InvalidRequest

MAX_PROMPT_CHARS = 8_000
MAX_MEDIA_JSON_BYTES = 64 * 1024
MAX_METADATA_ENTRIES = 16
MAX_WEBHOOK_URL_CHARS = 2_048
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_MEDIA_DEPTH = 32


def _depth(value: object, limit: int) -> int:
    """Nesting depth of a JSON-like value, counting no further than ``limit + 1``."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


ModelId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:+-]*$"),
]
MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
MetadataValue = Annotated[str, StringConstraints(max_length=256)]


class GenerationRequest(BaseModel):
    """A video generation: the upstream's create fields plus ``metadata`` tags kept by genqueue.

    Unknown fields are refused (a typo must not silently become a default video).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    model: ModelId
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS)]
    negative_prompt: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)] | None = None
    width: Annotated[int, Field(ge=64, le=4096)] | None = None
    height: Annotated[int, Field(ge=64, le=4096)] | None = None
    seconds: str | None = None
    fps: Annotated[int, Field(ge=1, le=120)] | None = None
    steps: Annotated[int, Field(ge=1, le=500)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    guidance_scale: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    output_format: Literal["MP4", "WEBM"] | None = None
    output_quality: Annotated[int, Field(ge=1, le=100)] | None = None
    ratio: Annotated[str, StringConstraints(pattern=r"^\d{1,3}:\d{1,3}$")] | None = None
    resolution: Annotated[str, StringConstraints(min_length=1, max_length=16)] | None = None
    generate_audio: bool | None = None
    media: dict[str, Any] | None = None
    metadata: Annotated[
        dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_ENTRIES)
    ] = Field(default_factory=dict)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str) -> str:
        if not v.strip():
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

    @field_validator("media")
    @classmethod
    def _media_bounded(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            if _depth(v, MAX_MEDIA_DEPTH) > MAX_MEDIA_DEPTH:
                raise ValueError(f"must be nested at most {MAX_MEDIA_DEPTH} levels deep")
            try:
                size = len(json.dumps(v, allow_nan=False).encode())
            except (TypeError, ValueError, RecursionError):
                raise ValueError("must be plain JSON") from None
            if size > MAX_MEDIA_JSON_BYTES:
                raise ValueError(f"must be at most {MAX_MEDIA_JSON_BYTES} bytes of JSON")
        return v

    def upstream_body(self) -> dict[str, Any]:
        """The JSON body of the upstream's create call (genqueue's own fields left out)."""
        return self.model_dump(exclude_none=True, exclude={"metadata"})


def _field_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"]) or "request"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
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
    if errors:
        raise InvalidRequest(errors)
