"""PostgreSQL advisory locks, each under a named id, so no two purposes ever share one.

Every lock is taken inside a transaction and released when it ends. SQLite needs none of
them: its writers already take turns (`engines.write_transaction`).
"""

from __future__ import annotations

import sqlalchemy as sa

from gdx_pipeline.dictionary import TABLES, TableSpec

# Creating tables and indexes: two processes starting at once must not race on CREATE TABLE.
SCHEMA_LOCK_ID = 7_420_001
# Changing `hires_by_quarter` itself (folding the changes writers append, clearing it): API
# batches share `hired_employees`'s lock, and two of them must not fold at once.
HIRE_ROLLUP_LOCK_ID = 7_420_002
# One writer lock per dictionary table, numbered from here in dictionary order.
TABLE_WRITER_LOCK_BASE = 7_420_100
TABLE_WRITER_LOCK_IDS = {name: TABLE_WRITER_LOCK_BASE + i for i, name in enumerate(TABLES)}


def _is_postgres(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


def lock_schema(conn: sa.Connection) -> None:
    """Take the schema lock on PostgreSQL, until the transaction ends."""
    if _is_postgres(conn):
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_ID})")


def lock_table_for_writes(conn: sa.Connection, spec: TableSpec, *, shared: bool = False) -> None:
    """Take a table's writer lock on PostgreSQL, until the transaction ends.

    Files and restores take it alone: their bulk paths drop and rebuild keys and indexes.
    API batches take it `shared` with each other: each is one upsert whose row locks
    PostgreSQL orders by key, so they can run side by side, but never beside a file or a
    restore.
    """
    if _is_postgres(conn):
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        conn.exec_driver_sql(f"SELECT {function}({TABLE_WRITER_LOCK_IDS[spec.name]})")


def lock_hire_rollup(conn: sa.Connection) -> None:
    """Take the `hires_by_quarter` lock on PostgreSQL, until the transaction ends (taken after
    the table's writer lock, never before it)."""
    if _is_postgres(conn):
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({HIRE_ROLLUP_LOCK_ID})")


def try_lock_hire_rollup(conn: sa.Connection) -> bool:
    """Take the `hires_by_quarter` lock if no other transaction holds it (PostgreSQL; True on
    SQLite, whose writers already take turns), until the transaction ends."""
    if _is_postgres(conn):
        return conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({HIRE_ROLLUP_LOCK_ID})").scalar_one()
    return True
