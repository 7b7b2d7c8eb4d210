"""Writing validated rows: staged, then upserted set-wise, inside the caller's transaction.

PostgreSQL: COPY (psycopg 3) into a temporary staging table, then one
`INSERT ... SELECT ... ON CONFLICT DO UPDATE`. For a large batch the table's foreign keys are
dropped and re-added around that insert inside the same transaction: PostgreSQL then checks
them with one set-wise query instead of one trigger call per row (pgloader does the same).
The rows were already checked against the referenced ids, so re-adding cannot fail unless the
data changed underneath, in which case the whole transaction rolls back.

SQLite: a small block (an API batch, a small file) goes straight into the table with one
`executemany` of the same upsert, faster than staging it; a block of 10,000 rows or
more is staged with `executemany`, then upserted with one `INSERT ... SELECT` (faster
than upserting row by row).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa

from gdx_pipeline.core.csv_source import RAW_LINE_KEEP_CHARS
from gdx_pipeline.core.validation import RejectedRow
from gdx_pipeline.core.warehouse import data_tables, indexes_on, is_postgres, rejected_rows
from gdx_pipeline.dictionary import ID_MAX, ID_MIN, TableSpec

# Above this many staged rows (PostgreSQL), dropping the foreign keys and secondary indexes and
# rebuilding them after the insert (one sorted index build, one set-wise key check) beats
# maintaining them row by row.
BULK_THRESHOLD = 200_000
SQLITE_STAGING_ROWS = 10_000


@dataclass
class LoadCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged


def quote_identifier(conn: sa.Connection, name: str) -> str:
    """A table or column name from the dictionary, quoted for the connection's dialect."""
    return conn.dialect.identifier_preparer.quote(name)


