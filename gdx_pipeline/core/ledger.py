"""The ingestion ledger: one row per applied file, API batch or restore, saying what it did to
which table, committed in the same transaction as the write it describes.

A file's sha256 in it makes applying a file idempotent; per table, rows inserted minus rows
deleted is what the table should hold (`counts_match_ledger`), and what a restore writes off.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from gdx_pipeline.core.staged_writes import LoadCounts
from gdx_pipeline.core.utc import now_utc
from gdx_pipeline.core.warehouse import ingestion_ledger

# A restore's source in the ledger: `restore:<backup file name>`.
RESTORE_PREFIX = "restore:"
_APPEND_ENTRY = ingestion_ledger.insert()


def restore_source(backup_name: str) -> str:
    return f"{RESTORE_PREFIX}{backup_name}"[: ingestion_ledger.c.source.type.length]


def record_ledger_entry(
    conn: sa.Connection,
    *,
    table: str,
    source: str,
    counts: LoadCounts,
    started_at: datetime,
    run_id: str | None,
    sha256: str | None = None,
    size_bytes: int | None = None,
    rows_read: int = 0,
    rows_rejected: int = 0,
    rows_deleted: int = 0,
) -> None:
    """Append what one write did; `finished_at` is now. One INSERT statement object for every
    entry, its values as parameters: `insert().values(...)` built a new statement per entry and
    cost an API batch twice the Python time of the insert's round trip."""
    conn.execute(
        _APPEND_ENTRY,
        {
            "table_name": table,
            "source": source,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "rows_read": rows_read,
            "rows_inserted": counts.inserted,
            "rows_updated": counts.updated,
            "rows_unchanged": counts.unchanged,
            "rows_rejected": rows_rejected,
            "rows_deleted": rows_deleted,
            "run_id": run_id,
            "started_at": started_at,
            "finished_at": now_utc(),
        },
    )


def already_applied(conn: sa.Connection, sha256: str) -> bool:
    """A file with this content was applied before."""
    return conn.execute(sa.select(ingestion_ledger.c.id).where(ingestion_ledger.c.sha256 == sha256)).first() is not None


def ledger_totals(conn: sa.Connection, table: str) -> tuple[int, int]:
    """(rows inserted, rows deleted) the ledger accounts for in `table`."""
    ledger = ingestion_ledger.c
    inserted, deleted = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(ledger.rows_inserted), 0), sa.func.coalesce(sa.func.sum(ledger.rows_deleted), 0)).where(
            ledger.table_name == table
        )
    ).one()
    return int(inserted), int(deleted)
