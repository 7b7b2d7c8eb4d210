"""Rows that arrive whole rather than as a landing file (API requests): the same dictionary,
validation, upsert and reject log as files, in one transaction per batch."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from gdx_pipeline.core.csv_source import RecordBlock, read_text_records, string_table
from gdx_pipeline.core.ingestion import lock_table_for_writes, now_utc
from gdx_pipeline.core.loading import LoadCounts, StagedUpsert, known_keys, record_rejects
from gdx_pipeline.core.validation import RejectedRow, RowValidator
from gdx_pipeline.core.warehouse import ingestion_ledger
from gdx_pipeline.dictionary import TableSpec

API_SOURCE = "api"


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
    kept: list[list[str]] = []
    lines: list[int] = []
    malformed: list[tuple[int, str, str]] = []
    for position, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            malformed.append((position, raw[position], "row: expected a JSON object"))
            continue
        if not known.issuperset(row):
            unknown = sorted(set(row) - known)
            malformed.append((position, raw[position], f"row: unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(columns)}"))
            continue
        kept.append([_field_text(row.get(column)) for column in columns])
        lines.append(position)
    return RecordBlock(
        fields=string_table(columns, kept),
        lines=np.array(lines, dtype=np.int64),
        malformed=malformed,
        raw_lines=raw,
        rows_read=len(rows),
    )


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
    started_at = now_utc()
    with engine.begin() as conn:
        lock_table_for_writes(conn, spec)
        checked = RowValidator(spec, known_keys(conn, spec)).validate(block)
        upsert = StagedUpsert(conn, spec)
        upsert.add(checked.valid)
        counts = upsert.apply()
        record_rejects(conn, spec, checked.rejected, source=source, source_sha256=None, run_id=run_id, request_id=request_id, at=started_at)
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
                rows_rejected=len(checked.rejected),
                run_id=run_id or request_id,
                started_at=started_at,
                finished_at=now_utc(),
            )
        )
    return BatchOutcome(counts=counts, rejected=checked.rejected, rows_read=block.rows_read)
