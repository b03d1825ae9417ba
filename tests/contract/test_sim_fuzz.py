"""Schemathesis drives the simulator from Together's own document (with the contract's named
exceptions): whatever it sends, the simulator never fails and answers as the spec says."""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from genqueue.simulator import SimConfig, create_app
from tests.contract.spec import contract_dict

AUTH = {"Authorization": "Bearer fuzz-key"}
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]


def _document() -> dict[str, Any]:
    spec = contract_dict()
    # Schemathesis takes the document's own base path: the simulator serves under /v2.
    spec["servers"] = [{"url": "/v2"}]
    for path in spec["paths"].values():
        for operation in path.values():
            operation.pop("servers", None)
    return spec


schema = schemathesis.openapi.from_dict(_document())


@pytest.fixture
def simulator() -> Any:
    """Any model accepted, so generated creates reach the job object."""
    return create_app(SimConfig(accept_unknown_models=True, seed=1))


@schema.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_simulator_answers_follow_the_spec(case: schemathesis.Case, simulator: Any) -> None:
    """No generated request gets a 5xx, and every documented answer matches the spec."""
    case.call_and_validate(app=simulator, headers=AUTH, checks=CHECKS)
