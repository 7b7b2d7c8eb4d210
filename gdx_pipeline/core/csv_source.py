"""Reading landing files: which table a file feeds, and its records in bounded blocks.

A file is read in blocks of whole records (a quoted field may span lines), each parsed by
pyarrow's CSV reader. Every record keeps its physical line number and can give back its raw
text, so a rejected row is stored exactly as it arrived. Rows with the wrong number of fields
are reported, not dropped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from gdx_pipeline.dictionary import TABLES, TableSpec

UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_BLOCK_BYTES = 8 * 1024 * 1024
# A record whose quotes never close would otherwise make a block grow to the whole file.
MAX_BLOCK_BYTES = 64 * 1024 * 1024


class UnreadableFileError(Exception):
    """The file as a whole cannot be read; it goes to quarantine with this message."""


def table_for_file(path: Path) -> TableSpec:
    """The table a landing file feeds, by its name prefix (`jobs*.csv`, ...)."""
    name = path.name
    if name.lower().endswith(".csv"):
        # Longest prefix first, so no table name can shadow a longer one.
        for table in sorted(TABLES, key=len, reverse=True):
            if name.startswith(table):
                return TABLES[table]
    expected = ", ".join(f"{t}*.csv" for t in TABLES)
    raise UnreadableFileError(f"unknown file name {name!r}: expected one of {expected}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class RecordBlock:
    """Whole records of one file: parsed fields for well-formed rows, problems for the rest."""

    fields: pa.Table  # one string column per dictionary column, well-formed rows only
    lines: np.ndarray  # physical line number of each row of `fields`
    malformed: list[tuple[int, str, str]]  # (line, raw, reason)
    raw_lines: dict[int, str] = field(repr=False)  # line number -> raw text, for well-formed rows
    rows_read: int = 0


@dataclass
class _Block:
    data: bytes
    first_line: int


def _even_quote_cut(buffer: bytes) -> int:
    """Offset just past the last newline that ends a whole record (quotes balanced), or -1."""
    cut = buffer.rfind(b"\n")
    if cut < 0:
        return -1
    quotes = buffer.count(b'"', 0, cut)
    while quotes % 2 == 1:
        previous = buffer.rfind(b"\n", 0, cut)
        if previous < 0:
            return -1
        quotes -= buffer.count(b'"', previous, cut)
        cut = previous
    return cut + 1


def _iter_blocks(path: Path, block_bytes: int) -> Iterator[_Block]:
    """Blocks of whole records, BOM removed, checked for NUL bytes and UTF-8."""
    line = 1
    pending = b""
    first = True
    saw_content = False
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(block_bytes)
            at_eof = not chunk
            buffer = pending + chunk
            if first:
                if buffer.startswith(UTF8_BOM):
                    buffer = buffer[len(UTF8_BOM) :]
                first = False
            if at_eof:
                cut = len(buffer)
            else:
                cut = _even_quote_cut(buffer)
                if cut < 0 and len(buffer) < MAX_BLOCK_BYTES:
                    pending = buffer
                    continue
                if cut < 0:
                    cut = buffer.rfind(b"\n") + 1 or len(buffer)
            data, pending = buffer[:cut], buffer[cut:]
            if data:
                _check_decodable(data, line)
                saw_content = saw_content or bool(data.strip())
                yield _Block(data, line)
                line += count_line_breaks(data)
            if at_eof:
                break
    if not saw_content:
        raise UnreadableFileError("the file is empty: it has no data lines")


def _check_decodable(data: bytes, first_line: int) -> None:
    nul = data.find(b"\x00")
    if nul >= 0:
        at = first_line + count_line_breaks(data[:nul])
        raise UnreadableFileError(f"binary content (a NUL byte) at line {at}: this is not a CSV text file")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        at = first_line + count_line_breaks(data[: error.start])
        raise UnreadableFileError(
            f"not UTF-8: undecodable byte at line {at}; re-save the file as UTF-8 and drop it again"
        ) from None


def _raw_lines(data: bytes) -> list[str]:
    text = data.decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _parse_fast(block: _Block, spec: TableSpec) -> RecordBlock | None:
    """pyarrow's parser; None when a quoted value spans lines (line numbers would drift)."""
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
        ),
    )
    total = table.num_rows + len(invalid)
    # One record per physical line, or line numbers and raw lines would drift: a quoted value
    # spanning lines (or a quote never closed) takes the slow path, which tracks both.
    physical_lines = count_line_breaks(block.data) + (0 if block.data.endswith((b"\n", b"\r")) else 1)
    if total != physical_lines or _has_lone_carriage_return(block.data) or any(n is None for n, _, _ in invalid):
        return None
    bad_numbers = np.array(sorted(n for n, _, _ in invalid), dtype=np.int64)
    good_numbers = np.setdiff1d(np.arange(1, total + 1, dtype=np.int64), bad_numbers, assume_unique=True)
    lines = good_numbers + (block.first_line - 1)
    raw_by_line = _LazyRawLines(block.data, block.first_line)
    malformed = [
        (line, raw_by_line[line], _field_count_reason(len(columns), count, raw_by_line[line]))
        for line, count in ((block.first_line + number - 1, count) for number, _text, count in invalid)
    ]
    return RecordBlock(fields=table, lines=lines, malformed=malformed, raw_lines=raw_by_line, rows_read=total)


