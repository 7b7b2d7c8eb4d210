"""Where a landing file goes once its transaction is over, and why.

Applied (or already applied): to `processed/`, unless it changed after it was read. Changed
while being read: nothing of it was applied, so it stays in landing for the next run (the
sensor starts one once it has settled), until the third change in a row sends it to
quarantine. Unreadable, or failing on a problem of its own: to `quarantine/`, with a
`.reason.txt` beside it and a row in `quarantined_files`. A name already taken in the target
folder by other content gets a short tag, so no file is ever overwritten.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import sqlalchemy as sa

from gdx_pipeline.core.csv_source import FileChangedError, FileSnapshot, file_sha256
from gdx_pipeline.core.file_outcome import FileOutcome
from gdx_pipeline.core.folders import DataFolders, derived_file_name
from gdx_pipeline.core.logger import Logger
from gdx_pipeline.core.utc import now_utc
from gdx_pipeline.core.warehouse import files_changed_while_read, quarantined_files, write_transaction

# A file that changes while being read this many times in a row is being written to by
# something that does not rename finished files into place: it goes to quarantine.
CHANGED_READS_BEFORE_QUARANTINE = 3


def move_after_commit(path: Path, folders: DataFolders, snapshot: FileSnapshot, outcome: FileOutcome, log: Logger) -> None:
    """Move an applied (or already applied) file to processed/, unless it changed since it was
    read: then its new content stays in landing, for the next run to apply."""
    try:
        snapshot.raise_if_changed(path)
    except FileChangedError as error:
        outcome.reason = f"{error} after it was read and applied: the new content is left in landing for the next run"
        log.warning(f"{path.name}: {outcome.reason}")
        return
    move_unique(path, folders.processed, snapshot.sha256)


def leave_for_next_run(
    engine: sa.Engine, folders: DataFolders, path: Path, outcome: FileOutcome, detail: str, run_id: str | None, log: Logger
) -> None:
    """Nothing of a file that changed while being read was applied: leave it for the next run,
    or quarantine it after repeated changes."""
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
        quarantine(engine, folders, path, outcome, reason, run_id, log)
        return
    outcome.reason = f"{detail}: nothing of it was applied; it is left in landing for the next run"
    log.warning(f"{path.name}: {outcome.reason}")


def forget_changes(conn: sa.Connection, file_name: str) -> None:
    """The file was applied, skipped or quarantined: its changes in a row start again from zero."""
    conn.execute(files_changed_while_read.delete().where(files_changed_while_read.c.file_name == file_name))


def quarantine(
    engine: sa.Engine, folders: DataFolders, path: Path, outcome: FileOutcome, reason: str, run_id: str | None, log: Logger
) -> None:
    outcome.status, outcome.reason = "quarantined", reason
    target = move_unique(path, folders.quarantine, outcome.sha256)
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
        forget_changes(conn, path.name)
    log.warning(f"{path.name}: quarantined: {reason}")


def move_unique(path: Path, folder: Path, sha256: str) -> Path:
    """Move `path` into `folder`, keeping its name unless another file already has it."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists() and (not sha256 or file_sha256(target) != sha256):
        tag = sha256[:8] if sha256 else uuid.uuid4().hex[:8]
        target = folder / derived_file_name(path.stem, f".{tag}{path.suffix}", reserve=len(".reason.txt"))
    os.replace(path, target)
    return target
