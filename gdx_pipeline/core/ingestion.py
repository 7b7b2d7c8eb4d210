"""Applying landing files to the warehouse, one file per transaction.

A file's rows, its rejected rows and its ledger entry commit together; only then does the file
move to `processed/`. A run killed at any moment leaves each file applied or not at all, and
a re-run skips a file whose sha256 is already in the ledger, so it converges. A file that
cannot be read at all moves to `quarantine/` with a reason file; it never stops the others.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import sqlalchemy as sa

from gdx_pipeline.core.csv_source import DEFAULT_BLOCK_BYTES, UnreadableFileError, file_sha256, read_record_blocks, table_for_file
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.loading import LoadCounts, StagedUpsert, estimated_rows, known_keys, record_rejects
from gdx_pipeline.core.validation import RejectedRow, RowValidator
from gdx_pipeline.core.warehouse import ingestion_ledger, is_postgres, quarantined_files, write_transaction
from gdx_pipeline.dictionary import TABLES, TableSpec


class Logger(Protocol):
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...


T = TypeVar("T")
_default_log = logging.getLogger("gdx_pipeline.ingestion")


@dataclass
class FileOutcome:
    """What happened to one landing file."""

    file: str
    status: str  # "applied", "skipped" (already in the ledger) or "quarantined"
    table: str | None
    sha256: str
    size_bytes: int
    rows_read: int = 0
    counts: LoadCounts = field(default_factory=LoadCounts)
    rows_rejected: int = 0
    rejects_by_reason: Counter = field(default_factory=Counter)
    reject_file: str | None = None
    reason: str | None = None
    seconds: float = 0.0


def reason_kind(reason: str) -> str:
    """A reason without the offending value, for counting rejects by kind."""
    return reason.split(" (got ", 1)[0]


def now_utc() -> datetime:
    return datetime.now(UTC)


def pending_files(folders: DataFolders, tables: Iterable[str] | None = None) -> list[Path]:
    """Files waiting in landing, in dependency order (departments and jobs before employees).

    Hidden files (`.name`) are uploads in progress and are left alone. Files that match no
    table are included (so they get quarantined) unless `tables` restricts the selection.
    """
    wanted = set(tables) if tables is not None else None
    order = {name: i for i, name in enumerate(TABLES)}
    found = []
    for path in folders.landing.iterdir() if folders.landing.exists() else ():
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            table = table_for_file(path).name
        except UnreadableFileError:
            table = None
        if wanted is not None and table not in wanted:
            continue
        found.append((order.get(table, len(order)), path.name, path))
    return [path for *_, path in sorted(found)]


def ingest_landing(
    engine: sa.Engine,
    folders: DataFolders,
    *,
    tables: Iterable[str] | None = None,
    run_id: str | None = None,
    log: Logger = _default_log,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> list[FileOutcome]:
    """Apply every pending landing file (optionally only those of `tables`), in order."""
    folders.ensure()
    return [
        ingest_file(engine, folders, path, run_id=run_id, log=log, block_bytes=block_bytes)
        for path in pending_files(folders, tables)
    ]


def ingest_file(
    engine: sa.Engine,
    folders: DataFolders,
    path: Path,
    *,
    run_id: str | None = None,
    log: Logger = _default_log,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> FileOutcome:
    started = time.perf_counter()
    sha256 = file_sha256(path)
    outcome = FileOutcome(file=path.name, status="applied", table=None, sha256=sha256, size_bytes=path.stat().st_size)
    try:
        spec = table_for_file(path)
        outcome.table = spec.name
        _apply_file(engine, folders, path, spec, outcome, run_id=run_id, log=log, block_bytes=block_bytes)
    except UnreadableFileError as error:
        outcome.status, outcome.reason = "quarantined", str(error)
        _quarantine(engine, folders, path, outcome, run_id)
        log.warning(f"{path.name}: quarantined: {error}")
    else:
        _move_unique(path, folders.processed, sha256)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _apply_file(
    engine: sa.Engine,
    folders: DataFolders,
    path: Path,
    spec: TableSpec,
    outcome: FileOutcome,
    *,
    run_id: str | None,
    log: Logger,
    block_bytes: int,
) -> None:
    rejects = RejectFileWriter(folders.rejects, path, outcome.sha256)
    try:
        _apply_file_in_transaction(engine, path, spec, outcome, rejects, run_id=run_id, log=log, block_bytes=block_bytes)
    finally:
        rejects.discard_partial()
    if outcome.status == "applied":
        log.info(
            f"{path.name}: applied to {spec.name}: {outcome.counts.inserted:,} inserted, {outcome.counts.updated:,} updated, "
            f"{outcome.counts.unchanged:,} unchanged, {outcome.rows_rejected:,} rejected"
        )


def _apply_file_in_transaction(
    engine: sa.Engine,
    path: Path,
    spec: TableSpec,
    outcome: FileOutcome,
    rejects: RejectFileWriter,
    *,
    run_id: str | None,
    log: Logger,
    block_bytes: int,
) -> None:
    started_at = now_utc()
    clock = time.perf_counter()
    with write_transaction(engine) as conn:
        lock_table_for_writes(conn, spec)
        if _already_applied(conn, outcome.sha256):
            outcome.status = "skipped"
            log.info(f"{path.name}: already applied (sha256 {outcome.sha256[:12]}…), not applied again")
            return
        validator = RowValidator(spec, known_keys(conn, spec))
        upsert = StagedUpsert(conn, spec, expected_rows=estimated_rows(outcome.size_bytes))
        checked_blocks = ((block, validator.validate(block)) for block in read_record_blocks(path, spec, block_bytes))
        for block, checked in read_ahead(checked_blocks):
            upsert.add(checked.valid)
            record_rejects(
                conn, spec, checked.rejected, source=path.name, source_sha256=outcome.sha256, run_id=run_id, request_id=None, at=started_at
            )
            rejects.write(checked.rejected)
            outcome.rows_read += block.rows_read
            outcome.rows_rejected += len(checked.rejected)
            outcome.rejects_by_reason.update(reason_kind(r) for rr in checked.rejected for r in rr.reasons)
            elapsed = max(time.perf_counter() - clock, 1e-9)
            log.info(
                f"{path.name}: {outcome.rows_read:,} rows read, {outcome.rows_rejected:,} rejected, "
                f"{outcome.rows_read / elapsed:,.0f} rows/s"
            )
        outcome.counts = upsert.apply()
        outcome.reject_file = rejects.publish()
        conn.execute(
            ingestion_ledger.insert().values(
                table_name=spec.name,
                source=path.name,
                sha256=outcome.sha256,
                size_bytes=outcome.size_bytes,
                rows_read=outcome.rows_read,
                rows_inserted=outcome.counts.inserted,
                rows_updated=outcome.counts.updated,
                rows_unchanged=outcome.counts.unchanged,
                rows_rejected=outcome.rows_rejected,
                run_id=run_id,
                started_at=started_at,
                finished_at=now_utc(),
            )
        )


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Produce items in a background thread, at most `depth` ahead of the consumer.

    Parsing and validating the next block (Arrow and pandas release the GIL) then overlaps
    with loading this one (the database works while psycopg waits). Memory stays bounded by
    `depth` blocks. An exception in the producer is raised in the consumer.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put((item, None))
            slots.put((done, None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            slots.put((done, error))

    worker = threading.Thread(target=produce, name="gdx-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()


def lock_table_for_writes(conn: sa.Connection, spec: TableSpec, *, shared: bool = False) -> None:
    """Take a table's writer lock on PostgreSQL, until the transaction ends.

    Files and restores take it alone: their bulk paths drop and rebuild keys and indexes.
    API batches take it `shared` with each other: each is one upsert whose row locks
    PostgreSQL orders by key, so they can run side by side, but never beside a file or a
    restore. SQLite needs nothing: its writers already take turns (`write_transaction`).
    """
    if is_postgres(conn):
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        conn.exec_driver_sql(f"SELECT {function}({7420100 + list(TABLES).index(spec.name)})")


def _already_applied(conn: sa.Connection, sha256: str) -> bool:
    return conn.execute(sa.select(ingestion_ledger.c.id).where(ingestion_ledger.c.sha256 == sha256)).first() is not None


class RejectFileWriter:
    """Raw rejected lines of one file, ready to fix and drop back into landing (as pgloader does).

    `<stem>.<sha8>.rejects.csv` holds the lines exactly as they arrived, and
    `<stem>.<sha8>.rejects.log` the line numbers and reasons. Both are written under a hidden
    temporary name and renamed into place just before the database commit; a re-run after a
    crash rewrites the same names with the same content.
    """

    def __init__(self, folder: Path, source: Path, sha256: str):
        stem = f"{source.stem}.{sha256[:8]}.rejects"
        self.final_csv, self.final_log = folder / f"{stem}.csv", folder / f"{stem}.log"
        self.part_csv, self.part_log = folder / f".{stem}.csv.part", folder / f".{stem}.log.part"
        self._csv = self._log = None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[RejectedRow]) -> None:
        if not rows:
            return
        if self._csv is None:
            self._csv = self.part_csv.open("w", encoding="utf-8", newline="")
            self._log = self.part_log.open("w", encoding="utf-8", newline="")
        for row in rows:
            self._csv.write(row.raw + "\n")
            self._log.write(f"line {row.line}: {'; '.join(row.reasons)}\n")

    def publish(self) -> str | None:
        if self._csv is None:
            return None
        self._csv.close()
        self._log.close()
        os.replace(self.part_log, self.final_log)
        os.replace(self.part_csv, self.final_csv)
        return self.final_csv.name

    def discard_partial(self) -> None:
        for handle in (self._csv, self._log):
            if handle is not None and not handle.closed:
                handle.close()
        for part in (self.part_csv, self.part_log):
            part.unlink(missing_ok=True)


def _move_unique(path: Path, folder: Path, sha256: str) -> Path:
    """Move `path` into `folder`, keeping its name unless another file already has it."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists() and file_sha256(target) != sha256:
        target = folder / f"{path.stem}.{sha256[:8]}{path.suffix}"
    os.replace(path, target)
    return target


def _quarantine(engine: sa.Engine, folders: DataFolders, path: Path, outcome: FileOutcome, run_id: str | None) -> None:
    target = _move_unique(path, folders.quarantine, outcome.sha256)
    target.with_name(target.name + ".reason.txt").write_text(
        f"{outcome.reason}\n\nFix the file and drop it into landing/ again.\n", encoding="utf-8"
    )
    with write_transaction(engine) as conn:
        conn.execute(
            quarantined_files.insert().values(
                file_name=path.name,
                sha256=outcome.sha256,
                size_bytes=outcome.size_bytes,
                reason=outcome.reason,
                run_id=run_id,
                quarantined_at=now_utc(),
            )
        )
