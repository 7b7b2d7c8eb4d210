"""Schemathesis against the app's own OpenAPI schema, on SQLite and PostgreSQL: generated
requests (valid and invalid) never get a 500, an undocumented status or content type, or a
body that breaks the documented schema; data the schema admits is accepted, data it refuses is
rejected. Bounded to a few examples per operation (`GDX_SCHEMATHESIS_EXAMPLES` for more).

A batch of rows is judged row by row: a request whose rows break the row schema is answered
200 with those rows rejected, not 4xx as a whole. So for `POST /tables/*/rows` a row the
published schema refuses must come back rejected, and one it admits may be rejected only for a
rule no JSON Schema can state (an id that must exist, a real date within the bounds, no
repeated id); `negative_data_rejection` judges whatever else a negative case breaks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import dagster as dg
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gdx_pipeline.api.app import create_app
from gdx_pipeline.api.models import TABLE_MODELS, class_name
from gdx_pipeline.api.settings import ApiSettings
from gdx_pipeline_tests.api.row_schema import only_rules_no_schema_states, rows_breaking

MAX_EXAMPLES = int(os.environ.get("GDX_SCHEMATHESIS_EXAMPLES", "12"))
ROWS_PATH = re.compile(r"/tables/(?P<table>\w+)/rows")


def _schema_refused_rows(case: schemathesis.Case) -> set[int] | None:
    """Positions of the rows the published row schema refuses; None when the case is not a JSON
    batch of rows."""
    match = ROWS_PATH.fullmatch(case.path)
    if case.method.upper() != "POST" or match is None or case.media_type != "application/json" or not isinstance(case.body, dict):
        return None
    rows = case.body.get("rows")
    if not isinstance(rows, list):
        return None
    row_schema = case.operation.schema.raw_schema["components"]["schemas"][class_name(TABLE_MODELS[match["table"]].spec, "RowIn")]
    return rows_breaking(row_schema, rows)


def rows_are_judged_by_the_published_row_schema(ctx, response, case: schemathesis.Case) -> None:  # noqa: ANN001
    """A 200 to a JSON batch rejects every row the row schema refuses, and a row it admits only
    for a rule the schema cannot state."""
    refused = _schema_refused_rows(case)
    if refused is None or response.status_code != 200:
        return
    rejected = {r["index"]: r["reasons"] for r in json.loads(response.content)["rejected"]}
    missed = sorted(refused - set(rejected))
    assert not missed, f"rows {missed} break the published row schema but were accepted"
    for index, reasons in rejected.items():
        if index not in refused:
            assert only_rules_no_schema_states(reasons), f"row {index} fits the published row schema but was rejected for {reasons}"


def _csv_sent_fits_the_schema(case: schemathesis.Case, response) -> bool:  # noqa: ANN001
    """A CSV body is text on the wire: a "boolean" body arrives as the text `false`, which the
    schema may well admit. (Schemathesis allows for this with JSON and forms, not CSV.)"""
    if case.media_type != "text/csv" or isinstance(case.body, str):
        return False
    csv_schema = case.operation.definition.raw["requestBody"]["content"]["text/csv"]["schema"]
    return jsonschema.Draft202012Validator(csv_schema).is_valid(response.request.body.decode("utf-8"))


def negative_data_is_rejected_row_by_row(ctx, response, case: schemathesis.Case) -> None:  # noqa: ANN001
    """`negative_data_rejection`, except that a batch answered 200 with the rows that break the
    schema rejected (checked above) is a rejection too, and so is a CSV body that is valid text.
    413 refuses a batch over `maxItems` (or the byte cap), as documented; schemathesis expects 422."""
    if response.status_code == 413:
        return None
    if response.status_code == 200 and (_schema_refused_rows(case) or _csv_sent_fits_the_schema(case, response)):
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_is_rejected_row_by_row,
    rows_are_judged_by_the_published_row_schema,
]


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
