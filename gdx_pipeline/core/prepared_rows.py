"""Rows made ready for the database before the thread that writes them gets them.

A file's transaction writes its blocks one after the other; whatever can be done to a block
without the database (sorting it by key; counting it for the hires rollup; for PostgreSQL,
encoding it as a binary COPY payload) is done beforehand, in the thread that settles the blocks, so the writing thread only writes
and the two overlap. SQLite's `executemany` parameters (`sqlite_parameters`) are made by the
thread that inserts them (see `file_transaction`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from gdx_pipeline.core.postgres_copy import binary_payload, naive_utc


@dataclass
class PreparedRows:
    """Typed rows (the table's columns, in order) and, when made ahead, what goes on the wire."""

    table: pa.Table
    copy_payload: bytes | None = None  # PostgreSQL binary COPY: header, rows, trailer
    hire_counts: pa.Table | None = None  # the rows counted for the hires rollup (`hire_rollup.count_hires`)


def sqlite_parameters(rows: pa.Table | pa.RecordBatch) -> list[tuple]:
    """Rows as `executemany` parameters (see `sqlite_rows`)."""
    return list(sqlite_rows(rows))


def sqlite_rows(rows: pa.Table | pa.RecordBatch) -> Iterator[tuple]:
    """Rows as `executemany` parameters, made as they are taken: no list of them all. Timestamps
    as SQLAlchemy's SQLite DATETIME text, naive UTC "YYYY-MM-DD HH:MM:SS.ffffff", which Arrow's
    cast writes many times faster than strftime; integer columns without nulls through numpy,
    whose `tolist` is faster than Arrow's `to_pylist`."""
    columns = []
    for column in naive_utc(rows).columns:
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.string())
        if pa.types.is_integer(column.type) and column.null_count == 0:
            columns.append(column.to_numpy().tolist())
        else:
            columns.append(column.to_pylist())
    return zip(*columns)


def in_key_order(rows: pa.Table, key: str) -> pa.Table:
    """The rows sorted by `key` (as they usually already are): appended in key order, a table's
    key index (SQLite's rowid tree, PostgreSQL's primary key built after) grows at its end."""
    keys = rows.column(key)
    if rows.num_rows < 2 or pc.all(pc.less(keys.slice(0, rows.num_rows - 1), keys.slice(1))).as_py() is not False:
        return rows
    return rows.take(pc.sort_indices(keys))


def prepare_for_empty_table(dialect: str, table: sa.Table, columns: Sequence[str], rows: pa.Table) -> PreparedRows:
    """Rows for plain inserts into `table` (an empty table's load), sorted by its key; for
    PostgreSQL encoded too. SQLite's parameters are Python objects: made in the thread that
    inserts them, right before, they hold no GIL away from it and no memory for long."""
    ordered = in_key_order(rows.select(list(columns)), table.primary_key.columns[0].name)
    if dialect == "sqlite":
        return PreparedRows(ordered)
    return PreparedRows(ordered, copy_payload=binary_payload(table, columns, ordered))
