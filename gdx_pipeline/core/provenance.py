"""Where the warehouse's rows came from, read back from the ingestion ledger.

Every load writes its ledger row in the transaction that applies it (a file, an API batch, a
restore), so the ledger is the committed history of what fed each table. Shown beside the
numbers (dashboard, asset metadata), it lets a reader tell the real files from the demo sample
by name, content hash and time, without opening the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from gdx_pipeline.core.ledger import RESTORE_PREFIX
from gdx_pipeline.core.utc import as_utc
from gdx_pipeline.core.warehouse import ingestion_ledger

SHA256_SHOWN = 12  # hex digits of a file's sha256 shown beside its name
NEWEST_FILES = 100  # files listed one by one; older ones are counted


@dataclass(frozen=True)
class FileLoad:
    """One landing file applied to one table."""

    table: str
    file: str
    sha256: str
    rows_read: int
    rows_inserted: int
    rows_updated: int
    rows_rejected: int
    loaded_at: datetime
    run_id: str | None

    @property
    def sha256_prefix(self) -> str:
        return self.sha256[:SHA256_SHOWN]


@dataclass(frozen=True)
class BatchesSummary:
    """Every batch one door (the REST API) wrote to one table, summed."""

    table: str
    source: str
    batches: int
    rows_read: int
    rows_inserted: int
    rows_updated: int
    rows_rejected: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class Restore:
    """A table replaced or merged from an Avro backup."""

    table: str
    backup: str
    rows: int
    restored_at: datetime


@dataclass(frozen=True)
class Provenance:
    """What fed the named tables: the newest files one by one (older ones counted), API batches
    per table, and restores, as the ledger holds them now."""

    tables: tuple[str, ...]
    files: tuple[FileLoad, ...]
    older_files: int
    older_file_rows: int
    batches: tuple[BatchesSummary, ...]
    restores: tuple[Restore, ...]

    @property
    def file_count(self) -> int:
        return len(self.files) + self.older_files

    @property
    def batch_count(self) -> int:
        return sum(b.batches for b in self.batches)

    @property
    def loaded_at(self) -> datetime | None:
        """When anything last changed these tables through the ledger; None when nothing ever did."""
        times = [f.loaded_at for f in self.files] + [b.last_at for b in self.batches] + [r.restored_at for r in self.restores]
        return max(times, default=None)

    @property
    def is_empty(self) -> bool:
        return not (self.file_count or self.batches or self.restores)


def read_provenance(engine: sa.Engine, tables: Iterable[str], *, newest_files: int = NEWEST_FILES) -> Provenance:
    """The ledger's account of `tables`, newest first."""
    tables = tuple(tables)
    ledger = ingestion_ledger.c
    of_tables = ledger.table_name.in_(tables)
    is_file = ledger.sha256.is_not(None)
    is_restore = ledger.source.startswith(RESTORE_PREFIX, autoescape=True)
    with engine.connect() as conn:
        files = [
            FileLoad(
                r.table_name,
                r.source,
                r.sha256,
                r.rows_read,
                r.rows_inserted,
                r.rows_updated,
                r.rows_rejected,
                as_utc(r.finished_at),
                r.run_id,
            )
            for r in conn.execute(
                sa.select(ingestion_ledger)
                .where(of_tables, is_file)
                .order_by(ledger.finished_at.desc(), ledger.id.desc())
                .limit(newest_files)
            )
        ]
        total_files, total_rows = conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(ledger.rows_read), 0)).where(of_tables, is_file)
        ).one()
        batches = [
            BatchesSummary(
                r.table_name,
                r.source,
                r.batches,
                int(r.rows_read),
                int(r.rows_inserted),
                int(r.rows_updated),
                int(r.rows_rejected),
                as_utc(r.first_at),
                as_utc(r.last_at),
            )
            for r in conn.execute(
                sa.select(
                    ledger.table_name,
                    ledger.source,
                    sa.func.count().label("batches"),
                    sa.func.sum(ledger.rows_read).label("rows_read"),
                    sa.func.sum(ledger.rows_inserted).label("rows_inserted"),
                    sa.func.sum(ledger.rows_updated).label("rows_updated"),
                    sa.func.sum(ledger.rows_rejected).label("rows_rejected"),
                    sa.func.min(ledger.finished_at).label("first_at"),
                    sa.func.max(ledger.finished_at).label("last_at"),
                )
                .where(of_tables, ~is_file, ~is_restore)
                .group_by(ledger.table_name, ledger.source)
                .order_by(ledger.table_name, ledger.source)
            )
        ]
        restores = [
            Restore(r.table_name, r.source.removeprefix(RESTORE_PREFIX), r.rows_inserted, as_utc(r.finished_at))
            for r in conn.execute(
                sa.select(ingestion_ledger).where(of_tables, is_restore).order_by(ledger.finished_at.desc(), ledger.id.desc())
            )
        ]
    shown_rows = sum(f.rows_read for f in files)
    return Provenance(
        tables=tables,
        files=tuple(files),
        older_files=int(total_files) - len(files),
        older_file_rows=int(total_rows) - shown_rows,
        batches=tuple(batches),
        restores=tuple(restores),
    )
