"""Stage-to-target SQL for every writer: the one module that puts rows into the warehouse's tables.

Three jobs, inside the caller's transaction (as dlt's `sql_jobs` has them for every destination):

- `StagedUpsert` (landing files, API batches): insert new ids, update changed rows, leave equal
  ones alone, and count which was which.
- `EmptyTableLoad` (a restore's emptied table, a file's first big load): plain inserts, nothing
  can conflict.
- `merge` (a restore of a table others reference): stage, delete the rows the source lacks,
  upsert the rest, so no referenced row is ever missing.

What they share, written once here: timestamps go out as naive UTC wall-clock time (Arrow
writes those many times faster than zoned ones; PostgreSQL reads them in a session whose time
zone is UTC, SQLite stores SQLAlchemy's DATETIME text); rows reach PostgreSQL by COPY (binary
where the columns allow: `postgres_copy`) and SQLite by `executemany`; a stage is a temporary
table made once per connection and emptied after use; one `ON CONFLICT` clause that writes only
rows that differ. From `BULK_ROWS` rows on, PostgreSQL drops the table's foreign keys and
secondary indexes and builds them once after the write: one sorted index build and one set-wise
key check beat per-row upkeep (pgloader does the same). The rows were already checked against
the referenced ids, so re-adding cannot fail unless the data changed underneath, and then the
whole transaction rolls back.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from gdx_pipeline.core.hire_rollup import hire_rollup_change
from gdx_pipeline.core.keys_and_indexes import (
    after_write,
    create_secondary_structures,
    drop_secondary_structures,
    is_referenced,
)
from gdx_pipeline.core.postgres_copy import copy_payload, copy_rows
from gdx_pipeline.core.prepared_rows import PreparedRows, prepare_for_empty_table, sqlite_parameters, sqlite_rows
from gdx_pipeline.core.warehouse import array_text, data_tables, is_postgres, metadata, quote_identifier
from gdx_pipeline.dictionary import TableSpec

# From this many rows on (PostgreSQL), dropping the foreign keys and secondary indexes and
# rebuilding them after the write beats maintaining them row by row. Every writer uses this one.
BULK_ROWS = 200_000
# PostgreSQL: a small write whose keys span less than this many times their number reads the
# rows it replaces by one range of the key index (`StagedUpsert._keys_sql`).
DENSE_KEYS = 4
# SQLite: a block this big is staged and upserted with one `INSERT … SELECT`; a smaller one (an
# API batch, a small file) goes straight into the table with one `executemany` of the upsert.
SQLITE_STAGING_ROWS = 10_000


class ConcurrentInsert(Exception):
    """PostgreSQL: an id this write found existing was gone when it read the rows it replaces and
    was back when it wrote (deleted and inserted again by writers that bypass the table's lock),
    so what it replaced went uncounted in the hires rollup. Nothing is wrong with the rows: the
    transaction is rolled back and tried again (`batches`)."""


@dataclass
class LoadCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def __iadd__(self, other: LoadCounts) -> LoadCounts:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


def is_bulk(conn: sa.Connection, rows: int) -> bool:
    """Whether a write of `rows` rows rebuilds the table's keys and indexes instead of keeping them up."""
    return is_postgres(conn) and rows >= BULK_ROWS


# --- rows on the wire ---------------------------------------------------------------------------


def insert_rows(
    conn: sa.Connection,
    target: str,
    columns: Sequence[str],
    parts: Iterable[pa.Table | pa.RecordBatch],
    *,
    table: str | None = None,
    freeze: bool = False,
) -> None:
    """Append rows to `target` (a quoted, qualified name) shaped like the warehouse's `table`: one
    COPY on PostgreSQL (binary where the columns allow, `postgres_copy`; else CSV, for which the
    session's time zone must be UTC: `Stage.create`, `EmptyTableLoad`; `freeze`: written frozen,
    see `EmptyTableLoad`), `executemany` on SQLite."""
    columns_sql = columns_list(conn, columns)
    if is_postgres(conn):
        copy_rows(conn, target, columns, parts, table=metadata.tables.get(table) if table else None, freeze=freeze)
        return
    statement = f"INSERT INTO {target} ({columns_sql}) VALUES ({', '.join('?' for _ in columns)})"
    cursor = conn.connection.driver_connection.cursor()  # takes rows as they are made (`sqlite_rows`)
    try:
        for part in parts:
            cursor.executemany(statement, sqlite_rows(part))
    except sqlite3.Error as error:  # raised as SQLAlchemy would have: IntegrityError and the rest
        raise sa.exc.DBAPIError.instance(statement, None, error, sqlite3.Error) from error
    finally:
        cursor.close()


# --- SQL text -----------------------------------------------------------------------------------

_UTC_SESSION = "SET LOCAL TIME ZONE 'UTC'"


def columns_list(conn: sa.Connection, columns: Sequence[str]) -> str:
    return ", ".join(quote_identifier(conn, c) for c in columns)


def target_name(conn: sa.Connection, table: str) -> str:
    """The table, quoted; on SQLite qualified by `main`, so a temporary table never shadows it."""
    quoted = quote_identifier(conn, table)
    return quoted if is_postgres(conn) else f"main.{quoted}"


def holds_no_rows(conn: sa.Connection, table: str) -> bool:
    """Whether the warehouse's `table` is empty."""
    return conn.exec_driver_sql(f"SELECT NOT EXISTS (SELECT 1 FROM {target_name(conn, table)})").scalar_one()


def differs(conn: sa.Connection, columns: Sequence[str], key: str, left: str, right: str) -> str:
    """SQL: some non-key column of row `left` is not the same as in row `right` (NULLs compare equal)."""
    operator = "IS DISTINCT FROM" if is_postgres(conn) else "IS NOT"
    others = [quote_identifier(conn, c) for c in columns if c != key]
    return " OR ".join(f"{left}.{c} {operator} {right}.{c}" for c in others)


def on_conflict(conn: sa.Connection, columns: Sequence[str], key: str) -> str:
    """The upsert clause of an `INSERT INTO <target> AS target`: a row whose key exists updates it,
    only if it differs (so an equal row costs no write and is counted unchanged)."""
    others = [c for c in columns if c != key]
    if not others:
        return f"ON CONFLICT ({quote_identifier(conn, key)}) DO NOTHING"
    assignments = ", ".join(f"{quote_identifier(conn, c)} = excluded.{quote_identifier(conn, c)}" for c in others)
    return (
        f"ON CONFLICT ({quote_identifier(conn, key)}) DO UPDATE SET {assignments} WHERE {differs(conn, columns, key, 'target', 'excluded')}"
    )


class Stage:
    """A temporary table shaped like a target table, private to the connection.

    Made once per connection and emptied after use (on PostgreSQL by every commit), so no
    catalog churn per batch; a rolled-back transaction takes its rows (or its creation) along.
    """

    def __init__(self, conn: sa.Connection, table: str, columns: Sequence[str]):
        self.conn = conn
        self.table = table
        self.columns = list(columns)
        self.name = f"gdx_stage_{table}"
        self.ref = self.name if is_postgres(conn) else f"temp.{self.name}"
        self.target = target_name(conn, table)

    def create(self) -> None:
        if is_postgres(self.conn):
            # One round trip, with the time zone the COPY text is in.
            self.conn.exec_driver_sql(
                f"{_UTC_SESSION}; CREATE TEMP TABLE IF NOT EXISTS {self.name} (LIKE {self.target}) ON COMMIT DELETE ROWS"
            )
        else:
            self.conn.exec_driver_sql(
                f"CREATE TEMP TABLE IF NOT EXISTS {self.name} AS SELECT {columns_list(self.conn, self.columns)} FROM {self.target} WHERE 0"
            )

    def add(self, parts: Iterable[pa.Table | pa.RecordBatch]) -> None:
        insert_rows(self.conn, self.ref, self.columns, parts, table=self.table)

    def empty(self) -> None:
        """SQLite: delete the staged rows (PostgreSQL does at commit)."""
        if not is_postgres(self.conn):
            self.conn.exec_driver_sql(f"DELETE FROM {self.ref}")

    def upsert_sql(self, key: str, *, ordered: bool = False, where: str = "true") -> str:
        """INSERT the staged rows `where` holds into the target, upserting. `ordered`: in key
        order, so two writers sharing the table's lock never wait for each other's keys in
        opposite orders."""
        return f"{self._insert_sql(key, ordered=ordered, where=where)} {on_conflict(self.conn, self.columns, key)}"

    def insert_sql(self, key: str) -> str:
        """INSERT the staged rows whose keys the target lacks, in key order (as `upsert_sql`)."""
        return f"{self._insert_sql(key, ordered=True)} ON CONFLICT ({quote_identifier(self.conn, key)}) DO NOTHING"

    def _insert_sql(self, key: str, *, ordered: bool, where: str = "true") -> str:
        columns = columns_list(self.conn, self.columns)
        order = f" ORDER BY {quote_identifier(self.conn, key)}" if ordered else ""
        return f"INSERT INTO {self.target} AS target ({columns}) SELECT {columns} FROM {self.ref} WHERE {where}{order}"


# --- the jobs -----------------------------------------------------------------------------------


class EmptyTableLoad:
    """Rows into a table that holds none (just emptied, or never loaded): plain inserts.

    A bulk load goes into the bare table: on PostgreSQL foreign keys, secondary indexes and (if
    nothing references the table) the primary key are dropped first, on SQLite the secondary
    indexes; they are built once in `finish`, which must run before the transaction commits.

    PostgreSQL writes the rows frozen (`COPY … FREEZE`) into a table emptied by TRUNCATE in this
    transaction (`truncated`, as a restore does; a bulk load into an unreferenced table truncates
    it itself, once it has found it empty under the ACCESS EXCLUSIVE lock its dropped keys took).
    Frozen rows on all-visible pages spare the key and index builds' scans their per-row
    visibility checks, let index-only scans skip the heap at once, and spare the table the passes
    that would otherwise rewrite every page: the first reads after the load setting every row's
    hint bits, and a later vacuum freezing them. The price is TRUNCATE's and FREEZE's own: a
    transaction whose snapshot is older than the commit sees the rows.
    """

    def __init__(self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], *, bulk: bool, truncated: bool = False):
        self.conn = conn
        self.table = table
        self.columns = list(columns)
        self.bulk = bulk
        self.rows = 0
        self._primary_key = not is_referenced(table.name)
        postgres = is_postgres(conn)
        if postgres:
            conn.exec_driver_sql(_UTC_SESSION)
        if bulk:
            drop_secondary_structures(conn, table, primary_key=self._primary_key)
            if postgres and not truncated and self._primary_key:
                truncated = self._truncate_if_empty()
        self.freeze = postgres and truncated

    def _truncate_if_empty(self) -> bool:
        """TRUNCATE the table if it holds no row (PostgreSQL; none can arrive meanwhile: the
        dropped keys took its ACCESS EXCLUSIVE lock), giving it a fresh file COPY FREEZE may fill."""
        if not holds_no_rows(self.conn, self.table.name):
            return False
        self.conn.exec_driver_sql(f"TRUNCATE {target_name(self.conn, self.table.name)}")
        return True

    def add(self, parts: Iterable[pa.Table | pa.RecordBatch | PreparedRows]) -> None:
        target = target_name(self.conn, self.table.name)
        for part in parts:
            if isinstance(part, PreparedRows) and part.copy_payload is not None:
                copy_payload(self.conn, target, self.columns, part.copy_payload, freeze=self.freeze)
            else:
                rows = part.table if isinstance(part, PreparedRows) else part
                insert_rows(self.conn, target, self.columns, [rows], table=self.table.name, freeze=self.freeze)
            self.rows += part.table.num_rows if isinstance(part, PreparedRows) else part.num_rows

    def finish(self, *, explicit_ids: bool = False) -> int:
        if self.bulk:
            create_secondary_structures(self.conn, self.table, primary_key=self._primary_key)
        after_write(self.conn, self.table, bulk=self.bulk, explicit_ids=explicit_ids)
        return self.rows


