"""Fixtures shared by the API tests: a real app on the `database_url` warehouse (SQLite and
PostgreSQL), with a real test Dagster instance. Imported by name into each test_api_* module."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import jsonschema
import pytest
import sqlalchemy as sa

from gdx_pipeline.api.app import create_app
from gdx_pipeline.api.settings import ApiSettings
from gdx_pipeline.dictionary import TABLES

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def api_settings(database_url: str, tmp_path: Path) -> ApiSettings:
    return ApiSettings.for_warehouse(database_url, str(tmp_path / "data"))


def make_client(settings: ApiSettings, instance: dg.DagsterInstance) -> TestClient:
    """A client whose server errors come back as responses (as a real client would see them)."""
    return TestClient(create_app(settings, instance=instance), raise_server_exceptions=False)


@pytest.fixture
def client(api_settings: ApiSettings, dagster_instance: dg.DagsterInstance) -> Iterator[TestClient]:
    with make_client(api_settings, dagster_instance) as test_client:
        yield test_client


def app_engine(client: TestClient) -> sa.Engine:
    return client.app.state.engine


def count_rows(client: TestClient, table: str) -> int:
    with app_engine(client).connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def department_rows(ids: range | list[int]) -> list[dict]:
    return [{"id": i, "department": f"Department {i}"} for i in ids]


def seed_departments_and_jobs(client: TestClient, departments: int = 5, jobs: int = 5) -> None:
    """Referenced rows for hired_employees, through the API itself."""
    assert client.post("/tables/departments/rows", json={"rows": department_rows(range(1, departments + 1))}).status_code == 200
    job_rows = [{"id": i, "job": f"Job {i}"} for i in range(1, jobs + 1)]
    assert client.post("/tables/jobs/rows", json={"rows": job_rows}).status_code == 200


def assert_json_error(response, status: int) -> dict:  # noqa: ANN001
    """Every error: the status, a JSON body with `error` and `message`, no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message"}, body
    assert body["message"] and "Traceback" not in response.text and 'File "' not in response.text
    return body


ALL_TABLES = list(TABLES)


# Rejections of a row the published schema admits: rules that need the database, other rows or
# a calendar, which no JSON Schema can state.
RULES_NO_SCHEMA_STATES = ("no such id in", "duplicate of an earlier row", "datetime: must be", "datetime: not an ISO-8601 datetime")


def as_judged(row: object) -> object:
    """A row as its values are judged: strings trimmed of surrounding whitespace (the schema says so)."""
    return {key: value.strip() if isinstance(value, str) else value for key, value in row.items()} if isinstance(row, dict) else row


def rows_breaking(row_schema: dict, rows: list) -> set[int]:
    """Positions of the rows a published row schema refuses."""
    validator = jsonschema.Draft202012Validator(row_schema)
    return {i for i, row in enumerate(rows) if not validator.is_valid(as_judged(row))}


def only_rules_no_schema_states(reasons: list[str]) -> bool:
    return all(any(rule in reason for rule in RULES_NO_SCHEMA_STATES) for reason in reasons)
