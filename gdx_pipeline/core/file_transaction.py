"""One landing file applied in one transaction: its valid rows upserted, its rejected rows
logged (in the table and a reject file), its ledger entry written, all committed together or
not at all. A file whose sha256 the ledger already holds is skipped.

The next blocks are read, parsed and checked in background threads while this one loads
(`ordered_threads.map_in_order`): Arrow, numpy and the database driver release the GIL, so the
cores parse while the database writes. What depends on earlier blocks and on the referenced ids
read at the start (foreign keys, duplicates of earlier ids) is settled in one more thread, block
by block in order, which also makes the rows and the rejected rows ready for the wire
(`StagedUpsert.prepare`, `reject_log.prepare_rejects`), counts the rows for the hires rollup and
writes the reject file: on PostgreSQL the transaction's own thread then only sends COPYs.
While they run, a thread running Python hands the GIL on sooner (`short_gil_turns`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import sqlalchemy as sa

from gdx_pipeline.core import staged_writes
from gdx_pipeline.core.csv_source import FileSnapshot, RecordBlock, parse_piece, read_record_pieces
from gdx_pipeline.core.file_outcome import FileOutcome
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.known_keys import known_keys
from gdx_pipeline.core.landing_moves import forget_changes
from gdx_pipeline.core.ledger import already_applied, record_ledger_entry
from gdx_pipeline.core.locks import lock_table_for_writes
from gdx_pipeline.core.logger import Logger
from gdx_pipeline.core.ordered_threads import map_in_order, read_ahead, short_gil_turns
from gdx_pipeline.core.reject_files import RejectFileWriter
from gdx_pipeline.core.reject_log import PreparedRejects, prepare_rejects, write_rejects
from gdx_pipeline.core.rule_failures import reason_kind
from gdx_pipeline.core.staged_writes import StagedUpsert
from gdx_pipeline.core.utc import now_utc
from gdx_pipeline.core.validation import RowValidator, ValidatedBlock, check_rows
from gdx_pipeline.core.warehouse import is_postgres, write_transaction
from gdx_pipeline.dictionary import TableSpec

__all__ = ["apply_file", "estimated_rows", "read_ahead"]  # read_ahead: older imports name it here
# Globant rows are about 45 bytes; a smaller guess per row would overstate a file's rows.
ESTIMATE_BYTES_PER_ROW = 64


def estimated_rows(size_bytes: int) -> int:
    """A cautious row estimate from a file's size (it decides whether a first load goes in bulk)."""
    return size_bytes // ESTIMATE_BYTES_PER_ROW


def apply_file(
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
    """Apply the file's rows to `spec`'s table, filling in `outcome`; raises (and rolls back) on
    anything that stops the file, including a change to it while it is read."""
    rejects = RejectFileWriter(folders.rejects, path, outcome.sha256)
    try:
        _apply_in_transaction(engine, path, spec, outcome, snapshot, rejects, run_id=run_id, log=log, block_bytes=block_bytes)
    finally:
        rejects.discard_partial()
    if outcome.status == "applied":
        log.info(
            f"{path.name}: applied to {spec.name}: {outcome.counts.inserted:,} inserted, {outcome.counts.updated:,} updated, "
            f"{outcome.counts.unchanged:,} unchanged, {outcome.rows_rejected:,} rejected"
        )


def _apply_in_transaction(
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
    # A big file's foreign keys are checked once, for the whole table, before the commit (SQLite).
    big = estimated_rows(outcome.size_bytes) >= staged_writes.BULK_ROWS and bool(spec.foreign_keys)
    with write_transaction(engine, foreign_keys_of=spec.name if big else None) as conn:
        lock_table_for_writes(conn, spec)
        if already_applied(conn, outcome.sha256):
            outcome.status = "skipped"
            forget_changes(conn, path.name)
            log.info(f"{path.name}: already applied (sha256 {outcome.sha256[:12]}…), not applied again")
            return
        validator = RowValidator(spec, known_keys(conn, spec))
        upsert = StagedUpsert(conn, spec, expected_rows=estimated_rows(outcome.size_bytes))
        pieces = read_record_pieces(path, block_bytes, snapshot=snapshot)
        checked_blocks = map_in_order(lambda piece: check_rows(spec, parse_piece(piece, spec)), pieces)

        postgres = is_postgres(conn)

        def settled() -> Iterator[tuple[RecordBlock, ValidatedBlock, object, PreparedRejects, Counter]]:
            """In order: settled, made ready for the wire (rows and rejected rows), rejected lines
            written to the reject file, reasons tallied."""
            for rows in checked_blocks:
                checked = validator.settle(rows)
                prepared_rejects = prepare_rejects(
                    conn.dialect,
                    spec,
                    checked.rejected,
                    source=path.name,
                    source_sha256=outcome.sha256,
                    run_id=run_id,
                    request_id=None,
                    at=started_at,
                    encode=postgres,
                )
                rejects.write(checked.rejected)
                kinds = Counter(reason_kind(r) for rejected in checked.rejected for r in rejected.reasons)
                yield rows.block, checked, upsert.prepare(checked.valid), prepared_rejects, kinds

        # PostgreSQL: settled one block ahead, in a thread of its own, so this one only sends
        # COPYs while the server writes. SQLite: in this thread, between writes. Its writes are
        # this process's own work and give up the GIL at every row: beside a thread running
        # Python they would wait for it row after row.
        ahead = read_ahead(settled(), depth=1) if postgres else settled()
        with short_gil_turns(), closing(checked_blocks), closing(ahead) as blocks:
            for block, checked, prepared, prepared_rejects, kinds in blocks:
                upsert.add(prepared)
                write_rejects(conn, prepared_rejects)
                outcome.rows_read += block.rows_read
                outcome.rows_rejected += len(checked.rejected)
                outcome.rejects_by_reason.update(kinds)
                elapsed = max(time.perf_counter() - clock, 1e-9)
                log.info(
                    f"{path.name}: {outcome.rows_read:,} rows read, {outcome.rows_rejected:,} rejected, "
                    f"{outcome.rows_read / elapsed:,.0f} rows/s"
                )
        outcome.counts = upsert.apply()
        snapshot.raise_if_changed(path)  # reading proved the bytes; this covers the reject file's copies of long lines
        outcome.reject_file = rejects.publish()
        forget_changes(conn, path.name)
        record_ledger_entry(
            conn,
            table=spec.name,
            source=path.name,
            sha256=outcome.sha256,
            size_bytes=outcome.size_bytes,
            rows_read=outcome.rows_read,
            counts=outcome.counts,
            rows_rejected=outcome.rows_rejected,
            run_id=run_id,
            started_at=started_at,
        )
