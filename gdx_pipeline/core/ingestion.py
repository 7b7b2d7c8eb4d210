"""Applying landing files to the warehouse, one file per transaction.

A file's rows, its rejected rows and its ledger entry commit together; only then does the file
move to `processed/`. A run killed at any moment leaves each file applied or not at all, and
a re-run skips a file whose sha256 is already in the ledger, so it converges.

The sha256 in the ledger is of exactly the bytes applied: the file is hashed before and while
it is read, and a file that changed meanwhile (rewritten, truncated, appended to, replaced)
is rolled back and left in landing for the next run; the third change in a row quarantines
it. A file that cannot be read at all, or whose own problem (its name, its permissions) makes
a file operation fail, moves to `quarantine/` with a reason file; it never stops the others.

The steps live one idea per module: `file_transaction` (one file, one transaction),
`landing_moves` (processed/, quarantine/, or left for the next run), `reject_files` (the raw
rejected lines), `staged_writes` (the rows), `reject_log` and `ledger` (what is recorded).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

from gdx_pipeline.core.csv_source import DEFAULT_BLOCK_BYTES, FileChangedError, FileSnapshot, UnreadableFileError, table_for_file
from gdx_pipeline.core.file_outcome import FileOutcome
from gdx_pipeline.core.file_transaction import apply_file, read_ahead
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.landing_moves import CHANGED_READS_BEFORE_QUARANTINE, leave_for_next_run, move_after_commit, quarantine
from gdx_pipeline.core.locks import lock_table_for_writes
from gdx_pipeline.core.logger import Logger
from gdx_pipeline.core.reject_files import RejectFileWriter
from gdx_pipeline.core.rule_failures import reason_kind
from gdx_pipeline.core.utc import now_utc
from gdx_pipeline.dictionary import TABLES

# Older imports name these here; each lives in the module of its one idea.
__all__ = [
    "CHANGED_READS_BEFORE_QUARANTINE",
    "FileOutcome",
    "Logger",
    "RejectFileWriter",
    "ingest_file",
    "ingest_landing",
    "lock_table_for_writes",
    "now_utc",
    "pending_files",
    "read_ahead",
    "reason_kind",
]

_default_log = logging.getLogger("gdx_pipeline.ingestion")
# OSErrors that are the machine's, not one file's: they would fail every file alike, so they
# stop the run (the file stays in landing) instead of quarantining files one by one.
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM}


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
        apply_file(engine, folders, path, spec, outcome, snapshot, run_id=run_id, log=log, block_bytes=block_bytes)
        applied = True
        move_after_commit(path, folders, snapshot, outcome, log)
    except FileChangedError as error:
        leave_for_next_run(engine, folders, path, outcome, str(error), run_id, log)
    except UnreadableFileError as error:
        quarantine(engine, folders, path, outcome, str(error), run_id, log)
    except OSError as error:
        if error.errno == errno.ENOENT and not path.exists():
            leave_for_next_run(engine, folders, path, outcome, "it was removed or renamed while being read", run_id, log)
        elif _confined_to_file(error, path):
            done = f"applied to {outcome.table}, but then " if applied else ""
            quarantine(engine, folders, path, outcome, f"{done}a file operation failed: {_describe_os_error(error)}", run_id, log)
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
