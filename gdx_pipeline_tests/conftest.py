"""Fixtures every test folder shares, which build real warehouses: a SQLite file, and a fresh
schema on the PostgreSQL server named by GDX_TEST_POSTGRES_URL. PostgreSQL tests skip only
outside CI; under CI=true a missing or unreachable server is an error, never a silent skip."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine
from gdx_pipeline_tests.paths import GLOBANT_DATA, GLOBANT_FILES
from gdx_pipeline_tests.postgres_server import made_on_server, postgres_server_url, schema_url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a brand-new schema, dropped after the test."""
    server = postgres_server_url()
    schema = f"gdx_test_{uuid.uuid4().hex[:12]}"
    with made_on_server(server, [f"CREATE SCHEMA {schema}"], [f"DROP SCHEMA IF EXISTS {schema} CASCADE"]):
        yield schema_url(server, schema)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gdx.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_warehouse_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def folders(tmp_path: Path) -> DataFolders:
    return DataFolders(tmp_path / "data").ensure()


@pytest.fixture
def globant_landing(folders: DataFolders) -> DataFolders:
    """The challenge's real files, copied into a temporary landing folder."""
    for name in GLOBANT_FILES:
        shutil.copy(GLOBANT_DATA / name, folders.landing / name)
    return folders
