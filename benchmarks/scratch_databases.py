"""Throw-away PostgreSQL databases for the benchmarks: one per contender, dropped after."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine


def fresh_database(server_url: str, prefix: str = "gdx_bench") -> str:
    """A new database with the warehouse schema; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_warehouse_engine(url)
    create_schema(engine)
    engine.dispose()
    return url


def drop_database(server_url: str, url: str) -> None:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")
    admin.dispose()