class StagedUpsert:
    """Upserts the valid rows of one file or API batch: on PostgreSQL staged, then in one
    statement; on SQLite block by block. One per table per transaction."""

    def __init__(self, conn: sa.Connection, spec: TableSpec, *, expected_rows: int = 0):
        self.conn = conn
        self.spec = spec
        self.staged = 0
        self._sqlite_counts = LoadCounts()
        self.postgres = is_postgres(conn)
        self.stage = f"gdx_stage_{spec.name}"
        self._columns_sql = ", ".join(quote_identifier(conn, c) for c in spec.columns)
        target = quote_identifier(conn, spec.name)
        # A big first load into an empty, unreferenced table skips staging: COPY straight into a
        # bare table, then build the key, indexes and foreign keys once (what pgloader does).
        # Nothing can conflict: the validator already dropped later duplicates within the file.
        self.direct = (
            self.postgres
            and expected_rows >= BULK_THRESHOLD
            and not _is_referenced(spec)
            and conn.exec_driver_sql(f"SELECT NOT EXISTS (SELECT 1 FROM {target})").scalar_one()
        )
        if self.direct:
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
            self.stage = target
            drop_secondary_structures(conn, data_tables[spec.name], primary_key=True)
        elif self.postgres:
            # The staging table is made once per connection and emptied by every commit: no
            # catalog churn per batch. One round trip with the time zone the COPY text is in.
            conn.exec_driver_sql(
                f"SET LOCAL TIME ZONE 'UTC'; CREATE TEMP TABLE IF NOT EXISTS {self.stage} (LIKE {target}) ON COMMIT DELETE ROWS"
            )

    def add(self, rows: pa.Table) -> None:
        """Stage typed rows (dictionary columns, in order)."""
        if rows.num_rows == 0:
            return
        table = rows.select(self.spec.columns)
        if self.postgres:
            buffer = io.BytesIO()
            pacsv.write_csv(self._naive_utc(table), buffer, pacsv.WriteOptions(include_header=False))
            raw = self.conn.connection.driver_connection
            with raw.cursor() as cursor, cursor.copy(f"COPY {self.stage} ({self._columns_sql}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(buffer.getbuffer())
        else:
            self._upsert_sqlite(table)
        self.staged += rows.num_rows

    def _upsert_sqlite(self, table: pa.Table) -> None:
        """Upsert one block: small ones row by row with `executemany`, big ones through a
        staging table (one `INSERT … SELECT` beats a per-row upsert from ~10,000 rows up)."""
        counts = self._upsert_sqlite_staged(table) if table.num_rows >= SQLITE_STAGING_ROWS else self._upsert_sqlite_rows(table)
        self._sqlite_counts.inserted += counts.inserted
        self._sqlite_counts.updated += counts.updated
        self._sqlite_counts.unchanged += counts.unchanged

    def _upsert_sqlite_rows(self, table: pa.Table) -> LoadCounts:
        """Count what existed before from the block's ids, what changed from rowcount (SQLite
        counts a row whose DO UPDATE condition was false as no change)."""
        target = quote_identifier(self.conn, self.spec.name)
        key = quote_identifier(self.conn, self.spec.primary_key)
        ids = json.dumps(table.column(self.spec.primary_key).to_pylist())
        existing = self.conn.exec_driver_sql(
            f"SELECT count(*) FROM main.{target} WHERE {key} IN (SELECT value FROM json_each(?))", (ids,)
        ).scalar_one()
        changed = self.conn.exec_driver_sql(
            f"INSERT INTO main.{target} AS target ({self._columns_sql}) VALUES ({self._sqlite_placeholders}) {self._update_clause()}",
            self._sqlite_rows(table),
        ).rowcount
        inserted = table.num_rows - existing
        return LoadCounts(inserted=inserted, updated=changed - inserted, unchanged=existing - (changed - inserted))

    def _upsert_sqlite_staged(self, table: pa.Table) -> LoadCounts:
        target = quote_identifier(self.conn, self.spec.name)
        key = quote_identifier(self.conn, self.spec.primary_key)
        self.conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} AS SELECT {self._columns_sql} FROM main.{target} WHERE 0")
        self.conn.exec_driver_sql(f"INSERT INTO temp.{self.stage} ({self._columns_sql}) VALUES ({self._sqlite_placeholders})", self._sqlite_rows(table))
        existing, changed = self.conn.exec_driver_sql(
            f"SELECT count(*), coalesce(sum(CASE WHEN {self._distinct_condition('target', 'stage')} THEN 1 ELSE 0 END), 0) "
            f"FROM temp.{self.stage} AS stage JOIN main.{target} AS target ON target.{key} = stage.{key}"
        ).one()
        self.conn.exec_driver_sql(
            f"INSERT INTO main.{target} AS target ({self._columns_sql}) "
            f"SELECT {self._columns_sql} FROM temp.{self.stage} WHERE true {self._update_clause()}"
        )
        self.conn.exec_driver_sql(f"DELETE FROM temp.{self.stage}")
        return LoadCounts(inserted=table.num_rows - existing, updated=changed, unchanged=existing - changed)

    @property
    def _sqlite_placeholders(self) -> str:
        return ", ".join("?" for _ in self.spec.columns)

    def _sqlite_rows(self, table: pa.Table) -> list[tuple]:
        return list(zip(*(self._sqlite_values(name, table.column(name)) for name in self.spec.columns)))

    def _naive_utc(self, table: pa.Table) -> pa.Table:
        """Timestamps as UTC wall-clock time: Arrow writes zoned ones much slower, and the
        session's time zone is UTC (set when staging starts), so PostgreSQL reads them right."""
        for i, name in enumerate(table.column_names):
            if self.spec.column_kind(name) == "timestamp":
                table = table.set_column(i, name, table.column(i).cast(pa.timestamp("us")))
        return table

    def _sqlite_values(self, name: str, column: pa.ChunkedArray) -> list:
        if self.spec.column_kind(name) == "timestamp":
            # UTC wall-clock text, "YYYY-MM-DD HH:MM:SS.ffffff": SQLAlchemy's SQLite DATETIME format,
            # which Arrow's cast writes much faster than strftime.
            column = column.cast(pa.timestamp("us")).cast(pa.string())
        return column.to_pylist()

    def apply(self) -> LoadCounts:
        if self.direct:
            create_secondary_structures(self.conn, data_tables[self.spec.name], primary_key=True)
            self.conn.exec_driver_sql(f"ANALYZE {self.stage}")
            return LoadCounts(inserted=self.staged)
        if self.staged == 0:
            return LoadCounts()
        if self.postgres:
            return self._apply_postgres()
        return self._sqlite_counts

    def _distinct_condition(self, left: str, right: str) -> str:
        others = [c for c in self.spec.columns if c != self.spec.primary_key]
        operator = "IS DISTINCT FROM" if self.postgres else "IS NOT"
        return " OR ".join(f"{left}.{quote_identifier(self.conn, c)} {operator} {right}.{quote_identifier(self.conn, c)}" for c in others)

    def _update_clause(self) -> str:
        key = self.spec.primary_key
        others = [c for c in self.spec.columns if c != key]
        assignments = ", ".join(f"{quote_identifier(self.conn, c)} = excluded.{quote_identifier(self.conn, c)}" for c in others)
        return f"ON CONFLICT ({quote_identifier(self.conn, key)}) DO UPDATE SET {assignments} WHERE {self._distinct_condition('target', 'excluded')}"

    def _apply_postgres(self) -> LoadCounts:
        target = quote_identifier(self.conn, self.spec.name)
        bulk = self.staged >= BULK_THRESHOLD
        if bulk:
            drop_secondary_structures(self.conn, data_tables[self.spec.name])
        # Batches that share the table's lock upsert in key order, so two of them never wait
        # for each other's keys in opposite orders (a deadlock); bulk loads hold it alone.
        order = "" if bulk else f" ORDER BY {quote_identifier(self.conn, self.spec.primary_key)}"
        inserted, updated = self.conn.exec_driver_sql(
            f"WITH upserted AS (INSERT INTO {target} AS target ({self._columns_sql}) "
            f"SELECT {self._columns_sql} FROM {self.stage}{order} {self._update_clause()} RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted"
        ).one()
        if bulk:
            create_secondary_structures(self.conn, data_tables[self.spec.name])
            self.conn.exec_driver_sql(f"ANALYZE {target}")
        return LoadCounts(inserted=inserted, updated=updated, unchanged=self.staged - inserted - updated)