def _has_lone_carriage_return(data: bytes) -> bool:
    return data.count(b"\r") != data.count(b"\r\n")


def count_line_breaks(data: bytes) -> int:
    """Physical line breaks as a CSV parser sees them: LF, CRLF and a lone CR."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


def _physical_lines(text: str) -> list[str]:
    lines = _PHYSICAL_LINE.findall(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def _parse_slow(block: _Block, spec: TableSpec) -> RecordBlock:
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
        raw = "".join(physical[start:previous_end]).rstrip("\r\n")
        line = block.first_line + start
        total += 1
        if raw.count('"') % 2:
            end = block.first_line + previous_end - 1
            malformed.append((line, raw, f"row: a quoted field is never closed, so lines {line} to {end} were read as one record"))
            continue
        if record == []:
            record = [""]
        if len(record) != len(columns):
            if len(record) == 1 and record[0] == "":
                record = [""] * len(columns)
            else:
                malformed.append((line, raw, _field_count_reason(len(columns), len(record), raw)))
                continue
        rows.append(record)
        lines.append(line)
        raw_by_line[line] = raw
    return RecordBlock(
        fields=string_table(columns, rows), lines=np.array(lines, dtype=np.int64), malformed=malformed, raw_lines=raw_by_line, rows_read=total
    )


class _LazyRawLines(dict):
    """Line number -> raw text of a block; the block is decoded and split only if a row of it
    is asked for (a rejected one), not for every block on the hot path."""

    def __init__(self, data: bytes, first_line: int):
        super().__init__()
        self._data = data
        self._lines: list[str] | None = None
        self._first = first_line

    def __getitem__(self, line: int) -> str:
        if self._lines is None:
            self._lines = _raw_lines(self._data)
        return self._lines[line - self._first]


def string_table(columns: list[str], rows: list[list[str]]) -> pa.Table:
    """Rows of field texts as an Arrow table of string columns."""
    return pa.table({c: pa.array([row[i] for row in rows], type=pa.string()) for i, c in enumerate(columns)})


def _field_count_reason(expected: int, found: int, raw: str) -> str:
    if not raw.strip():
        return "row: blank line"
    return f"row: expected {expected} fields, found {found}"


def _parse_block(block: _Block, spec: TableSpec) -> RecordBlock:
    """pyarrow when records and lines agree one to one, Python's csv module otherwise."""
    try:
        parsed = _parse_fast(block, spec)
    except pa.ArrowInvalid:
        parsed = None
    return parsed if parsed is not None else _parse_slow(block, spec)


def read_record_blocks(path: Path, spec: TableSpec, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[RecordBlock]:
    """Every record of a landing file, block by block; raises UnreadableFileError for the file."""
    for block in _iter_blocks(path, block_bytes):
        yield _parse_block(block, spec)


def read_text_records(text: str, spec: TableSpec) -> RecordBlock:
    """Records of CSV text that arrived whole (an API request), numbered from line 1."""
    data = text.encode("utf-8")
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return _parse_block(_Block(data, 1), spec)
