"""Restores: verified backups swapped in, in one transaction that leaves every table as it was
if anything is refused.

One transaction takes the writers' locks, checks that no foreign key would break, replaces the
tables' contents (emptied and reloaded, or merged where other tables point at them) and records
each swap in the ingestion ledger.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from gdx_pipeline.core.backups.avro_schema import BACKUP_TABLES, BackupTable, referencing_tables
from gdx_pipeline.core.backups.catalog import BackupInfo, resolve_backup, resolve_snapshot
from gdx_pipeline.core.backups.errors import BackupError, RestoreRefusedError
from gdx_pipeline.core.backups.snapshot import CHUNK_ROWS, lock_order
from gdx_pipeline.core.backups.verify import VerifiedBackup, check_foreign_keys, verify_backup
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import Logger, lock_table_for_writes, now_utc
from gdx_pipeline.core.loading import create_secondary_structures, drop_secondary_structures, quote_identifier
from gdx_pipeline.core.warehouse import ingestion_ledger, is_postgres, write_transaction
from gdx_pipeline.dictionary import TABLES

# From this many rows on, a PostgreSQL restore drops the keys and indexes, COPYs, and builds them
# once after: one sorted index build and one set-wise foreign key check beat per-row upkeep.
BULK_RESTORE_ROWS = 200_000

_default_log = logging.getLogger("gdx_pipeline.backups")


@dataclass
class RestoreResult:
    table: str
    backup: str
    snapshot_id: str
    rows_restored: int
    rows_replaced: int  # rows the table held before
    seconds: float


def restore_table(
    engine: sa.Engine,
    folders: DataFolders,
    table: str,
    backup: str = "latest",
    *,
    run_id: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    log: Logger = _default_log,
) -> RestoreResult:
    """Replace `table`'s contents with a verified backup (`latest` or a file name), atomically.

    Refused (RestoreRefusedError, table unchanged) if the file fails verification or if the
    restore would leave an employee pointing at a missing department or job.
    """
    info = resolve_backup(folders, table, backup)
    (result,) = restore_backups(engine, folders, [info], run_id=run_id, chunk_rows=chunk_rows, log=log)
    return result


def restore_snapshot(
    engine: sa.Engine,
    folders: DataFolders,
    snapshot: str = "latest",
    *,
    run_id: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    log: Logger = _default_log,
) -> list[RestoreResult]:
    """Restore every table of one snapshot together, in dependency order, in one transaction."""
    return restore_backups(engine, folders, resolve_snapshot(folders, snapshot), run_id=run_id, chunk_rows=chunk_rows, log=log)


def restore_backups(
    engine: sa.Engine,
    folders: DataFolders,
    backups: Sequence[BackupInfo],
    *,
    run_id: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    log: Logger = _default_log,
) -> list[RestoreResult]:
    """Verify every backup, then replace all their tables in one transaction."""
    order = list(BACKUP_TABLES)
    backups = sorted(backups, key=lambda b: order.index(b.table))
    if len({b.table for b in backups}) != len(backups):
        raise BackupError("one restore can take only one backup per table")
    started = time.perf_counter()
    folders.backups.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=folders.backups) as spool_dir:
        verified = [verify_backup(info, Path(spool_dir), chunk_rows=chunk_rows, log=log) for info in backups]
        results = _swap_in(engine, verified, run_id=run_id, log=log)
    seconds = time.perf_counter() - started
    for result in results:
        result.seconds = seconds
        log.info(f"{result.table}: restored {result.rows_restored:,} rows from {result.backup} (replaced {result.rows_replaced:,})")
    return results


def _swap_in(engine: sa.Engine, verified: list[VerifiedBackup], *, run_id: str | None, log: Logger) -> list[RestoreResult]:
    by_table = {v.table.name: v for v in verified}
    replaced = _replaceable(by_table)
    started_at = now_utc()
    try:
        with write_transaction(engine) as conn:
            _lock(conn, by_table, replaced)
            check_foreign_keys(conn, by_table)
            prior = {name: _count(conn, name) for name in by_table}
            accounted = {name: _ledger_balance(conn, name) for name in by_table}
            _empty(conn, [name for name in by_table if name in replaced])
            for name, item in by_table.items():
                if name in replaced:
                    _load(conn, item)
                else:
                    _merge(conn, item)
                _after_load(conn, item)
                conn.execute(
                    ingestion_ledger.insert().values(
                        table_name=name,
                        source=f"restore:{item.info.name}"[:512],
                        sha256=None,
                        size_bytes=item.info.bytes,
                        rows_read=0,
                        rows_inserted=item.rows,
                        rows_updated=0,
                        rows_unchanged=0,
                        rows_rejected=0,
                        # What the ledger accounted for, not what was there: a restore that repairs
                        # an out-of-band change also puts the ledger back in balance with the table.
                        rows_deleted=accounted[name],
                        run_id=run_id,
                        started_at=started_at,
                        finished_at=now_utc(),
                    )
                )
    except (sa.exc.IntegrityError, sa.exc.DataError) as error:
        # Someone wrote a conflicting row between our checks and the swap; the database said no.
        raise RestoreRefusedError(
            f"the database refused the restore ({str(error.orig).splitlines()[0]}); nothing was restored. "
            "Another writer may have changed a related table meanwhile: try again, or restore a whole snapshot."
        ) from None
    return [RestoreResult(name, item.info.name, item.info.snapshot_id, item.rows, prior[name], 0.0) for name, item in by_table.items()]


def _replaceable(by_table: dict[str, VerifiedBackup]) -> set[str]:
    """Tables that can be emptied and reloaded: every table pointing at them is replaced too.

    The others (say `departments` restored alone, with employees pointing at it) are merged:
    rows the backup keeps are updated in place, so the references to them hold throughout.
    """
    replaced: set[str] = set()
    for name in reversed(list(by_table)):  # children first
        if all(child.name in replaced for child, _ in referencing_tables(name)):
            replaced.add(name)
    return replaced


def _is_bulk(conn: sa.Connection, item: VerifiedBackup) -> bool:
    return is_postgres(conn) and item.rows >= BULK_RESTORE_ROWS


def _lock(conn: sa.Connection, by_table: dict[str, VerifiedBackup], replaced: set[str]) -> None:
    """Take the writers' locks of the tables involved, then (PostgreSQL) the table locks TRUNCATE
    and the key rebuild need, in `lock_order`, all up front so no lock is upgraded later.

    The reject log is written under its data table's lock, so restoring it takes all of them.
    """
    wanted = set(by_table)
    if "rejected_rows" in wanted:
        wanted |= set(TABLES)
    for name, spec in TABLES.items():
        if name in wanted or any(fk.table == name for t in by_table.values() for fk in t.table.foreign_keys):
            lock_table_for_writes(conn, spec)
    if not is_postgres(conn):
        return  # SQLite: the transaction began with BEGIN IMMEDIATE
    exclusive = set(replaced)
    for name in replaced:
        if _is_bulk(conn, by_table[name]):
            exclusive |= {fk.table for fk in by_table[name].table.foreign_keys}
    if exclusive:
        conn.exec_driver_sql(f"LOCK TABLE {', '.join(quote_identifier(conn, n) for n in lock_order(exclusive))} IN ACCESS EXCLUSIVE MODE")


def _empty(conn: sa.Connection, names: list[str]) -> None:
    """PostgreSQL: one TRUNCATE (fresh files, no dead rows for the COPY to step over). SQLite:
    DELETE, children first."""
    if not names:
        return
    if is_postgres(conn):
        conn.exec_driver_sql(f"TRUNCATE {', '.join(quote_identifier(conn, n) for n in lock_order(names))}")
        return
    for name in lock_order(names):
        conn.exec_driver_sql(f"DELETE FROM {quote_identifier(conn, name)}")


def _ledger_balance(conn: sa.Connection, name: str) -> int:
    ledger = ingestion_ledger.c
    balance = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(ledger.rows_inserted), 0) - sa.func.coalesce(sa.func.sum(ledger.rows_deleted), 0)).where(ledger.table_name == name)
    ).scalar_one()
    return int(balance)


def _count(conn: sa.Connection, name: str) -> int:
    return conn.exec_driver_sql(f"SELECT count(*) FROM {quote_identifier(conn, name)}").scalar_one()


def _columns_sql(conn: sa.Connection, table: BackupTable) -> str:
    return ", ".join(quote_identifier(conn, c) for c in table.column_names)


def _write_rows(conn: sa.Connection, item: VerifiedBackup, target: str) -> None:
    """Stream the spooled rows into `target`: COPY on PostgreSQL, executemany on SQLite."""
    columns = _columns_sql(conn, item.table)
    if is_postgres(conn):
        # Times go out as naive UTC text (Arrow writes those much faster than zoned ones), read
        # back as UTC by the session time zone set here for this transaction only.
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT csv)") as copy:
            for batch in item.spooled_batches():
                buffer = io.BytesIO()
                pacsv.write_csv(_naive_times(batch, item.table), buffer, pacsv.WriteOptions(include_header=False))
                copy.write(buffer.getbuffer())
        return
    placeholders = ", ".join("?" for _ in item.table.columns)
    for batch in item.spooled_batches():
        naive = _naive_times(batch, item.table)
        # SQLAlchemy's SQLite DateTime text: naive UTC, microseconds; Arrow's cast writes exactly that.
        arrays = [naive.column(i).cast(pa.string()).to_pylist() if c.kind == "timestamp" else naive.column(i).to_pylist() for i, c in enumerate(item.table.columns)]
        conn.exec_driver_sql(f"INSERT INTO {target} ({columns}) VALUES ({placeholders})", list(zip(*arrays)))


def _naive_times(batch: pa.RecordBatch, table: BackupTable) -> pa.RecordBatch:
    arrays = [batch.column(i).cast(pa.timestamp("us")) if c.kind == "timestamp" else batch.column(i) for i, c in enumerate(table.columns)]
    return pa.RecordBatch.from_arrays(arrays, names=table.column_names)


def _load(conn: sa.Connection, item: VerifiedBackup) -> None:
    """Into the emptied table. A large PostgreSQL load drops the foreign keys, secondary indexes
    and (if nothing references it) the primary key, and builds them once after the COPY, as
    ingestion's first load does: one sorted index build and one set-wise key check beat per-row upkeep."""
    target = quote_identifier(conn, item.table.name)
    sql_table = item.table.sql_table
    bulk = _is_bulk(conn, item)
    keep_key = bool(referencing_tables(item.table.name))
    if bulk:
        drop_secondary_structures(conn, sql_table, primary_key=not keep_key)
    _write_rows(conn, item, target if is_postgres(conn) else f"main.{target}")
    if bulk:
        create_secondary_structures(conn, sql_table, primary_key=not keep_key)


