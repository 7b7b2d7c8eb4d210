"""Rows that arrive whole rather than as a landing file (API requests): the same dictionary,
validation, upsert and reject log as files, in one transaction per batch."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from gdx_pipeline.core.csv_source import RecordBlock, read_text_records
from gdx_pipeline.core.ingestion import lock_table_for_writes, now_utc
from gdx_pipeline.core.loading import LoadCounts, StagedUpsert, known_keys, record_rejects
from gdx_pipeline.core.validation import CheckedRows, RejectedRow, RowValidator, check_rows
from gdx_pipeline.core.warehouse import ingestion_ledger, write_transaction
from gdx_pipeline.dictionary import TableSpec

API_SOURCE = "api"
WRITE_ATTEMPTS = 3
# PostgreSQL: deadlock_detected, serialization_failure, foreign_key_violation.
RETRYABLE_SQLSTATES = {"40P01", "40001", "23503"}

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    counts: LoadCounts
    rejected: list[RejectedRow]  # `line` is the 1-based position of the row in the batch
    rows_read: int


def _field_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # bool is an int in Python; "True" is then rejected as not an integer
        return str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


class _RawJson(dict):
    """Position -> the row as JSON text, made only for the rows that end up rejected."""

    def __init__(self, rows: Sequence[object]):
        super().__init__()
        self._rows = rows

    def __getitem__(self, position: int) -> str:
        return json.dumps(self._rows[position - 1], ensure_ascii=False, default=str)


def block_from_mappings(spec: TableSpec, rows: Sequence[Mapping[str, object]]) -> RecordBlock:
    """JSON objects as records: missing keys are blank fields; unknown keys reject the row."""
    columns = spec.columns
    known = set(columns)
    raw = _RawJson(rows)
    kept: list[Mapping[str, object]] = []
    lines: list[int] = []
    malformed: list[tuple[int, str, str]] = []
    for position, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            malformed.append((position, raw[position], "row: expected a JSON object"))
        elif not known.issuperset(row):
            unknown = sorted(set(row) - known)
            malformed.append((position, raw[position], f"row: unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(columns)}"))
        else:
            kept.append(row)
            lines.append(position)
    return RecordBlock(
        fields=pa.table({column: _text_column([row.get(column) for row in kept]) for column in columns}),
        lines=np.array(lines, dtype=np.int64),
        malformed=malformed,
        raw_lines=raw,
        rows_read=len(rows),
    )


def _text_column(values: list[object]) -> pa.Array:
    """JSON values as the text a CSV field would hold: a column of only strings or only
    integers converts in one Arrow call; anything else (mixed, bool, float, nested) value by value."""
    try:
        column = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        column = None
    if column is not None and (pa.types.is_string(column.type) or pa.types.is_int64(column.type)):
        return column.cast(pa.string()).fill_null("")  # null or missing: a blank field
    return pa.array([_field_text(value) for value in values], type=pa.string())


def block_from_csv_text(spec: TableSpec, text: str) -> RecordBlock:
    """Headerless CSV lines, as a landing file would hold them."""
    return read_text_records(text, spec)


def apply_batch(
    engine: sa.Engine,
    spec: TableSpec,
    block: RecordBlock,
    *,
    request_id: str | None,
    run_id: str | None = None,
    source: str = API_SOURCE,
) -> BatchOutcome:
    """Validate, upsert the valid rows and log the rejects: all of it commits, or none."""
    return write_checked_batch(engine, spec, check_rows(spec, block), request_id=request_id, run_id=run_id, source=source)


def write_checked_batch(
    engine: sa.Engine,
    spec: TableSpec,
    checked: CheckedRows,
    *,
    request_id: str | None,
    run_id: str | None = None,
    source: str = API_SOURCE,
) -> BatchOutcome:
    """Write a batch whose row rules were checked (`check_rows`, before any transaction).

    Concurrent batches thus hold the table only for foreign keys and writes. On PostgreSQL a
    batch that loses a deadlock, or meets a referenced row deleted under it, is tried again
    from its transaction.
    """
    started_at = now_utc()
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return _write_batch(engine, spec, checked, request_id=request_id, run_id=run_id, source=source, started_at=started_at)
        except sa.exc.DBAPIError as error:
            if attempt == WRITE_ATTEMPTS or not is_retryable_conflict(error):
                raise
            log.warning(f"{spec.name} batch {request_id or run_id}: {type(error.orig).__name__} on attempt {attempt}, trying again")
    raise AssertionError("unreachable")


def is_retryable_conflict(error: sa.exc.DBAPIError) -> bool:
    """A deadlock, a serialization failure, or a foreign key broken by a concurrent delete."""
    return getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def _write_batch(
    engine: sa.Engine,
    spec: TableSpec,
    checked: CheckedRows,
    *,
    request_id: str | None,
    run_id: str | None,
    source: str,
    started_at: datetime,
) -> BatchOutcome:
    block = checked.block
    with write_transaction(engine) as conn:
        lock_table_for_writes(conn, spec, shared=True)
        validated = RowValidator(spec, known_keys(conn, spec, among=checked.typed)).settle(checked)
        upsert = StagedUpsert(conn, spec)
        upsert.add(validated.valid)
        counts = upsert.apply()
        record_rejects(conn, spec, validated.rejected, source=source, source_sha256=None, run_id=run_id, request_id=request_id, at=started_at)
        conn.execute(
            ingestion_ledger.insert().values(
                table_name=spec.name,
                source=source,
                sha256=None,
                size_bytes=None,
                rows_read=block.rows_read,
                rows_inserted=counts.inserted,
                rows_updated=counts.updated,
                rows_unchanged=counts.unchanged,
                rows_rejected=len(validated.rejected),
                run_id=run_id or request_id,
                started_at=started_at,
                finished_at=now_utc(),
            )
        )
    return BatchOutcome(counts=counts, rejected=validated.rejected, rows_read=block.rows_read)