def merge(conn: sa.Connection, table: sa.Table, columns: Sequence[str], parts: Iterable[pa.Table | pa.RecordBatch], *, rows: int) -> None:
    """Make `table` hold exactly the rows of `parts` without ever deleting a row they keep (so
    references to it hold throughout): stage them, delete the rows they lack, upsert the rest.
    The rows they lack must be unreferenced (the caller checked)."""
    key = table.primary_key.columns[0].name
    stage = Stage(conn, table.name, columns)
    stage.create()
    stage.add(parts)
    quoted_key = quote_identifier(conn, key)
    conn.exec_driver_sql(
        f"DELETE FROM {stage.target} WHERE NOT EXISTS (SELECT 1 FROM {stage.ref} AS s WHERE s.{quoted_key} = {stage.target}.{quoted_key})"
    )
    conn.exec_driver_sql(stage.upsert_sql(key))
    stage.empty()
    after_write(conn, table, bulk=is_bulk(conn, rows), explicit_ids=True)


class StagedUpsert:
    """Upserts the valid rows of one file or API batch, counting inserted, updated and unchanged
    rows. One per table per transaction; `add` typed rows (dictionary columns), then `apply`.

    PostgreSQL: COPY into the stage, then `INSERT … SELECT … ON CONFLICT`: one upsert with the
    keys dropped around it for a bulk write, else new ids first and existing ones after
    (`_insert_then_update_staged`); a big first load into an empty, unreferenced table skips the
    stage (`EmptyTableLoad`): nothing can conflict, since the validator already dropped later
    duplicates within the file. SQLite: block by block, a small one straight into the table with
    one `executemany` of the upsert, a big one through the stage.
    """

    def __init__(self, conn: sa.Connection, spec: TableSpec, *, expected_rows: int = 0):
        self.conn = conn
        self.spec = spec
        self.staged = 0
        self.postgres = is_postgres(conn)
        self.stage = Stage(conn, spec.name, spec.columns)
        self._sqlite_counts = LoadCounts()
        self.hires = hire_rollup_change(conn, spec.name)  # the rollup moves in the same transaction
        self._staged_ids: list[pa.ChunkedArray] = []  # PostgreSQL: a small upsert's keys
        self.direct: EmptyTableLoad | None = None
        if expected_rows >= BULK_ROWS and not is_referenced(spec.name) and holds_no_rows(conn, spec.name):
            # Both engines: a first big load goes into the bare table, its indexes built after.
            self.direct = EmptyTableLoad(conn, data_tables[spec.name], spec.columns, bulk=True)
        elif self.postgres:
            self.stage.create()

    def prepare(self, rows: pa.Table) -> pa.Table | PreparedRows:
        """What `add` takes, made ready without the database (any thread may call it): for a first
        load into the bare table, sorted by key, counted for the hires rollup and encoded for the wire."""
        if self.direct is None or rows.num_rows == 0:
            return rows
        prepared = prepare_for_empty_table(self.conn.dialect.name, self.direct.table, self.spec.columns, rows)
        prepared.hire_counts = self.hires.counted_ahead(prepared.table)
        return prepared

    def add(self, rows: pa.Table | PreparedRows) -> None:
        """Stage typed rows (dictionary columns, in order), or rows from `prepare`."""
        if isinstance(rows, PreparedRows):  # an empty table's first load: nothing stored to subtract
            if rows.hire_counts is not None:
                self.hires.add_counted(rows.hire_counts)
            else:
                self.hires.add(rows.table)
            self.direct.add([rows])
            self.staged += rows.table.num_rows
            return
        if rows.num_rows == 0:
            return
        table = rows.select(self.spec.columns)
        self.hires.add(table)
        if self.direct is not None:
            self.direct.add([prepare_for_empty_table(self.conn.dialect.name, self.direct.table, self.spec.columns, table)])
        elif self.postgres:
            self.stage.add([table])
            if self.staged + table.num_rows < BULK_ROWS:
                self._staged_ids.append(table.column(self.spec.primary_key))
        elif table.num_rows >= SQLITE_STAGING_ROWS:
            self._sqlite_counts += self._upsert_sqlite_staged(table)
        else:
            self._sqlite_counts += self._upsert_sqlite_rows(table)
        self.staged += rows.num_rows

    def apply(self) -> LoadCounts:
        if self.direct is not None:
            counts = LoadCounts(inserted=self.direct.finish())
        elif self.staged == 0:
            counts = LoadCounts()
        elif self.postgres:
            counts = self._apply_postgres()
        else:
            counts = self._sqlite_counts
        self.hires.apply()
        return counts

    def _apply_postgres(self) -> LoadCounts:
        table = data_tables[self.spec.name]
        if is_bulk(self.conn, self.staged):  # the table held alone
            key = quote_identifier(self.conn, self.spec.primary_key)
            self.hires.subtract_stored(f"{self.stage.ref} AS s JOIN {self.stage.target} AS t ON t.{key} = s.{key}")
            drop_secondary_structures(self.conn, table)
            inserted, updated = self._upsert_staged()
            create_secondary_structures(self.conn, table)
        else:
            inserted, updated = self._insert_then_update_staged(table)
        after_write(self.conn, table, bulk=is_bulk(self.conn, self.staged))
        return LoadCounts(inserted=inserted, updated=updated, unchanged=self.staged - inserted - updated)

    def _upsert_staged(self, *, where: str = "true", parameters: tuple = ()) -> tuple[int, int]:
        """(inserted, updated): the staged rows `where` holds, upserted (in key order: see
        `Stage.upsert_sql`; bulk loads, which hold the table alone, need not)."""
        ordered = not is_bulk(self.conn, self.staged)
        inserted, updated = self.conn.exec_driver_sql(
            f"WITH upserted AS ({self.stage.upsert_sql(self.spec.primary_key, ordered=ordered, where=where)} "
            "RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted",
            parameters,
        ).one()
        return inserted, updated

    def _insert_then_update_staged(self, table: sa.Table) -> tuple[int, int]:
        """(inserted, updated), for a write that shares the table with others (an API batch, a
        small file). First the staged rows go in with `ON CONFLICT DO NOTHING`, in key order: new
        ids replace nothing, so a batch of new employees, the usual one, reads nothing before it
        writes. A new id that another writer is inserting waits for its commit and then counts
        as existing. The staged rows whose ids exist are then read `FOR UPDATE` (counted out of
        the hires rollup: `HireRollupChange.subtract_stored`) and upserted: a writer moving the
        same rows waits for this one and then reads what it wrote."""
        key = self.spec.primary_key
        quoted = quote_identifier(self.conn, key)
        inserted, inserted_ids = self.conn.exec_driver_sql(
            f"WITH inserted AS ({self.stage.insert_sql(key)} RETURNING {quoted} AS key) "
            "SELECT count(*), CASE WHEN count(*) < %s THEN coalesce(array_agg(key), '{}') END FROM inserted",
            (self.staged,),
        ).one()
        if inserted == self.staged:
            return inserted, 0
        staged = pa.chunked_array([chunk for part in self._staged_ids for chunk in part.chunks])
        existing = staged.filter(pc.invert(pc.is_in(staged, value_set=pa.array(inserted_ids, staged.type))))
        where, parameters = self._keys_sql(table, existing)
        replaced = self.hires.subtract_stored(
            f"(SELECT datetime, department_id, job_id FROM {self.stage.target} WHERE {where} ORDER BY {quoted} FOR UPDATE) AS t",
            parameters,
        )
        also_inserted, updated = self._upsert_staged(where=where, parameters=parameters)
        if replaced is not None and also_inserted != len(existing) - replaced:
            raise ConcurrentInsert(
                f"{len(existing) - replaced - also_inserted} id(s) of this write were deleted and inserted again by a concurrent "
                "write meanwhile; nothing was written, try again"
            )
        return inserted + also_inserted, updated

    def _keys_sql(self, table: sa.Table, keys: pa.ChunkedArray) -> tuple[str, tuple]:
        """A WHERE clause (and its parameters) selecting `keys` from the target or the stage (no
        alias). Keys within `DENSE_KEYS` times their number of each other (new hires'
        consecutive ids, say) are found with one range of the key's index, filtered by the keys
        (hashed; `+ 0` keeps the filter out of the index): one descent, and a range past the
        table's end is found empty at once. Others are looked up one by one."""
        key = quote_identifier(self.conn, self.spec.primary_key)
        array, ids = f"%s::{table.c[self.spec.primary_key].type.compile(self.conn.dialect)}[]", array_text(keys.to_pylist())
        low, high = (value.as_py() for value in pc.min_max(keys).values())
        if high - low < DENSE_KEYS * len(keys):
            return f"{key} BETWEEN %s AND %s AND {key} + 0 = ANY({array})", (low, high, ids)
        return f"{key} = ANY({array})", (ids,)

    def _upsert_sqlite_rows(self, table: pa.Table) -> LoadCounts:
        """Count what existed before from the block's ids, what changed from rowcount (SQLite
        counts a row whose DO UPDATE condition was false as no change)."""
        target, key = self.stage.target, quote_identifier(self.conn, self.spec.primary_key)
        ids = json.dumps(table.column(self.spec.primary_key).to_pylist())
        existing = self.conn.exec_driver_sql(
            f"SELECT count(*) FROM {target} WHERE {key} IN (SELECT value FROM json_each(?))", (ids,)
        ).scalar_one()
        if existing:
            self.hires.subtract_stored(f"{target} AS t WHERE t.{key} IN (SELECT value FROM json_each(?))", (ids,))
        columns = self.spec.columns
        changed = self.conn.exec_driver_sql(
            f"INSERT INTO {target} AS target ({columns_list(self.conn, columns)}) VALUES ({', '.join('?' for _ in columns)}) "
            f"{on_conflict(self.conn, columns, self.spec.primary_key)}",
            sqlite_parameters(table),
        ).rowcount
        inserted = table.num_rows - existing
        return LoadCounts(inserted=inserted, updated=changed - inserted, unchanged=existing - (changed - inserted))

    def _upsert_sqlite_staged(self, table: pa.Table) -> LoadCounts:
        """Stage the block, count its existing and differing rows with one join, upsert it (one
        `INSERT … SELECT` beats a per-row upsert from `SQLITE_STAGING_ROWS` rows up)."""
        stage, key = self.stage, quote_identifier(self.conn, self.spec.primary_key)
        stage.create()
        stage.add([table])
        existing, changed = self.conn.exec_driver_sql(
            "SELECT count(*), coalesce(sum(CASE WHEN "
            f"{differs(self.conn, self.spec.columns, self.spec.primary_key, 'target', 'stage')} THEN 1 ELSE 0 END), 0) "
            f"FROM {stage.ref} AS stage JOIN {stage.target} AS target ON target.{key} = stage.{key}"
        ).one()
        if existing:
            self.hires.subtract_stored(f"{stage.ref} AS s JOIN {stage.target} AS t ON t.{key} = s.{key}")
        self.conn.exec_driver_sql(stage.upsert_sql(self.spec.primary_key))
        stage.empty()
        return LoadCounts(inserted=table.num_rows - existing, updated=changed, unchanged=existing - changed)
