"""Fixtures that build real warehouses: a SQLite file, and a fresh schema on the PostgreSQL
server named by GDX_TEST_POSTGRES_URL. PostgreSQL tests skip only outside CI; under CI=true a
missing or unreachable server is an error, never a silent skip."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine, normalize_database_url

REPO_ROOT = Path(__file__).resolve().parents[1]
# The challenge's three files, shipped with the tests (see data/globant/README.md).
GLOBANT_DATA = Path(__file__).resolve().parent / "data" / "globant"
GLOBANT_FILES = ("departments.csv", "jobs.csv", "hired_employees.csv")
POSTGRES_URL_ENV = "GDX_TEST_POSTGRES_URL"


def postgres_server_url() -> str:
    """The server URL from the environment; skip (locally) or fail (CI) when there is none."""
    url = os.environ.get(POSTGRES_URL_ENV)
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    if not url:
        if in_ci:
            pytest.fail(f"{POSTGRES_URL_ENV} is not set; CI must run the PostgreSQL tests")
        pytest.skip(f"{POSTGRES_URL_ENV} is not set")
    return normalize_database_url(url)


def _schema_url(server_url: str, schema: str) -> str:
    url = make_url(server_url)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a brand-new schema, dropped after the test."""
    server = postgres_server_url()
    schema = f"gdx_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except sa.exc.OperationalError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {error}")
    try:
        yield _schema_url(server, schema)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


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


def table_count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
