"""Together's OpenAPI document for the video operations, as the contract tests apply it.

``together-videos.openapi.yaml`` beside this file is Together's own excerpt, unchanged. The
tests validate against it with two kinds of edits, both listed here and nowhere else:

- ``STRICTER``: the job object may carry no field the spec does not name (the spec leaves
  ``VideoJob`` open, but a field a client may come to rely on must be one Together sends).
- ``EXCEPTIONS``: where Together's docs and answers disagree with the spec, the spec is
  relaxed for exactly that point; each entry says why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = Path(__file__).with_name("together-videos.openapi.yaml")
#: Where the tests' in-process simulator answers (added to each operation's servers).
TEST_SERVERS = ("http://sim/v2", "http://testserver/v2")

Schema = dict[str, Any]


def _schemas(spec: Schema) -> Schema:
    schemas: Schema = spec["components"]["schemas"]
    return schemas


def _queued_and_cancelled(spec: Schema) -> None:
    _schemas(spec)["VideoStatus"]["enum"] += ["queued", "cancelled"]


def _cost_is_decimal(spec: Schema) -> None:
    cost = _schemas(spec)["VideoJob"]["properties"]["outputs"]["properties"]["cost"]
    cost["type"] = "number"


def _null_for_absent_optional(spec: Schema) -> None:
    props = _schemas(spec)["VideoJob"]["properties"]
    for name in ("completed_at", "error", "outputs"):
        prop = props[name]
        if "type" in prop:
            prop["type"] = [prop["type"], "null"]


def _guidance_scale_float(spec: Schema) -> None:
    _schemas(spec)["CreateVideoBody"]["properties"]["guidance_scale"]["type"] = "number"


#: Each spec exception: (why, how the spec is relaxed for it).
EXCEPTIONS: dict[str, tuple[str, Callable[[Schema], None]]] = {
    "queued_and_cancelled_statuses": (
        "The spec's VideoStatus lists in_progress, completed, failed; Together's docs' status "
        "table and the older SDK also have queued (before generation) and cancelled.",
        _queued_and_cancelled,
    ),
    "cost_as_decimal": (
        "The spec types outputs.cost as an integer; the docs' example shows 0.28 (US dollars).",
        _cost_is_decimal,
    ),
    "null_for_absent_optional": (
        "Together's answers (docs' examples, SDK models) send null for completed_at, error and "
        "outputs until they apply; the spec would omit them.",
        _null_for_absent_optional,
    ),
    "guidance_scale_float": (
        "The spec types guidance_scale as an integer while its own text recommends 6.0-10.0.",
        _guidance_scale_float,
    ),
}


def _stricter(spec: Schema) -> None:
    """The job object and its parts carry only the spec's fields."""
    job = _schemas(spec)["VideoJob"]
    job["additionalProperties"] = False
    for name in ("error", "outputs"):
        job["properties"][name]["additionalProperties"] = False


def raw_spec() -> Schema:
    """Together's document as published, plus the test servers."""
    spec: Schema = yaml.safe_load(SPEC_PATH.read_text())
    for path in spec["paths"].values():
        for operation in path.values():
            operation["servers"] += [{"url": url} for url in TEST_SERVERS]
    return spec


def contract_dict(without: frozenset[str] = frozenset()) -> Schema:
    """The spec as the tests apply it, as a dict (``without``: exceptions left out)."""
    spec = copy.deepcopy(raw_spec())
    _stricter(spec)
    for name, (_, relax) in EXCEPTIONS.items():
        if name not in without:
            relax(spec)
    return spec


@cache
def contract(without: frozenset[str] = frozenset()) -> OpenAPI:
    """The spec as the tests apply it (``without``: exceptions left out, to show each is
    needed)."""
    return OpenAPI.from_dict(contract_dict(without))


class SpecRequest:
    """An ``httpx.Request`` as openapi-core's request protocol."""

    def __init__(self, request: httpx.Request) -> None:
        url = urlsplit(str(request.url))
        self.host_url = f"{url.scheme}://{url.netloc}"
        self.path = url.path
        self.method = request.method.lower()
        self.body: bytes | None = request.content or None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qs(url.query)),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )


class SpecResponse:
    """An ``httpx.Response`` as openapi-core's response protocol."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "")
        self.headers = Headers(dict(response.headers))
        self.data: bytes | None = response.content


def validate_exchange(
    request: httpx.Request, response: httpx.Response, api: OpenAPI | None = None
) -> None:
    """Raise unless the request and its answer both follow the contract."""
    api = api or contract()
    api.validate_request(SpecRequest(request))
    api.validate_response(SpecRequest(request), SpecResponse(response))
