"""Typed Arrow rows into PostgreSQL by COPY, in PostgreSQL's binary format where the columns allow.

Binary COPY hands the server its own representation of each value (an `integer` as 4 bytes, a
`timestamptz` as microseconds since 2000 in UTC), so the server parses no text, which is most of
what a text COPY costs it, and Python formats none: `pgpq` (Rust, MIT) encodes Arrow record
batches to it. Binary COPY is strict about types, so each column is first cast to the Arrow type
of its SQL column (a dictionary id, `int64` in Arrow, is an `integer`, so `int32`). A table with
a column the mapping does not cover (`jsonb`, a float) goes as CSV text, as every table did before.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import pgpq
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

Rows = pa.Table | pa.RecordBatch


def naive_utc(rows: Rows) -> Rows:
    """Timestamps as UTC wall-clock time (what the session time zone, UTC, reads back right)."""
    for i, field in enumerate(rows.schema):
        if pa.types.is_timestamp(field.type):
            rows = rows.set_column(i, field.name, rows.column(i).cast(pa.timestamp("us")))
    return rows


def arrow_type(sql_type: sa.types.TypeEngine) -> pa.DataType | None:
    """The Arrow type whose binary COPY encoding is `sql_type`'s, or None if there is none here."""
    if isinstance(sql_type, sa.BigInteger):
        return pa.int64()
    if isinstance(sql_type, sa.SmallInteger):
        return pa.int16()
    if isinstance(sql_type, sa.Integer):
        return pa.int32()
    if isinstance(sql_type, sa.DateTime):
        # Binary timestamp and timestamptz are both microseconds since 2000: for timestamptz
        # counted in UTC, which is what naive UTC wall-clock time counts.
        return pa.timestamp("us")
    if isinstance(sql_type, sa.String) and not isinstance(sql_type, sa.Enum):
        return pa.string()
    if isinstance(sql_type, sa.JSON) and not isinstance(sql_type, postgresql.JSONB):
        return pa.string()  # `json` travels as its text (`jsonb` would need a version byte first)
    return None


def binary_schema(table: sa.Table | None, columns: Sequence[str]) -> pa.Schema | None:
    """The Arrow schema rows of `columns` are cast to for a binary COPY into `table`, or None
    when some column has no binary encoding here (or the table is not known)."""
    if table is None:
        return None
    types = [arrow_type(table.c[column].type) if column in table.c else None for column in columns]
    if any(type_ is None for type_ in types):
        return None
    return pa.schema([pa.field(column, type_) for column, type_ in zip(columns, types)])


def _cast(rows: Rows, schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    """Columns cast to `schema` (a value that does not fit raises: the rows were validated)."""
    columns = [naive_utc_column(rows.column(i)).cast(field.type) for i, field in enumerate(schema)]
    if isinstance(rows, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(columns, schema=schema)
    return pa.Table.from_arrays(columns, schema=schema)


def naive_utc_column(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    return column.cast(pa.timestamp("us")) if pa.types.is_timestamp(column.type) else column


def copy_statement(conn: sa.Connection, target: str, columns: Sequence[str], *, binary: bool, freeze: bool = False) -> str:
    """`COPY target (columns) FROM STDIN`, binary or CSV; `freeze`: the rows written frozen, which
    PostgreSQL allows only into a table created or truncated in the same (sub)transaction."""
    columns_sql = ", ".join(conn.dialect.identifier_preparer.quote(c) for c in columns)
    options = ("FORMAT binary" if binary else "FORMAT csv") + (", FREEZE" if freeze else "")
    return f"COPY {target} ({columns_sql}) FROM STDIN ({options})"


def copy_rows(
    conn: sa.Connection, target: str, columns: Sequence[str], parts: Iterable[Rows], *, table: sa.Table | None = None, freeze: bool = False
) -> None:
    """Append rows (their columns in `columns` order) to `target`, a quoted name, with one COPY:
    binary when `table`'s column types allow (see `binary_schema`), else CSV text, for which the
    session's time zone must be UTC. `freeze`: see `copy_statement`."""
    schema = binary_schema(table, columns)
    raw = conn.connection.driver_connection
    if schema is None:
        with raw.cursor() as cursor, cursor.copy(copy_statement(conn, target, columns, binary=False, freeze=freeze)) as copy:
            for part in parts:
                buffer = io.BytesIO()
                pacsv.write_csv(naive_utc(part), buffer, pacsv.WriteOptions(include_header=False))
                copy.write(buffer.getbuffer())
        return
    encoder = pgpq.ArrowToPostgresBinaryEncoder(schema)
    with raw.cursor() as cursor, cursor.copy(copy_statement(conn, target, columns, binary=True, freeze=freeze)) as copy:
        copy.write(encoder.write_header())
        for part in parts:
            typed = _cast(part, schema)
            for batch in typed.to_batches() if isinstance(typed, pa.Table) else [typed]:
                copy.write(encoder.write_batch(batch))
        copy.write(encoder.finish())


def binary_payload(table: sa.Table, columns: Sequence[str], rows: Rows) -> bytes | None:
    """A whole binary COPY of `rows` (header, rows, trailer) for `table`, made without a
    connection, or None when the columns have no binary encoding here (`copy_rows` then)."""
    schema = binary_schema(table, columns)
    if schema is None:
        return None
    encoder = pgpq.ArrowToPostgresBinaryEncoder(schema)
    typed = _cast(rows, schema)
    parts = [encoder.write_header()]
    parts += [encoder.write_batch(batch) for batch in (typed.to_batches() if isinstance(typed, pa.Table) else [typed])]
    parts.append(encoder.finish())
    return b"".join(parts)


def copy_payload(conn: sa.Connection, target: str, columns: Sequence[str], payload: bytes, *, freeze: bool = False) -> None:
    """Send a payload made by `binary_payload` as one binary COPY into `target` (a quoted name).
    `freeze`: see `copy_statement`."""
    statement = copy_statement(conn, target, columns, binary=True, freeze=freeze)
    with conn.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write(payload)
