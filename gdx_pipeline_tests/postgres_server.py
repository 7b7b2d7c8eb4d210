"""The PostgreSQL server the tests make their schemas on, named by GDX_TEST_POSTGRES_URL: missing,
it skips a test locally and fails it in CI."""

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from gdx_pipeline.core.warehouse import normalize_database_url

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


def schema_url(server_url: str, schema: str) -> str:
    """The server URL with its search_path set to `schema`."""
    url = make_url(server_url)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@contextmanager
def made_on_server(server: str | URL, create: Sequence[str], drop: Sequence[str]) -> Iterator[None]:
    """Run `create` on the server (unreachable, it skips the test locally and fails it in CI),
    then `drop` once the block is over, whatever happened in it."""
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in create:
                conn.exec_driver_sql(statement)
    except sa.exc.OperationalError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {error}")
    try:
        yield
    finally:
        with admin.connect() as conn:
            for statement in drop:
                conn.exec_driver_sql(statement)
        admin.dispose()
