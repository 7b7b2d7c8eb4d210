"""The rejected-row log (`rejected_rows`): every row that did not land in its table, with why,
appended in the same transaction as the rows that did land."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring

import pyarrow as pa
import sqlalchemy as sa

from gdx_pipeline.core.csv_source import RAW_LINE_KEEP_CHARS
from gdx_pipeline.core.postgres_copy import binary_payload, copy_payload, copy_rows
from gdx_pipeline.core.validation import RejectedRow
from gdx_pipeline.core.warehouse import rejected_rows
from gdx_pipeline.dictionary import TableSpec

_COLUMNS = ["table_name", "source", "source_sha256", "line_number", "raw_line", "reasons", "run_id", "request_id", "rejected_at"]


def reasons_json(reasons: Sequence[str]) -> str:
    """A list of reasons as JSON text, as `json.dumps(reasons, ensure_ascii=False)` writes it:
    each string quoted by the json module's own C quoting, without an encoder's per-call set-up
    (paid once per rejected row: a dirty file has hundreds of thousands)."""
    return "[" + ", ".join(map(encode_basestring, reasons)) + "]"


@dataclass
class PreparedRejects:
    """Rejected rows made ready for the reject log without a connection (any thread may make them)."""

    rows: pa.Table | None = None  # PostgreSQL: the log's columns, for COPY
    copy_payload: bytes | None = None  # PostgreSQL: those rows as one binary COPY, when made ahead
    parameters: list[tuple] | None = None  # SQLite: `executemany` parameters


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
    """Append rejected rows to the reject log: one binary COPY on PostgreSQL, one `executemany` on
    SQLite, the values of each column gathered once (a big dirty file has hundreds of thousands)."""
    prepared = prepare_rejects(
        conn.dialect, spec, rows, source=source, source_sha256=source_sha256, run_id=run_id, request_id=request_id, at=at
    )
    write_rejects(conn, prepared)


def prepare_rejects(
    dialect: sa.engine.Dialect,
    spec: TableSpec,
    rows: Sequence[RejectedRow],
    *,
    source: str,
    source_sha256: str | None,
    run_id: str | None,
    request_id: str | None,
    at: datetime,
    encode: bool = False,
) -> PreparedRejects:
    """The reject log's rows for `rows`, ready for `write_rejects`; `encode`: on PostgreSQL, as a
    binary COPY payload too (the work a file's settling thread takes off the writing one)."""
    count = len(rows)
    if not count:
        return PreparedRejects()
    lines = [r.line for r in rows]
    raws = [stored_raw_line(r) for r in rows]
    if dialect.name == "postgresql":
        columns = {
            "table_name": _same(spec.name, count),
            "source": _same(source, count),
            "source_sha256": _same(source_sha256, count),
            "line_number": pa.array(lines, pa.int64()),
            "raw_line": pa.array(raws, pa.string()),
            "reasons": pa.array([reasons_json(r.reasons) for r in rows], pa.string()),
            "run_id": _same(run_id, count),
            "request_id": _same(request_id, count),
            "rejected_at": pa.repeat(pa.scalar(at, pa.timestamp("us", tz="UTC")), count),
        }
        table = pa.table(columns)
        return PreparedRejects(rows=table, copy_payload=binary_payload(rejected_rows, _COLUMNS, table) if encode else None)
    # SQLite: the values as SQLAlchemy would bind them (JSON text, DATETIME text), without its
    # per-row statement machinery.
    bind_reasons = rejected_rows.c.reasons.type.bind_processor(dialect) or (lambda value: value)
    bind_at = rejected_rows.c.rejected_at.type.bind_processor(dialect) or (lambda value: value)
    when = bind_at(at)
    parameters = [
        (spec.name, source, source_sha256, line, raw, bind_reasons(r.reasons), run_id, request_id, when)
        for line, raw, r in zip(lines, raws, rows)
    ]
    return PreparedRejects(parameters=parameters)


def write_rejects(conn: sa.Connection, prepared: PreparedRejects) -> None:
    """Append rows made by `prepare_rejects` to the reject log."""
    if prepared.copy_payload is not None:
        copy_payload(conn, "rejected_rows", _COLUMNS, prepared.copy_payload)
    elif prepared.rows is not None:
        copy_rows(conn, "rejected_rows", _COLUMNS, [prepared.rows], table=rejected_rows)
    elif prepared.parameters:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        conn.exec_driver_sql(f"INSERT INTO rejected_rows ({', '.join(_COLUMNS)}) VALUES ({placeholders})", prepared.parameters)


def _same(value: str | None, count: int) -> pa.Array:
    return pa.nulls(count, pa.string()) if value is None else pa.repeat(pa.scalar(value, pa.string()), count)


def stored_raw_line(row: RejectedRow) -> str:
    """The raw line as the reject table keeps it: whole up to RAW_LINE_KEEP_CHARS characters;
    a longer one is cut there and ends with a marker giving its length. A file's reject file
    keeps every line whole, so the table stays small and a 50 MB line costs no 50 MB row."""
    chars = row.long_line.chars if row.long_line is not None else len(row.raw)
    if chars <= RAW_LINE_KEEP_CHARS:
        return row.raw
    return f"{row.raw[:RAW_LINE_KEEP_CHARS]}…[line cut here: {chars:,} characters in all]"
