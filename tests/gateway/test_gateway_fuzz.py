"""Schemathesis against the gateway's own OpenAPI document, in-process (ASGI), with a key."""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from genqueue.gateway import create_app
from genqueue.producer import Settings

KEY = "gq-fuzz-key-0123456789abcdef"
#: Examples per operation in the fuzzing phase (the coverage phase adds its boundary cases).
MAX_EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTH = {"Authorization": f"Bearer {KEY}"}
#: Long-polls stay short here (generated ids never exist, but a bound keeps it certain).
MAX_WAIT_S = 1.0


#: The document comes from an app built only to describe itself; requests go to a live one.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(), api_keys=[KEY], max_wait_s=MAX_WAIT_S).openapi()
)


@pytest.fixture
def gateway(settings: Settings) -> Any:
    """The app under test, on the test Redis (schemathesis runs its lifespan)."""
    return create_app(settings, api_keys=[KEY], max_wait_s=MAX_WAIT_S)


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    # One app (and Redis database) per operation, shared by its examples, on purpose.
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_no_input_makes_a_server_error(case: schemathesis.Case, gateway: Any) -> None:
    """No generated request (valid or not) gets a 5xx, and every answer matches the schema."""
    case.call_and_validate(app=gateway, headers=AUTH, checks=CHECKS)
