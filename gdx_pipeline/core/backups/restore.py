"""Restores: verified backups swapped in, in one transaction that leaves every table as it was
if anything is refused.

One transaction takes the writers' locks, checks that no foreign key would break, replaces the
tables' contents (emptied and reloaded, or merged where other tables point at them) and records
each swap in the ingestion ledger.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from gdx_pipeline.core.backups.avro_schema import BACKUP_TABLES, referencing_tables
from gdx_pipeline.core.backups.catalog import BackupInfo, resolve_backup, resolve_snapshot
from gdx_pipeline.core.backups.errors import BackupError, RestoreRefusedError
from gdx_pipeline.core.backups.snapshot import CHUNK_ROWS, lock_order
from gdx_pipeline.core.backups.verify import VerifiedBackup, check_foreign_keys, verify_backup
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.hire_rollup import hire_rollup_change
from gdx_pipeline.core.ledger import ledger_totals, record_ledger_entry, restore_source
from gdx_pipeline.core.locks import lock_table_for_writes
from gdx_pipeline.core.logger import Logger
from gdx_pipeline.core.staged_writes import BULK_ROWS, EmptyTableLoad, LoadCounts, is_bulk, merge
from gdx_pipeline.core.utc import now_utc
from gdx_pipeline.core.warehouse import is_postgres, quote_identifier, write_transaction
from gdx_pipeline.dictionary import TABLES

# From this many rows on, a PostgreSQL restore drops the keys and indexes, COPYs, and builds them
# once after (the one bulk threshold of every writer: `staged_writes.BULK_ROWS`).
BULK_RESTORE_ROWS = BULK_ROWS

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
                _write(conn, item, replace=name in replaced)
                record_ledger_entry(
                    conn,
                    table=name,
                    source=restore_source(item.info.name),
                    size_bytes=item.info.bytes,
                    counts=LoadCounts(inserted=item.rows),
                    # What the ledger accounted for, not what was there: a restore that repairs
                    # an out-of-band change also puts the ledger back in balance with the table.
                    rows_deleted=accounted[name],
                    run_id=run_id,
                    started_at=started_at,
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
        if is_bulk(conn, by_table[name].rows):
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
    inserted, deleted = ledger_totals(conn, name)
    return inserted - deleted


def _count(conn: sa.Connection, name: str) -> int:
    return conn.exec_driver_sql(f"SELECT count(*) FROM {quote_identifier(conn, name)}").scalar_one()


def _write(conn: sa.Connection, item: VerifiedBackup, *, replace: bool) -> None:
    """The spooled rows into their table: into the emptied table (`replace`), or merged where
    other tables point at it, so a row they reference is never missing (`staged_writes`).
    Either way the table then holds exactly the backup's rows, and the hire rollup counts them."""
    table, columns = item.table.sql_table, item.table.column_names
    hires = hire_rollup_change(conn, table.name)
    hires.clear()
    batches = hires.counting(item.spooled_batches())
    if replace:
        load = EmptyTableLoad(conn, table, columns, bulk=is_bulk(conn, item.rows), truncated=is_postgres(conn))  # by `_empty`
        load.add(batches)
        load.finish(explicit_ids=True)
    else:
        merge(conn, table, columns, batches, rows=item.rows)
    hires.apply()
