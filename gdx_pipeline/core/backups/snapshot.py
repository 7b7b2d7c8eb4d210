"""Reading several tables from one point in time, in typed Arrow chunks.

Every table of one backup run comes from one consistent snapshot of the database, read in
bounded chunks so memory does not grow with the table.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from gdx_pipeline.core.backups.avro_schema import BACKUP_TABLES, BackupTable
from gdx_pipeline.core.warehouse import is_postgres, quote_identifier

CHUNK_ROWS = 100_000


def arrow_type(kind: str) -> pa.DataType:
    return {
        "integer": pa.int32(),
        "long": pa.int64(),
        "text": pa.string(),
        "json": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }[kind]


def arrow_schema(table: BackupTable) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c.kind), nullable=c.nullable) for c in table.columns])


def lock_order(names: Iterable[str]) -> list[str]:
    """Tables in the one order every backup and restore locks them: referencing tables first.

    That is the order in which PostgreSQL's own DDL locks them (dropping a foreign key locks the
    table, then the table it references), so no two of our transactions can deadlock.
    """
    wanted = set(names)
    return [name for name in reversed(BACKUP_TABLES) if name in wanted]


class SnapshotReader:
    """Reads several tables from one point in time, without blocking writers.

    PostgreSQL: one REPEATABLE READ, READ ONLY transaction; rows leave through COPY and are
    parsed by pyarrow. The tables are share-locked before the snapshot is taken, so a restore's
    TRUNCATE (which is not MVCC-safe) waits for the backup instead of showing it empty tables.
    SQLite (WAL): one deferred read transaction on a raw connection, so ingestion can keep
    writing while a long backup runs.
    """

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.postgres = is_postgres(engine)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> SnapshotReader:
        if self.postgres:
            conn = self._stack.enter_context(self.engine.connect().execution_options(isolation_level="REPEATABLE READ"))
            self._stack.enter_context(conn.begin())
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql(
                f"LOCK TABLE {', '.join(quote_identifier(conn, name) for name in lock_order(BACKUP_TABLES))} IN ACCESS SHARE MODE"
            )
            # The snapshot is taken by the first query after the locks; take it now, so all tables share it.
            conn.exec_driver_sql("SELECT 1")
            self._conn = conn
        else:
            raw = self.engine.raw_connection()
            self._stack.callback(raw.close)
            self._sqlite = raw.driver_connection
            self._sqlite.execute("BEGIN DEFERRED")
            self._stack.callback(self._sqlite.execute, "ROLLBACK")
            self._sqlite.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def count(self, table: BackupTable) -> int:
        if self.postgres:
            return self._conn.exec_driver_sql(f"SELECT count(*) FROM {quote_identifier(self._conn, table.name)}").scalar_one()
        return self._sqlite.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]

    def chunks(self, table: BackupTable, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
        """The table in primary-key order, as Arrow batches typed by `arrow_schema`."""
        if self.postgres:
            yield from self._postgres_chunks(table, chunk_rows)
        else:
            yield from self._sqlite_chunks(table, chunk_rows)

    def _postgres_chunks(self, table: BackupTable, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        conn = self._conn
        selected = []
        for column in table.columns:
            name = quote_identifier(conn, column.name)
            # Epoch microseconds, exact (extract returns numeric), independent of the session's time zone.
            selected.append(f"(extract(epoch FROM {name}) * 1000000)::bigint" if column.kind == "timestamp" else name)
        query = (
            f"COPY (SELECT {', '.join(selected)} FROM {quote_identifier(conn, table.name)} "
            f"ORDER BY {quote_identifier(conn, table.primary_key)}) "
            "TO STDOUT (FORMAT csv)"
        )
        target = arrow_schema(table)
        read_types = {c.name: pa.int64() if c.kind == "timestamp" else arrow_type(c.kind) for c in table.columns}
        options = (
            pacsv.ReadOptions(column_names=table.column_names, use_threads=False),
            pacsv.ParseOptions(newlines_in_values=True),
            pacsv.ConvertOptions(column_types=read_types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(query) as copy:
            # psycopg hands COPY data out one whole row per read: gather a chunk, parse it at once.
            buffer, rows = bytearray(), 0
            while data := copy.read():
                buffer += data
                rows += 1
                if rows == chunk_rows:
                    yield _parse_copy_chunk(buffer, options, target)
                    buffer, rows = bytearray(), 0
            if rows:
                yield _parse_copy_chunk(buffer, options, target)

    def _sqlite_chunks(self, table: BackupTable, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        columns = ", ".join(f'"{c}"' for c in table.column_names)
        cursor = self._sqlite.execute(f'SELECT {columns} FROM "{table.name}" ORDER BY "{table.primary_key}"')
        target = arrow_schema(table)
        try:
            while rows := cursor.fetchmany(chunk_rows):
                values = list(zip(*rows))
                arrays = [_sqlite_array(values[i], column.kind) for i, column in enumerate(table.columns)]
                yield pa.RecordBatch.from_arrays(arrays, schema=target)
        finally:
            cursor.close()


def _parse_copy_chunk(data: bytearray, options: tuple, target: pa.Schema) -> pa.RecordBatch:
    parsed = pacsv.read_csv(io.BytesIO(data), *options)
    arrays = [parsed.column(i).combine_chunks().cast(target.field(i).type) for i in range(parsed.num_columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=target)


def _sqlite_array(values: Sequence[object], kind: str) -> pa.Array:
    """SQLite gives back text for times (naive, UTC, as SQLAlchemy stored them) and for JSON."""
    if kind != "timestamp":
        return pa.array(values, arrow_type(kind))
    text = pa.array(values, pa.string())
    try:
        return text.cast(pa.timestamp("us")).cast(arrow_type(kind))
    except pa.ArrowInvalid:  # written with an offset by someone else: let pandas read the offsets
        parsed = pd.to_datetime(pd.Series(values, dtype="string"), utc=True, format="ISO8601")
        return pa.array(parsed.dt.as_unit("us"), arrow_type(kind))