def _merge(conn: sa.Connection, item: VerifiedBackup) -> None:
    """Replace the contents of a table others reference without ever deleting a referenced row:
    stage the backup, delete the rows it lacks (checked unreferenced), upsert the rest."""
    postgres = is_postgres(conn)
    table = item.table
    target = quote_identifier(conn, table.name)
    stage = f"gdx_restore_{table.name}"
    columns = _columns_sql(conn, table)
    key = quote_identifier(conn, table.primary_key)
    if postgres:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{stage}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP")
        stage_ref, target_ref = stage, target
    else:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{stage}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} AS SELECT {columns} FROM main.{target} WHERE 0")
        stage_ref, target_ref = f"temp.{stage}", f"main.{target}"
    _write_rows(conn, item, stage_ref)
    conn.exec_driver_sql(f"DELETE FROM {target_ref} WHERE NOT EXISTS (SELECT 1 FROM {stage_ref} AS s WHERE s.{key} = {target_ref}.{key})")
    others = [c for c in table.column_names if c != table.primary_key]
    assignments = ", ".join(f"{quote_identifier(conn, c)} = excluded.{quote_identifier(conn, c)}" for c in others)
    conflict = f"ON CONFLICT ({key}) DO UPDATE SET {assignments}" if others else f"ON CONFLICT ({key}) DO NOTHING"
    conn.exec_driver_sql(f"INSERT INTO {target_ref} ({columns}) SELECT {columns} FROM {stage_ref} WHERE true {conflict}")
    conn.exec_driver_sql(f"DROP TABLE {stage_ref}")


def _after_load(conn: sa.Connection, item: VerifiedBackup) -> None:
    if not is_postgres(conn):
        return
    target = quote_identifier(conn, item.table.name)
    column = item.table.sql_table.c[item.table.primary_key]
    if column.autoincrement is True:
        # A serial id: new rows must be numbered after the restored ones.
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{item.table.name}', '{item.table.primary_key}'), "
            f"coalesce(max({quote_identifier(conn, item.table.primary_key)}), 0) + 1, false) FROM {target}"
        )
    if _is_bulk(conn, item):
        conn.exec_driver_sql(f"ANALYZE {target}")
