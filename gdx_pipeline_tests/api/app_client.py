"""Talking to the app in the API tests: a client whose server errors come back as responses, the
warehouse behind it, rows to post, and what every error response must look like."""

from __future__ import annotations

import warnings

import dagster as dg
import sqlalchemy as sa

from gdx_pipeline.api.app import create_app
from gdx_pipeline.api.settings import ApiSettings
from gdx_pipeline.dictionary import TABLES

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOKEN = "s3cret-token-for-tests"


def make_client(settings: ApiSettings, instance: dg.DagsterInstance) -> TestClient:
    """A client whose server errors come back as responses (as a real client would see them)."""
    return TestClient(create_app(settings, instance=instance), raise_server_exceptions=False)


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
