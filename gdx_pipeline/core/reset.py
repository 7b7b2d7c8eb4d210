"""Emptying a warehouse and its data folder: the way back to a clean start, e.g. from the demo's
sample before the real files go in.

Tables are emptied, not dropped (a running code server keeps its engine and schema), in one
transaction that waits for file loads, API batches and restores in flight (their writer locks). The data
folder's sub-folders are emptied, not removed; backups are kept unless asked for, because they
are the way back from a mistake, this one included.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.locks import lock_table_for_writes
from gdx_pipeline.core.warehouse import is_postgres, metadata, write_transaction
from gdx_pipeline.dictionary import TABLES


@dataclass(frozen=True)
class WarehouseContents:
    """Rows per table (every table the warehouse has of ours) and files per data sub-folder."""

    rows: dict[str, int]
    files: dict[str, int]

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_files(self) -> int:
        return sum(self.files.values())


def cleared_folders(folders: DataFolders, include_backups: bool) -> dict[str, Path]:
    """The sub-folders a reset empties, by name: all but `backups/` unless asked."""
    named = {
        "landing": folders.landing,
        "processed": folders.processed,
        "quarantine": folders.quarantine,
        "rejects": folders.rejects,
        "reports": folders.reports,
    }
    if include_backups:
        named["backups"] = folders.backups
    return named


def _existing_tables(conn: sa.Connection) -> list[sa.Table]:
    """Our tables that exist in this warehouse, parents before children."""
    inspector = sa.inspect(conn)
    return [table for table in metadata.sorted_tables if inspector.has_table(table.name)]


def _row_count(conn: sa.Connection, table: sa.Table) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def count_files(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for path in folder.rglob("*") if path.is_file() or path.is_symlink())


def contents(engine: sa.Engine, folders: DataFolders, include_backups: bool = False) -> WarehouseContents:
    """What a reset would remove."""
    with engine.connect() as conn:
        rows = {table.name: _row_count(conn, table) for table in _existing_tables(conn)}
    files = {name: count_files(path) for name, path in cleared_folders(folders, include_backups).items()}
    return WarehouseContents(rows=rows, files=files)


def empty_warehouse(engine: sa.Engine) -> dict[str, int]:
    """Delete every row of every table of ours, in one transaction; rows deleted per table.

    PostgreSQL truncates them all in one statement (and restarts their id sequences) rather
    than deleting millions of rows one at a time, each checked against its foreign keys.
    """
    with write_transaction(engine) as conn:
        for spec in TABLES.values():  # wait for file loads, API batches and restores in flight (PostgreSQL)
            lock_table_for_writes(conn, spec)
        tables = _existing_tables(conn)
        rows = {table.name: _row_count(conn, table) for table in tables}
        if is_postgres(conn):
            names = ", ".join(conn.dialect.identifier_preparer.format_table(table) for table in tables)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY")
        else:
            for table in reversed(tables):  # children first
                conn.execute(table.delete())
        return rows


def empty_folder(folder: Path) -> int:
    """Remove everything inside `folder` (symbolic links themselves, never what they point at);
    the number of files removed."""
    removed = 0
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            removed += count_files(entry)
            shutil.rmtree(entry)
        else:
            entry.unlink()
            removed += 1
    return removed


def reset(engine: sa.Engine, folders: DataFolders, include_backups: bool = False) -> WarehouseContents:
    """Empty the warehouse, then the data sub-folders; what was removed."""
    rows = empty_warehouse(engine)
    files = {name: empty_folder(path) for name, path in cleared_folders(folders, include_backups).items()}
    return WarehouseContents(rows=rows, files=files)