def drop_secondary_structures(conn: sa.Connection, table: sa.Table, *, primary_key: bool = False) -> None:
    """Drop a table's foreign keys and secondary indexes (and its key) before a bulk write.

    Names come from the dictionary-derived DDL. `isolate_from_table=False`: SQLAlchemy's
    default would detach the constraint from the shared MetaData, and every later CREATE TABLE
    in this process would silently leave it out.
    """
    for constraint in table.foreign_key_constraints:
        conn.execute(sa.schema.DropConstraint(constraint, if_exists=True, isolate_from_table=False))
    for index in indexes_on(table, conn.dialect.name):
        conn.execute(sa.schema.DropIndex(index, if_exists=True))
    if primary_key:
        conn.execute(sa.schema.DropConstraint(table.primary_key, isolate_from_table=False))


def create_secondary_structures(conn: sa.Connection, table: sa.Table, *, primary_key: bool = False) -> None:
    """Rebuild what `drop_secondary_structures` dropped: one sorted build and one set-wise check each."""
    if primary_key:
        conn.execute(sa.schema.AddConstraint(table.primary_key, isolate_from_table=False))
    for index in indexes_on(table, conn.dialect.name):
        conn.execute(sa.schema.CreateIndex(index))
    for constraint in table.foreign_key_constraints:
        conn.execute(sa.schema.AddConstraint(constraint, isolate_from_table=False))


def _is_referenced(spec: TableSpec) -> bool:
    return any(fk.referred_table.name == spec.name for table in data_tables.values() for fk in table.foreign_key_constraints)


def estimated_rows(size_bytes: int) -> int:
    """A cautious row estimate from a file's size (Globant rows are ~45 bytes)."""
    return size_bytes // 64


def known_keys(conn: sa.Connection, spec: TableSpec, *, among: pa.Table | None = None) -> dict[str, list[int]]:
    """For each foreign key of `spec`, the ids that exist now in the referenced table (one query).

    With `among` (typed rows of `spec`), only those of the ids the rows refer to: what an API
    batch needs, at a cost that does not grow with the referenced tables (reading them all
    made a 1,000-row batch several times slower against 100,000 jobs)."""
    if not spec.foreign_keys:
        return {}
    selects = []
    for fk in spec.foreign_keys:
        target = data_tables[fk.table].c[fk.target_column]
        select = sa.select(sa.literal(fk.column).label("fk"), target.label("id"))
        if among is not None:
            named = pc.unique(among.column(fk.column).drop_null())
            # An id outside the dictionary's range exists nowhere (and PostgreSQL refuses to compare it).
            named = pc.filter(named, pc.and_(pc.greater_equal(named, ID_MIN), pc.less_equal(named, ID_MAX)))
            select = select.where(target.in_(named.to_pylist()))
        selects.append(select)
    keys: dict[str, list[int]] = {fk.column: [] for fk in spec.foreign_keys}
    for column, id_ in conn.execute(sa.union_all(*selects)):
        keys[column].append(id_)
    return keys


def record_rejects(
    conn: sa.Connection,
    spec: TableSpec,
    rows: Sequence[RejectedRow],
    *,
    source: str,
    source_sha256: str | None,
    run_id: str | None,
    request_id: str | None,
    at: datetime,
) -> None:
    """Append rejected rows to the reject log (COPY on PostgreSQL)."""
    if not rows:
        return
    columns = ["table_name", "source", "source_sha256", "line_number", "raw_line", "reasons", "run_id", "request_id", "rejected_at"]
    values = [(spec.name, source, source_sha256, r.line, stored_raw_line(r), r.reasons, run_id, request_id, at) for r in rows]
    if is_postgres(conn):
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY rejected_rows ({', '.join(columns)}) FROM STDIN") as copy:
            for *head, reasons, run, request, when in values:
                copy.write_row((*head, json.dumps(reasons, ensure_ascii=False), run, request, when))
    else:
        conn.execute(rejected_rows.insert(), [dict(zip(columns, row)) for row in values])


def stored_raw_line(row: RejectedRow) -> str:
    """The raw line as the reject table keeps it: whole up to RAW_LINE_KEEP_CHARS characters;
    a longer one is cut there and ends with a marker giving its length. A file's reject file
    keeps every line whole, so the table stays small and a 50 MB line costs no 50 MB row."""
    chars = row.long_line.chars if row.long_line is not None else len(row.raw)
    if chars <= RAW_LINE_KEEP_CHARS:
        return row.raw
    return f"{row.raw[:RAW_LINE_KEEP_CHARS]}…[line cut here: {chars:,} characters in all]"
