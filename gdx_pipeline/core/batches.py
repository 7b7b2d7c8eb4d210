"""Rows that arrive whole rather than as a landing file (API requests): the same dictionary,
validation, upsert and reject log as files, in one transaction per batch."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from gdx_pipeline.core.csv_source import RecordBlock, read_text_records
from gdx_pipeline.core.known_keys import known_keys
from gdx_pipeline.core.ledger import record_ledger_entry
from gdx_pipeline.core.locks import lock_table_for_writes
from gdx_pipeline.core.reject_log import record_rejects
from gdx_pipeline.core.staged_writes import ConcurrentInsert, LoadCounts, StagedUpsert
from gdx_pipeline.core.utc import now_utc
from gdx_pipeline.core.validation import CheckedRows, RejectedRow, RowValidator, check_rows
from gdx_pipeline.core.warehouse import write_transaction
from gdx_pipeline.dictionary import TableSpec, excerpt

API_SOURCE = "api"
MAX_LISTED_FIELDS = 5
WRITE_ATTEMPTS = 3
# PostgreSQL: deadlock_detected, serialization_failure, foreign_key_violation.
RETRYABLE_SQLSTATES = {"40P01", "40001", "23503"}

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    counts: LoadCounts
    rejected: list[RejectedRow]  # `line` is the 1-based position of the row in the batch
    rows_read: int


@dataclass
class MappingBlock(RecordBlock):
    """Records from JSON objects, plus the values whose JSON type their column refuses (blank in
    `fields`): column -> row -> reason, judged with the row's other rules by `check_rows`."""

    refused: dict[str, dict[int, str]] = field(default_factory=dict)


# A column takes the JSON type its published schema names, and only that: a string for text
# and datetimes, an integer for ids. As in JSON Schema, 7.0 and 1e3 are integers; "7" is not.
_EXPECTED = {"integer": "an integer", "text": "a string", "timestamp": "a string"}


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _cell_text(value: object, kind: str) -> str | None:
    """A JSON value as the text a CSV field would hold, or None when its type is wrong for `kind`."""
    if value is None:
        return ""
    if kind != "integer":
        return value if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def wrong_type_reason(value: object, kind: str) -> str:
    """`expected a string (got array ["Sales"])`: the JSON type sent and an excerpt of it."""
    if isinstance(value, str):
        shown = excerpt(value)
    else:
        shown = excerpt(json.dumps(value, allow_nan=True), quoted=False)  # ASCII: invisible characters escaped
    return f"expected {_EXPECTED[kind]} (got {_json_type(value)} {shown})"


class _RawJson(dict):
    """Position -> the row as JSON text, made only for the rows that end up rejected."""

    def __init__(self, rows: Sequence[object]):
        super().__init__()
        self._rows = rows

    def __getitem__(self, position: int) -> str:
        return json.dumps(self._rows[position - 1], ensure_ascii=False, default=str)


def block_from_mappings(spec: TableSpec, rows: Sequence[Mapping[str, object]]) -> MappingBlock:
    """JSON objects as records: missing keys are blank fields; unknown keys reject the row; a
    value of the wrong JSON type is refused (`MappingBlock.refused`)."""
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
            malformed.append((position, raw[position], _unknown_fields_reason(sorted(set(row) - known), columns)))
        else:
            kept.append(row)
            lines.append(position)
    fields, refused = {}, {}
    for column in columns:
        fields[column], wrong = _text_column([row.get(column) for row in kept], spec.column_kind(column))
        if wrong:
            refused[column] = wrong
    return MappingBlock(
        fields=pa.table(fields),
        lines=np.array(lines, dtype=np.int64),
        malformed=malformed,
        raw_lines=raw,
        rows_read=len(rows),
        refused=refused,
    )


def _unknown_fields_reason(unknown: list[str], columns: list[str]) -> str:
    listed = ", ".join(excerpt(name) for name in unknown[:MAX_LISTED_FIELDS])
    more = f" and {len(unknown) - MAX_LISTED_FIELDS:,} more" if len(unknown) > MAX_LISTED_FIELDS else ""
    return f"row: unknown field(s) {listed}{more}; expected {', '.join(columns)}"


def _text_column(values: list[object], kind: str) -> tuple[pa.Array, dict[int, str]]:
    """JSON values as the text a CSV field would hold, and the reasons for values of the wrong
    type (their fields left blank). A column of only strings, or only integers for an integer
    column, converts in one Arrow call; anything else value by value."""
    try:
        column = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        column = None
    if column is not None and (
        pa.types.is_null(column.type) or (pa.types.is_int64(column.type) if kind == "integer" else pa.types.is_string(column.type))
    ):
        return column.cast(pa.string()).fill_null(""), {}  # null or missing: a blank field
    texts, wrong = [], {}
    for row, value in enumerate(values):
        text = _cell_text(value, kind)
        if text is None:
            wrong[row] = wrong_type_reason(value, kind)
        texts.append(text or "")
    return pa.array(texts, type=pa.string()), wrong


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
    return write_checked_batch(engine, spec, check_block(spec, block), request_id=request_id, run_id=run_id, source=source)


def check_block(spec: TableSpec, block: RecordBlock) -> CheckedRows:
    """`check_rows`, with the values a JSON reader already refused for their type."""
    return check_rows(spec, block, block.refused if isinstance(block, MappingBlock) else None)


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
        except (sa.exc.DBAPIError, ConcurrentInsert) as error:
            if attempt == WRITE_ATTEMPTS or not is_retryable_conflict(error):
                raise
            cause = type(getattr(error, "orig", error)).__name__
            log.warning(f"{spec.name} batch {request_id or run_id}: {cause} on attempt {attempt}, trying again")
    raise AssertionError("unreachable")


def is_retryable_conflict(error: sa.exc.DBAPIError | ConcurrentInsert) -> bool:
    """A deadlock, a serialization failure, a foreign key broken by a concurrent delete, or new
    ids inserted by a concurrent batch (`ConcurrentInsert`)."""
    if isinstance(error, ConcurrentInsert):
        return True
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
        validated = RowValidator(spec, known_keys(conn, spec, among=checked.typed), source_kind="request").settle(checked)
        upsert = StagedUpsert(conn, spec)
        upsert.add(validated.valid)
        counts = upsert.apply()
        record_rejects(
            conn, spec, validated.rejected, source=source, source_sha256=None, run_id=run_id, request_id=request_id, at=started_at
        )
        record_ledger_entry(
            conn,
            table=spec.name,
            source=source,
            rows_read=block.rows_read,
            counts=counts,
            rows_rejected=len(validated.rejected),
            run_id=run_id or request_id,
            started_at=started_at,
        )
    return BatchOutcome(counts=counts, rejected=validated.rejected, rows_read=block.rows_read)
