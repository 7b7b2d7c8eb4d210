"""A table's keys and indexes around a bulk write, derived from the dictionary-derived schema.

From `staged_writes.BULK_ROWS` rows on, PostgreSQL writers drop a table's foreign keys and
secondary indexes and build them once after the write (one sorted build and one set-wise check
each, as pgloader does); a first big load builds everything after its bare insert. The same DDL
is what the ingestion benchmark's limit proxy adds after its bare load.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from gdx_pipeline.core.warehouse import data_tables, indexes_on, is_postgres, quote_identifier

# SQLite sorts a new index's entries in runs as big as the connection's page cache. The
# warehouse's connections keep 16 MiB (`engines`: API batches dirty hundreds of pages), but runs
# that big sorted slower here: a 10 M-row table's three indexes took 24 s, against 16-17 s with
# SQLite's default of 2,000 KiB (about one core's L2 cache). Indexes are built with the default.
SQLITE_INDEX_BUILD_CACHE_KIB = 2000


def key_and_index_ddl(
    table: sa.Table, dialect: str, *, drop: bool = False, primary_key: bool = False
) -> list[sa.schema.ExecutableDDLElement]:
    """The DDL that builds a table's foreign keys and secondary indexes (and its primary key),
    or with `drop` takes them away, derived from the dictionary-derived schema: what a bulk
    write rebuilds, and what the ingestion benchmark's limit proxy adds after its bare load.

    Built: the primary key first (the foreign keys of others may need it), then the indexes,
    then the foreign keys. `isolate_from_table=False`: SQLAlchemy's default would detach a
    dropped constraint from the shared MetaData, and every later CREATE TABLE in this process
    would silently leave it out. SQLite can neither add nor drop a key of an existing table: there
    only the secondary indexes come and go.
    """
    keys = dialect != "sqlite"
    if drop:
        statements: list[sa.schema.ExecutableDDLElement] = [
            sa.schema.DropConstraint(constraint, if_exists=True, isolate_from_table=False)
            for constraint in table.foreign_key_constraints
            if keys
        ]
        statements += [sa.schema.DropIndex(index, if_exists=True) for index in indexes_on(table, dialect)]
        if primary_key and keys:
            statements.append(sa.schema.DropConstraint(table.primary_key, isolate_from_table=False))
        return statements
    statements = [sa.schema.AddConstraint(table.primary_key, isolate_from_table=False)] if primary_key and keys else []
    statements += [sa.schema.CreateIndex(index) for index in indexes_on(table, dialect)]
    statements += [sa.schema.AddConstraint(constraint, isolate_from_table=False) for constraint in table.foreign_key_constraints if keys]
    return statements


def drop_secondary_structures(conn: sa.Connection, table: sa.Table, *, primary_key: bool = False) -> None:
    """Drop a table's foreign keys and secondary indexes (and its key) before a bulk write."""
    for statement in key_and_index_ddl(table, conn.dialect.name, drop=True, primary_key=primary_key):
        conn.execute(statement)


def create_secondary_structures(conn: sa.Connection, table: sa.Table, *, primary_key: bool = False) -> None:
    """Rebuild what `drop_secondary_structures` dropped: one sorted build and one set-wise check each."""
    with index_build_cache(conn):
        for statement in key_and_index_ddl(table, conn.dialect.name, primary_key=primary_key):
            conn.execute(statement)


@contextmanager
def index_build_cache(conn: sa.Connection) -> Iterator[None]:
    """SQLite: the page cache at `SQLITE_INDEX_BUILD_CACHE_KIB` while indexes are built, then as it was."""
    if is_postgres(conn):
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_INDEX_BUILD_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {int(before)}")


def is_referenced(table: str) -> bool:
    """Some dictionary table has a foreign key to `table` (its primary key must then stay)."""
    return any(fk.referred_table.name == table for other in data_tables.values() for fk in other.foreign_key_constraints)


def after_write(conn: sa.Connection, table: sa.Table, *, bulk: bool, explicit_ids: bool = False) -> None:
    """PostgreSQL upkeep after rows were written: a serial id's sequence moved past ids written
    explicitly (`explicit_ids`), and fresh statistics after a bulk write."""
    if not is_postgres(conn):
        return
    target = quote_identifier(conn, table.name)
    key = table.primary_key.columns[0]
    if explicit_ids and key.autoincrement is True:
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key.name}'), "
            f"coalesce(max({quote_identifier(conn, key.name)}), 0) + 1, false) FROM {target}"
        )
    if bulk:
        conn.exec_driver_sql(f"ANALYZE {target}")
