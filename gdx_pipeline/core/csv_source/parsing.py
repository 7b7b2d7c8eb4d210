"""What each piece of a file becomes: a `RecordBlock` of parsed rows and malformed records.

A block is parsed by pyarrow's CSV reader when its records and physical lines agree one to one
(the fast path), and by Python's csv module otherwise (a quoted value spanning lines, a lone CR),
so every row keeps its line number and raw text. Rows with the wrong number of fields, a quoted
field never closed and over-long records become malformed entries with their reason.
"""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from gdx_pipeline.core.csv_source.record_ends import LF, count_line_breaks
from gdx_pipeline.core.csv_source.records import MAX_RECORD_BYTES, RecordBlock, string_table
from gdx_pipeline.core.csv_source.splitting import Block, LongRecord
from gdx_pipeline.dictionary import TableSpec

# Python's csv module refuses fields over 128 KiB by default; records are bounded above.
if csv.field_size_limit() < MAX_RECORD_BYTES:
    csv.field_size_limit(MAX_RECORD_BYTES)


def _strip_line_ending(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith(("\n", "\r")) else text


def _size_text(size: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size:,} bytes"


def _parse_fast(block: Block, spec: TableSpec) -> RecordBlock | None:
    """pyarrow's parser; None when a quoted value spans lines (line numbers would drift)."""
    if block.open_quote:
        return None
    columns = spec.columns
    invalid: list[tuple[int, str, int]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append((row.number, row.text, row.actual_columns))
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(block.data),
        read_options=pacsv.ReadOptions(column_names=columns, use_threads=False, block_size=len(block.data) + 1),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=False,  # the splitter checked the block's bytes (`_valid_text`)
        ),
    )
    total = table.num_rows + len(invalid)
    # One record per physical line, or line numbers and raw lines would drift: a quoted value
    # spanning lines takes the slow path, which tracks both.
    line_breaks = block.line_breaks if block.line_breaks is not None else count_line_breaks(block.data)
    physical_lines = line_breaks + (0 if block.data.endswith((b"\n", b"\r")) else 1)
    if total != physical_lines or _has_lone_carriage_return(block.data) or any(n is None for n, _, _ in invalid):
        return None
    bad_numbers = np.array(sorted(n for n, _, _ in invalid), dtype=np.int64)
    good_numbers = np.setdiff1d(np.arange(1, total + 1, dtype=np.int64), bad_numbers, assume_unique=True)
    lines = good_numbers + (block.first_line - 1)
    raw_by_line = _LazyRawLines(block.data, block.first_line)
    bad = [(block.first_line + number - 1, count) for number, _text, count in invalid]
    bad_raws = raw_by_line.many([line for line, _ in bad])
    malformed = [(line, raw, _field_count_reason(len(columns), count, raw)) for (line, count), raw in zip(bad, bad_raws)]
    return RecordBlock(fields=table, lines=lines, malformed=malformed, raw_lines=raw_by_line, rows_read=total)


def _has_lone_carriage_return(data: bytes) -> bool:
    return data.find(b"\r") >= 0 and data.count(b"\r") != data.count(b"\r\n")


_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


def _physical_lines(text: str) -> list[str]:
    lines = _PHYSICAL_LINE.findall(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def _never_closed_reason(first_line: int, last_line: int) -> str:
    if last_line == first_line:
        return "row: a quoted field is never closed (the file ends inside it)"
    return f"row: a quoted field is never closed, so lines {first_line} to {last_line} were read as one record"


def _parse_slow(block: Block, spec: TableSpec) -> RecordBlock:
    """Python's csv module, for blocks where a quoted value spans lines or lines end in a lone CR."""
    columns = spec.columns
    text = block.data.decode("utf-8")
    physical = _physical_lines(text)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[list[str]] = []
    lines: list[int] = []
    malformed: list[tuple[int, str, str]] = []
    raw_by_line: dict[int, str] = {}
    previous_end = 0
    total = 0
    for record in reader:
        start, previous_end = previous_end, reader.line_num
        raw = _strip_line_ending("".join(physical[start:previous_end]))
        line = block.first_line + start
        total += 1
        if block.open_quote and previous_end == len(physical):
            malformed.append((line, raw, _never_closed_reason(line, block.first_line + previous_end - 1)))
            continue
        if record == []:  # a blank line: judged as a row of blank fields ("row: blank line")
            record = [""] * len(columns)
        if len(record) != len(columns):
            malformed.append((line, raw, _field_count_reason(len(columns), len(record), raw)))
            continue
        rows.append(record)
        lines.append(line)
        raw_by_line[line] = raw
    return RecordBlock(
        fields=string_table(columns, rows),
        lines=np.array(lines, dtype=np.int64),
        malformed=malformed,
        raw_lines=raw_by_line,
        rows_read=total,
    )


class _LazyRawLines(dict):
    """Line number -> raw text of a block whose records and lines agree one to one (no lone CR);
    only the lines asked for (rejected rows) are cut out and decoded, found by where the block's
    line feeds are, which is looked up once, the first time lines are asked for."""

    def __init__(self, data: bytes, first_line: int):
        super().__init__()
        self._data = data
        self._ends: np.ndarray | None = None
        self._first = first_line

    def __getitem__(self, line: int) -> str:
        return self.many([line])[0]

    def many(self, lines: list[int]) -> list[str]:
        """The raw texts of `lines`, their bounds found at once (a block's rejected rows)."""
        data = self._data
        if self._ends is None:  # where each line ends: at its line feed, the last at the block's end
            self._ends = np.append(np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == LF), len(data))
        ends = self._ends
        index = np.asarray(lines, dtype=np.int64) - self._first
        # A line after the last line feed exists if the block does not end with one.
        count = len(ends) - (1 if not data or data.endswith(b"\n") else 0)
        outside = np.flatnonzero((index < 0) | (index >= count))
        if outside.size:
            raise KeyError(lines[outside[0]])
        starts = np.where(index > 0, ends[np.maximum(index - 1, 0)] + 1, 0).tolist()
        texts = [data[start:end] for start, end in zip(starts, ends[index].tolist())]
        return [(raw[:-1] if raw.endswith(b"\r") else raw).decode("utf-8") for raw in texts]


def _field_count_reason(expected: int, found: int, raw: str) -> str:
    if not raw.strip():
        return "row: blank line"
    return f"row: expected {expected} fields, found {found}"


def parse_block(block: Block, spec: TableSpec) -> RecordBlock:
    """pyarrow when records and lines agree one to one, Python's csv module otherwise."""
    try:
        parsed = _parse_fast(block, spec)
    except pa.ArrowInvalid:
        parsed = None
    return parsed if parsed is not None else _parse_slow(block, spec)


def long_record_block(record: LongRecord, spec: TableSpec, max_record_bytes: int, *, in_file: bool) -> RecordBlock:
    """An over-long record as one malformed record, its raw text only begun (`long_lines`)."""
    limit = f"row: record longer than {_size_text(max_record_bytes)} (got {record.size:,} bytes"
    if record.open_quote:
        reason = f"{limit}): {_never_closed_reason(record.first_line, record.last_line).removeprefix('row: ')}"
    elif record.last_line > record.first_line:
        reason = f"{limit} on lines {record.first_line} to {record.last_line})"
    else:
        reason = f"{limit})"
    return RecordBlock(
        fields=string_table(spec.columns, []),
        lines=np.empty(0, dtype=np.int64),
        malformed=[(record.first_line, record.head, reason)],
        raw_lines={},
        rows_read=1,
        long_lines={record.first_line: record.line} if in_file else {},
    )
