"""Fixtures the API tests share: a real app on the `database_url` warehouse (SQLite and
PostgreSQL), with a real test Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from gdx_pipeline.api.settings import ApiSettings
from gdx_pipeline_tests.api.app_client import TestClient, make_client


@pytest.fixture(scope="module")
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def api_settings(database_url: str, tmp_path: Path) -> ApiSettings:
    return ApiSettings.for_warehouse(database_url, str(tmp_path / "data"))


@pytest.fixture
def client(api_settings: ApiSettings, dagster_instance: dg.DagsterInstance) -> Iterator[TestClient]:
    with make_client(api_settings, dagster_instance) as test_client:
        yield test_client
