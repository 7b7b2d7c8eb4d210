"""Schemathesis against the app's own OpenAPI schema, on SQLite and PostgreSQL: generated
requests (valid and invalid) never get a 500, an undocumented status or content type, or a
body that breaks the documented schema. Bounded to a few examples per operation."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gdx_pipeline.api.app import create_app
from gdx_pipeline.api.settings import ApiSettings
from gdx_pipeline_tests.test_api_fixtures import api_settings, dagster_instance  # noqa: F401  (fixtures)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]
MAX_EXAMPLES = 12


@pytest.fixture
def api_schema(api_settings: ApiSettings, dagster_instance: dg.DagsterInstance) -> Iterator[schemathesis.BaseSchema]:
    app = create_app(api_settings, instance=dagster_instance)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        app.state.engine.dispose()


# schemathesis' own pytest plugin (`from_fixture`) does not run under pytest 9, so each
# operation's strategy is driven with Hypothesis directly.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_api_conforms_to_its_own_openapi_schema(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    if mode == GenerationMode.NEGATIVE:  # an operation without inputs has no invalid request
        operations = [op for op in operations if len(op.query) or len(op.body)]
    for operation in operations:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def call_and_validate(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        call_and_validate()
