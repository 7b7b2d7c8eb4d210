"""The rejected-row log (`rejected_rows`): every row that did not land in its table, with why,
appended in the same transaction as the rows that did land."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from gdx_pipeline.core.csv_source import RAW_LINE_KEEP_CHARS
from gdx_pipeline.core.validation import RejectedRow
from gdx_pipeline.core.warehouse import is_postgres, rejected_rows
from gdx_pipeline.dictionary import TableSpec

_COLUMNS = ["table_name", "source", "source_sha256", "line_number", "raw_line", "reasons", "run_id", "request_id", "rejected_at"]


def record_rejects(
    conn: sa.Connection,
    spec: TableSpec,
    rows: Sequence[RejectedRow],
    *,
    source: str,
    source_sha256: str | None,
    run_id: str | None,
    request_id: str | None,
    at: datetime,
) -> None:
    """Append rejected rows to the reject log (COPY on PostgreSQL)."""
    if not rows:
        return
    values = [(spec.name, source, source_sha256, r.line, stored_raw_line(r), r.reasons, run_id, request_id, at) for r in rows]
    if is_postgres(conn):
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY rejected_rows ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for *head, reasons, run, request, when in values:
                copy.write_row((*head, json.dumps(reasons, ensure_ascii=False), run, request, when))
    else:
        conn.execute(rejected_rows.insert(), [dict(zip(_COLUMNS, row)) for row in values])


def stored_raw_line(row: RejectedRow) -> str:
    """The raw line as the reject table keeps it: whole up to RAW_LINE_KEEP_CHARS characters;
    a longer one is cut there and ends with a marker giving its length. A file's reject file
    keeps every line whole, so the table stays small and a 50 MB line costs no 50 MB row."""
    chars = row.long_line.chars if row.long_line is not None else len(row.raw)
    if chars <= RAW_LINE_KEEP_CHARS:
        return row.raw
    return f"{row.raw[:RAW_LINE_KEEP_CHARS]}…[line cut here: {chars:,} characters in all]"
