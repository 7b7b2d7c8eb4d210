"""Applying landing files to the warehouse, one file per transaction.

A file's rows, its rejected rows and its ledger entry commit together; only then does the file
move to `processed/`. A run killed at any moment leaves each file applied or not at all, and
a re-run skips a file whose sha256 is already in the ledger, so it converges.

The sha256 in the ledger is of exactly the bytes applied: the file is hashed before and while
it is read, and a file that changed meanwhile (rewritten, truncated, appended to, replaced)
is rolled back and left in landing for the next run; the third change in a row quarantines
it. A file that cannot be read at all, or whose own problem (its name, its permissions) makes
a file operation fail, moves to `quarantine/` with a reason file; it never stops the others.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import uuid
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import sqlalchemy as sa

from gdx_pipeline.core.csv_source import (
    DEFAULT_BLOCK_BYTES,
    FileChangedError,
    FileSnapshot,
    LongLine,
    UnreadableFileError,
    file_sha256,
    read_record_blocks,
    table_for_file,
)
from gdx_pipeline.core.folders import DataFolders, derived_file_name
from gdx_pipeline.core.loading import LoadCounts, StagedUpsert, estimated_rows, known_keys, record_rejects
from gdx_pipeline.core.validation import RejectedRow, RowValidator
from gdx_pipeline.core.warehouse import files_changed_while_read, ingestion_ledger, is_postgres, quarantined_files, write_transaction
from gdx_pipeline.dictionary import TABLES, TableSpec


class Logger(Protocol):
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...


T = TypeVar("T")
_default_log = logging.getLogger("gdx_pipeline.ingestion")
# A file that changes while being read this many times in a row is being written to by
# something that does not rename finished files into place: it goes to quarantine.
CHANGED_READS_BEFORE_QUARANTINE = 3
# OSErrors that are the machine's, not one file's: they would fail every file alike, so they
# stop the run (the file stays in landing) instead of quarantining files one by one.
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM}


@dataclass
class FileOutcome:
    """What happened to one landing file."""

    file: str
    status: str  # "applied", "skipped" (already in the ledger), "changed" (while being read: left in landing) or "quarantined"
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
    """Apply one landing file; whatever goes wrong with this file alone, the others go on."""
    started = time.perf_counter()
    outcome = FileOutcome(file=path.name, status="applied", table=None, sha256="", size_bytes=0)
    applied = False
    try:
        snapshot = FileSnapshot.take(path)
        outcome.sha256, outcome.size_bytes = snapshot.sha256, snapshot.size
        spec = table_for_file(path)
        outcome.table = spec.name
        _apply_file(engine, folders, path, spec, outcome, snapshot, run_id=run_id, log=log, block_bytes=block_bytes)
        applied = True
        _move_after_commit(path, folders, snapshot, outcome, log)
    except FileChangedError as error:
        _leave_for_next_run(engine, folders, path, outcome, str(error), run_id, log)
    except UnreadableFileError as error:
        _quarantine(engine, folders, path, outcome, str(error), run_id, log)
    except OSError as error:
        if error.errno == errno.ENOENT and not path.exists():
            _leave_for_next_run(engine, folders, path, outcome, "it was removed or renamed while being read", run_id, log)
        elif _confined_to_file(error, path):
            done = f"applied to {outcome.table}, but then " if applied else ""
            _quarantine(engine, folders, path, outcome, f"{done}a file operation failed: {_describe_os_error(error)}", run_id, log)
        else:
            raise
    outcome.seconds = time.perf_counter() - started
    return outcome


def _confined_to_file(error: OSError, path: Path) -> bool:
    """Whether an OSError is this file's own problem (its name too long once derived, its
    permissions, a name taken by a folder) rather than the machine's (a full or read-only disk,
    no file handles left, or a folder of ours we may not write), which stops the run."""
    if error.errno in _MACHINE_ERRNOS:
        return False
    if error.errno in (errno.EACCES, errno.EPERM):
        return error.filename is not None and os.fspath(error.filename) == os.fspath(path)
    return True


def _describe_os_error(error: OSError) -> str:
    names = [Path(os.fspath(name)).name for name in (error.filename, error.filename2) if name is not None]
    return f"{error.strerror or error}" + (f" ({' -> '.join(names)})" if names else "")


def _move_after_commit(path: Path, folders: DataFolders, snapshot: FileSnapshot, outcome: FileOutcome, log: Logger) -> None:
    """Move an applied (or already applied) file to processed/, unless it changed since it was
    read: then its new content stays in landing, for the next run to apply."""
    try:
        snapshot.raise_if_changed(path)
    except FileChangedError as error:
        outcome.reason = f"{error} after it was read and applied: the new content is left in landing for the next run"
        log.warning(f"{path.name}: {outcome.reason}")
        return
    _move_unique(path, folders.processed, snapshot.sha256)


def _leave_for_next_run(engine: sa.Engine, folders: DataFolders, path: Path, outcome: FileOutcome, detail: str, run_id: str | None, log: Logger) -> None:
    """Nothing of a file that changed while being read was applied: leave it for the next run
    (the sensor starts one once the file has settled), or quarantine it after repeated changes."""
    outcome.status = "changed"
    if not path.exists():
        outcome.reason = f"{detail}; nothing of it was applied"
        log.warning(f"{path.name}: {outcome.reason}")
        return
    with write_transaction(engine) as conn:
        conn.execute(
            files_changed_while_read.insert().values(
                file_name=path.name, sha256=outcome.sha256, size_bytes=outcome.size_bytes, detail=detail, run_id=run_id, seen_at=now_utc()
            )
        )
        times = conn.execute(
            sa.select(sa.func.count()).select_from(files_changed_while_read).where(files_changed_while_read.c.file_name == path.name)
        ).scalar_one()
    if times >= CHANGED_READS_BEFORE_QUARANTINE:
        reason = (
            f"changed while being read, {times} times in a row (last: {detail}): something is still writing it. "
            "Write files under a hidden name (.name) and rename them into landing/ when complete"
        )
        _quarantine(engine, folders, path, outcome, reason, run_id, log)
        return
    outcome.reason = f"{detail}: nothing of it was applied; it is left in landing for the next run"
    log.warning(f"{path.name}: {outcome.reason}")


def _forget_changes(conn: sa.Connection, file_name: str) -> None:
    conn.execute(files_changed_while_read.delete().where(files_changed_while_read.c.file_name == file_name))


def _apply_file(
    engine: sa.Engine,
    folders: DataFolders,
    path: Path,
    spec: TableSpec,
    outcome: FileOutcome,
    snapshot: FileSnapshot,
    *,
    run_id: str | None,
    log: Logger,
    block_bytes: int,
) -> None:
    rejects = RejectFileWriter(folders.rejects, path, outcome.sha256)
    try:
        _apply_file_in_transaction(engine, path, spec, outcome, snapshot, rejects, run_id=run_id, log=log, block_bytes=block_bytes)
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
    snapshot: FileSnapshot,
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
            _forget_changes(conn, path.name)
            log.info(f"{path.name}: already applied (sha256 {outcome.sha256[:12]}…), not applied again")
            return
        validator = RowValidator(spec, known_keys(conn, spec))
        upsert = StagedUpsert(conn, spec, expected_rows=estimated_rows(outcome.size_bytes))
        blocks = read_record_blocks(path, spec, block_bytes, snapshot=snapshot)
        checked_blocks = ((block, validator.validate(block)) for block in blocks)
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
        snapshot.raise_if_changed(path)  # reading proved the bytes; this covers the reject file's copies of long lines
        outcome.reject_file = rejects.publish()
        _forget_changes(conn, path.name)
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

    `<stem>.<sha8>.rejects.csv` holds the lines exactly as they arrived, every one whole (a line
    too long to hold is copied from the source file), and `<stem>.<sha8>.rejects.log` the line
    numbers and reasons; a stem too long for a file name is shortened (`derived_file_name`).
    Both are written under a hidden temporary name and renamed into place just before the
    database commit; a re-run after a crash rewrites the same names with the same content.
    """

    def __init__(self, folder: Path, source: Path, sha256: str):
        csv_name = derived_file_name(source.stem, f".{sha256[:8]}.rejects.csv", reserve=len(".") + len(".part"))
        self.final_csv = folder / csv_name
        self.final_log = self.final_csv.with_suffix(".log")
        self.part_csv, self.part_log = folder / f".{self.final_csv.name}.part", folder / f".{self.final_log.name}.part"
        self.source = source
        self._csv = self._log = None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[RejectedRow]) -> None:
        if not rows:
            return
        if self._csv is None:
            self._csv = self.part_csv.open("wb")
            self._log = self.part_log.open("w", encoding="utf-8", newline="")
        for row in rows:
            if row.long_line is None:
                self._csv.write(row.raw.encode("utf-8"))
            else:
                self._copy_from_source(row.long_line)
            self._csv.write(b"\n")
            self._log.write(f"line {row.line}: {'; '.join(row.reasons)}\n")

    def _copy_from_source(self, line: LongLine) -> None:
        """Stream a line too long to hold from the source file, a MiB at a time."""
        with self.source.open("rb") as source:
            source.seek(line.start)
            left = line.end - line.start
            while left:
                chunk = source.read(min(left, 1024 * 1024))
                if not chunk:
                    raise FileChangedError("it got shorter while being read")
                self._csv.write(chunk)
                left -= len(chunk)

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
    if target.exists() and (not sha256 or file_sha256(target) != sha256):
        tag = sha256[:8] if sha256 else uuid.uuid4().hex[:8]
        target = folder / derived_file_name(path.stem, f".{tag}{path.suffix}", reserve=len(".reason.txt"))
    os.replace(path, target)
    return target


def _quarantine(engine: sa.Engine, folders: DataFolders, path: Path, outcome: FileOutcome, reason: str, run_id: str | None, log: Logger) -> None:
    outcome.status, outcome.reason = "quarantined", reason
    target = _move_unique(path, folders.quarantine, outcome.sha256)
    target.with_name(derived_file_name(target.name, ".reason.txt")).write_text(
        f"{reason}\n\nFix the file and drop it into landing/ again.\n", encoding="utf-8"
    )
    with write_transaction(engine) as conn:
        conn.execute(
            quarantined_files.insert().values(
                file_name=path.name,
                sha256=outcome.sha256,
                size_bytes=outcome.size_bytes,
                reason=reason,
                run_id=run_id,
                quarantined_at=now_utc(),
            )
        )
        _forget_changes(conn, path.name)
    log.warning(f"{path.name}: quarantined: {reason}")
