"""Reading landing files: which table a file feeds, and its records in bounded blocks.

A file is cut into blocks of whole records by a scan that reads quotes exactly as the parsers
do (Python's csv module: a quote is special only where a field starts, `""` inside a quoted
field is a quote, a line break inside one is text), so where a block ends never changes how a
record is read. Each block is parsed by pyarrow's CSV reader, or by Python's csv module when a
record spans lines. Every record keeps its physical line number and can give back its raw
text, so a rejected row is stored exactly as it arrived. Rows with the wrong number of fields,
a quoted field never closed and records too long to be a row are reported, not dropped.

A file is hashed as it is read; with a `FileSnapshot` taken before, reading ends by proving
that the bytes parsed are the bytes hashed first and that the file was not touched meanwhile.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from gdx_pipeline.dictionary import TABLES, TableSpec

UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_BLOCK_BYTES = 8 * 1024 * 1024
# The widest valid row is a few KiB (five fields, names of at most 255 characters). A record
# longer than this is rejected whole and streamed through, never held in memory or parsed.
MAX_RECORD_BYTES = 1024 * 1024
# How much of a very long raw line the reject table keeps (the reject file keeps it whole).
RAW_LINE_KEEP_CHARS = 8 * 1024

# Python's csv module refuses fields over 128 KiB by default; records are bounded above.
if csv.field_size_limit() < MAX_RECORD_BYTES:
    csv.field_size_limit(MAX_RECORD_BYTES)


class UnreadableFileError(Exception):
    """The file as a whole cannot be read; it goes to quarantine with this message."""


class FileChangedError(Exception):
    """The file changed while it was being read; what was read is not applied."""


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


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class FileSnapshot:
    """A landing file as it was before reading: where it lives on disk, its size and mtime,
    and the sha256 of its bytes. The ledger key of a file is this hash, so reading must prove
    it parsed exactly these bytes (`read_record_blocks`) and the move must see the same file."""

    sha256: str
    size: int
    identity: tuple[int, int, int, int]  # device, inode, size, mtime in ns

    @classmethod
    def take(cls, path: Path) -> FileSnapshot:
        with path.open("rb") as handle:
            before = os.fstat(handle.fileno())
            digest, size = hashlib.sha256(), 0
            for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(chunk)
                size += len(chunk)
            after = os.fstat(handle.fileno())
        snapshot = cls(digest.hexdigest(), size, _identity(before))
        if _identity(after) != snapshot.identity or size != before.st_size:
            raise FileChangedError("it changed while it was being hashed")
        snapshot.raise_if_changed(path)
        return snapshot

    def raise_if_changed(self, path: Path) -> None:
        """FileChangedError unless `path` is still this file: same inode, size and mtime."""
        try:
            now = path.stat()
        except FileNotFoundError:
            raise FileChangedError("it was removed or renamed while being read") from None
        if _identity(now) != self.identity:
            size = self.identity[2]
            grown = f" (size {size:,} -> {now.st_size:,} bytes)" if now.st_size != size else ""
            raise FileChangedError(f"it changed while being read{grown}")

    def verify_read(self, path: Path, sha256: str, size: int) -> None:
        """The bytes parsed were the bytes hashed first, and the file is still untouched."""
        if sha256 != self.sha256 or size != self.size:
            raise FileChangedError(f"it changed while being read (read {size:,} bytes that differ from the {self.size:,} hashed first)")
        self.raise_if_changed(path)


@dataclass(frozen=True)
class LongLine:
    """A raw line too long to hold: `chars` characters in all, the source's bytes [start, end)."""

    chars: int
    start: int
    end: int


@dataclass
class RecordBlock:
    """Whole records of one file: parsed fields for well-formed rows, problems for the rest."""

    fields: pa.Table  # one string column per dictionary column, well-formed rows only
    lines: np.ndarray  # physical line number of each row of `fields`
    malformed: list[tuple[int, str, str]]  # (line, raw, reason)
    raw_lines: dict[int, str] = field(repr=False)  # line number -> raw text, for well-formed rows
    rows_read: int = 0
    # line -> where the whole raw line is, for malformed records whose `raw` is only their start
    long_lines: dict[int, LongLine] = field(default_factory=dict, repr=False)


# --- finding where records end ----------------------------------------------------------------

_QUOTE, _COMMA, _LF, _CR = 0x22, 0x2C, 0x0A, 0x0D


@dataclass
class _QuoteState:
    """Where a scan left off: inside a quoted field or not, and whether a quote at the next
    byte would open one (it follows a comma, a line break or nothing)."""

    in_quotes: bool = False
    at_field_start: bool = True


def _record_ends(data: bytes, state: _QuoteState, *, final: bool) -> tuple[np.ndarray, int]:
    """Offsets just past each line break of `data` that ends a record, read as Python's csv
    module reads it, and how far the scan got.

    Only quotes and line breaks are looked at, vectorised. A maximal run of k quotes changes
    the state only when k is odd: at a field start outside quotes it opens a quoted field (the
    rest pair up as escaped quotes), inside one it closes it, and elsewhere its quotes are
    text. `state` says how `data` starts and is moved to where the scan stopped: unless
    `final`, a last byte whose meaning depends on the next one (a CR that may start a CRLF, the
    odd quote of a trailing run) is left for the next scan, which starts at the returned stop.
    """
    size = len(data)
    view = np.frombuffer(data, dtype=np.uint8)
    stop = size
    inside_after = last_quote = None
    trailing_run_opens = None
    if data.find(b'"') >= 0:
        quotes = np.flatnonzero(view == _QUOTE)
        gaps = np.flatnonzero(np.diff(quotes) != 1) + 1
        run_first = quotes[np.concatenate(([0], gaps))]
        run_last = quotes[np.concatenate((gaps - 1, [quotes.size - 1]))]
        odd = (run_last - run_first) % 2 == 0
        before_run = view[np.maximum(run_first - 1, 0)]
        opens = (before_run == _COMMA) | (before_run == _LF) | (before_run == _CR)
        if run_first[0] == 0:
            opens[0] = state.at_field_start
        if run_last[-1] == size - 1:
            trailing_run_opens = bool(opens[-1])
            if not final and odd[-1]:
                stop, odd[-1] = size - 1, False  # what is left of the run is even: it changes nothing
        at_start, last_quote = opens[odd], run_last[odd]
        if last_quote.size:
            toggles = np.cumsum(at_start)
            position = np.arange(last_quote.size)
            last_reset = np.maximum.accumulate(np.where(at_start, -1, position))
            since_reset = toggles - np.where(last_reset >= 0, toggles[np.maximum(last_reset, 0)], 0)
            inside_after = np.where(last_reset >= 0, False, state.in_quotes) ^ (since_reset % 2 == 1)
    if not final and stop == size and size and data[-1] == _CR:
        stop = size - 1
    ends = np.flatnonzero(view[:stop] == _LF)
    if data.find(b"\r", 0, stop) >= 0:
        returns = np.flatnonzero(view[:stop] == _CR)
        following = returns + 1
        lone = returns[(following >= size) | (view[np.minimum(following, size - 1)] != _LF)]
        ends = np.union1d(ends, lone)
    ends = ends + 1
    if inside_after is not None:
        before = np.searchsorted(last_quote, ends - 1) - 1  # the last odd run ending before each line break
        inside = np.where(before >= 0, inside_after[np.maximum(before, 0)], state.in_quotes)
        ends = ends[~inside]
        state.in_quotes = bool(inside_after[-1])
    elif state.in_quotes:
        ends = ends[:0]
    if trailing_run_opens is not None:
        state.at_field_start = trailing_run_opens  # the run may go on in the next data
    elif stop:
        state.at_field_start = data[stop - 1] in (_COMMA, _LF, _CR)
    return ends, stop


def _line_ending_length(data: bytes, end: int) -> int:
    """Bytes of the line break that ends data[:end]: 2 for CRLF, 1 for LF or CR, else 0."""
    if end and data[end - 1] == _LF:
        return 2 if end > 1 and data[end - 2] == _CR else 1
    return 1 if end and data[end - 1] == _CR else 0


def _strip_line_ending(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith(("\n", "\r")) else text


def count_line_breaks(data: bytes) -> int:
    """Physical line breaks as a CSV parser sees them: LF, CRLF and a lone CR."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _size_text(size: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size:,} bytes"


@dataclass
class _Block:
    data: bytes
    first_line: int
    open_quote: bool = False  # its last record's quoted field runs to the end of the file


@dataclass
class _LongRecord:
    """A record longer than the limit: rejected whole, never parsed."""

    first_line: int
    last_line: int
    size: int  # bytes, without its line break
    head: str  # its first RAW_LINE_KEEP_CHARS characters
    line: LongLine
    open_quote: bool


class _DecodeCheck:
    """UTF-8 without NUL bytes, checked piece by piece; the line of the first bad byte."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def decode(self, data: bytes, first_line: int, *, final: bool = False) -> str:
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(data, final)
            bad = None
        except UnicodeDecodeError as error:
            text, bad = "", max(0, error.start - pending)
        nul = data.find(b"\x00")
        if nul >= 0 and (bad is None or nul < bad):
            at = first_line + count_line_breaks(data[:nul])
            raise UnreadableFileError(f"binary content (a NUL byte) at line {at}: this is not a CSV text file")
        if bad is not None:
            at = first_line + count_line_breaks(data[:bad])
            raise UnreadableFileError(f"not UTF-8: undecodable byte at line {at}; re-save the file as UTF-8 and drop it again")
        return text


class _RecordSplitter:
    """Cuts a byte stream into blocks of whole records, and over-long records.

    Blocks are about `block_bytes` (plus one record). A record longer than `max_record_bytes`
    comes out alone as a `_LongRecord`: once the record being read passes the limit its bytes
    are checked and counted as they stream by, never kept (only its first characters), and
    reading goes on at its real end, as the quotes say.
    """

    def __init__(self, read: Callable[[int], bytes], block_bytes: int, max_record_bytes: int):
        self._read = read
        self.block_bytes = max(1, block_bytes)
        self.max_record_bytes = max_record_bytes
        self.line = 1
        self.offset = 0  # where the buffer starts in the stream
        self.saw_content = False

    def pieces(self) -> Iterator[_Block | _LongRecord]:
        buffer = self._read(max(self.block_bytes, len(UTF8_BOM)))
        final = not buffer
        if buffer.startswith(UTF8_BOM):
            buffer, self.offset = buffer[len(UTF8_BOM) :], len(UTF8_BOM)
        while True:
            consumed = yield from self._complete_records(buffer, final)
            buffer = buffer[consumed:]
            self.offset += consumed
            # Too long already, whatever follows (a last line break would not count).
            if not final and len(buffer) - _line_ending_length(buffer, len(buffer)) > self.max_record_bytes:
                buffer, final = yield from self._stream_long_record(buffer)
                continue
            if final:
                return
            chunk = self._read(self.block_bytes)
            final = not chunk
            buffer += chunk

    def _complete_records(self, buffer: bytes, final: bool) -> Iterator[_Block | _LongRecord]:
        """Yield the whole records at the start of `buffer` (all of it when `final`); return their length."""
        ends, all_short, open_quote = self._record_ends(buffer, final)
        if not ends.size:
            return 0
        if all_short:
            yield self._block(buffer[: ends[-1]], open_quote=False)
            return int(ends[-1])
        starts = np.concatenate(([0], ends[:-1]))
        sizes = ends - starts - self._endings(buffer, ends)
        position = 0
        last = ends.size - 1
        for i in np.flatnonzero(sizes > self.max_record_bytes):
            start, end = int(starts[i]), int(ends[i])
            if start > position:
                yield self._block(buffer[position:start], open_quote=False)
            yield self._long_record_in_memory(buffer, start, start + int(sizes[i]), end, open_quote=open_quote and i == last)
            position = end
        if ends[-1] > position:
            yield self._block(buffer[position : ends[-1]], open_quote=open_quote)
        return int(ends[-1])

    @staticmethod
    def _endings(buffer: bytes, ends: np.ndarray) -> np.ndarray:
        view = np.frombuffer(buffer, dtype=np.uint8)
        last = view[ends - 1]
        crlf = (last == _LF) & (ends > 1) & (view[np.maximum(ends - 2, 0)] == _CR)
        return np.where(last == _LF, 1 + crlf, np.where(last == _CR, 1, 0))

    def _record_ends(self, buffer: bytes, final: bool) -> tuple[np.ndarray, bool, bool]:
        """(ends of the whole records in `buffer`, whether all are known to be short, whether
        the last one's quoted field is never closed). When `final` the last record ends at the
        end of the buffer, line break or not."""
        if buffer.find(b'"') < 0:
            stop = len(buffer) - (not final and buffer.endswith(b"\r"))
            cut = max(buffer.rfind(b"\n", 0, stop), buffer.rfind(b"\r", 0, stop)) + 1
            if final and stop > cut:
                cut = stop
            if cut == 0:
                return np.empty(0, dtype=np.int64), True, False
            if self._no_line_longer_than_limit(buffer, cut):
                return np.array([cut]), True, False
        state = _QuoteState()
        ends, _ = _record_ends(buffer, state, final=final)
        if final and (not ends.size or ends[-1] < len(buffer)):
            ends = np.append(ends, len(buffer))
        return ends, False, final and state.in_quotes

    def _no_line_longer_than_limit(self, buffer: bytes, end: int) -> bool:
        """Whether every line of buffer[:end] (no quotes) is short, cheaply: a line longer than
        the limit covers a whole window of half the limit's size; each window holding a line
        break rules it out with one `find`. False means "look closer", not "too long"."""
        window = (self.max_record_bytes + 2) // 2
        if end // window > 64:
            return False
        for start in range(0, end - window + 1, window):
            if buffer.find(b"\n", start, start + window) < 0 and buffer.find(b"\r", start, start + window) < 0:
                return False
        return True

    def _block(self, data: bytes, *, open_quote: bool) -> _Block:
        _DecodeCheck().decode(data, self.line, final=True)
        self.saw_content = self.saw_content or bool(data.strip())
        block = _Block(data, self.line, open_quote)
        self.line += count_line_breaks(data)
        return block

    def _long_record_in_memory(self, buffer: bytes, start: int, content_end: int, end: int, *, open_quote: bool) -> _LongRecord:
        check = _LongRecordReading(self.line, self.offset + start)
        check.add(buffer[start:content_end])
        record = check.finish(self.offset + content_end, open_quote=open_quote)
        self.saw_content = True
        self.line += count_line_breaks(buffer[start:end])
        return record

    def _stream_long_record(self, buffer: bytes) -> Iterator[_LongRecord]:
        """Read on through the record that starts `buffer` and is already too long, to its real
        end; return what follows it and whether the stream is at its end."""
        reading = _LongRecordReading(self.line, self.offset)
        state = _QuoteState()
        final = False
        while True:
            ends, stop = _record_ends(buffer, state, final=final)
            if ends.size or final:
                end = int(ends[0]) if ends.size else len(buffer)
                content_end = end - _line_ending_length(buffer, end)
                reading.add(buffer[:content_end])
                yield reading.finish(self.offset + content_end, open_quote=not ends.size and state.in_quotes)
                self.saw_content = True
                self.line = reading.last_line + (content_end < end)
                self.offset += end
                return buffer[end:], final and end == len(buffer)
            # A line break at the end may turn out to be the file's last, which is not part of the record.
            keep = stop - _line_ending_length(buffer, stop)
            reading.add(buffer[:keep])
            self.offset += keep
            chunk = self._read(self.block_bytes)
            final = not chunk
            buffer = buffer[keep:] + chunk


class _LongRecordReading:
    """An over-long record as it streams by: checked, counted, its first characters kept."""

    def __init__(self, first_line: int, start: int):
        self.first_line = self.last_line = first_line
        self.start = start
        self.size = self.chars = 0
        self._head: list[str] = []
        self._head_chars = 0
        self._check = _DecodeCheck()

    def add(self, data: bytes) -> None:
        text = self._check.decode(data, self.last_line)
        if self._head_chars < RAW_LINE_KEEP_CHARS:
            self._head.append(text[: RAW_LINE_KEEP_CHARS - self._head_chars])
            self._head_chars += len(self._head[-1])
        self.size += len(data)
        self.chars += len(text)
        self.last_line += count_line_breaks(data)

    def finish(self, end: int, *, open_quote: bool) -> _LongRecord:
        self._check.decode(b"", self.last_line, final=True)
        return _LongRecord(self.first_line, self.last_line, self.size, "".join(self._head), LongLine(self.chars, self.start, end), open_quote)


class _HashingReader:
    """A binary file's `read`, hashing and counting every byte it hands out."""

    def __init__(self, handle: io.BufferedReader):
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int) -> bytes:
        data = self._handle.read(size)
        self._digest.update(data)
        self.size += len(data)
        return data

    def sha256(self) -> str:
        return self._digest.hexdigest()


# --- parsing blocks ---------------------------------------------------------------------------


def _raw_lines(data: bytes) -> list[str]:
    text = data.decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _parse_fast(block: _Block, spec: TableSpec) -> RecordBlock | None:
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
        ),
    )
    total = table.num_rows + len(invalid)
    # One record per physical line, or line numbers and raw lines would drift: a quoted value
    # spanning lines takes the slow path, which tracks both.
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


_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


def _physical_lines(text: str) -> list[str]:
    lines = _PHYSICAL_LINE.findall(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def _never_closed_reason(first_line: int, last_line: int) -> str:
    if last_line == first_line:
        return "row: a quoted field is never closed (the file ends inside it)"
    return f"row: a quoted field is never closed, so lines {first_line} to {last_line} were read as one record"


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


def _long_record_block(record: _LongRecord, spec: TableSpec, max_record_bytes: int, *, in_file: bool) -> RecordBlock:
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


def read_record_blocks(
    path: Path,
    spec: TableSpec,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    *,
    snapshot: FileSnapshot | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> Iterator[RecordBlock]:
    """Every record of a landing file, block by block; raises UnreadableFileError for the file.

    With `snapshot`, reading ends by checking that the bytes read hash to the snapshot's sha256
    and that the file is untouched (FileChangedError otherwise), so the caller can roll back.
    """
    with path.open("rb") as handle:
        reading = _HashingReader(handle)
        splitter = _RecordSplitter(reading.read, block_bytes, max_record_bytes)
        try:
            for piece in splitter.pieces():
                if isinstance(piece, _Block):
                    yield _parse_block(piece, spec)
                else:
                    yield _long_record_block(piece, spec, max_record_bytes, in_file=True)
        except UnreadableFileError:
            if snapshot is not None:
                snapshot.raise_if_changed(path)  # a file rewritten while read is not judged by a mix of two versions
            raise
        if snapshot is not None:
            snapshot.verify_read(path, reading.sha256(), reading.size)
    if not splitter.saw_content:
        raise UnreadableFileError("the file is empty: it has no data lines")


def read_text_records(text: str, spec: TableSpec, *, max_record_bytes: int = MAX_RECORD_BYTES) -> RecordBlock:
    """Records of CSV text that arrived whole (an API request), numbered from line 1: cut into
    records exactly as a landing file with the same text would be, so each gets the same fate."""
    data = text.encode("utf-8")
    splitter = _RecordSplitter(io.BytesIO(data).read, max(len(data), 1), max_record_bytes)
    blocks: list[tuple[int, RecordBlock]] = []
    for piece in splitter.pieces():
        if isinstance(piece, _Block):
            blocks.append((piece.first_line, _parse_block(piece, spec)))
        else:
            block = _long_record_block(piece, spec, max_record_bytes, in_file=False)
            line, _head, reason = block.malformed[0]
            block.malformed[0] = (line, data[piece.line.start : piece.line.end].decode("utf-8"), reason)
            blocks.append((piece.first_line, block))
    if len(blocks) == 1:
        return blocks[0][1]
    return RecordBlock(
        fields=pa.concat_tables([block.fields for _, block in blocks]) if blocks else string_table(spec.columns, []),
        lines=np.concatenate([block.lines for _, block in blocks]) if blocks else np.empty(0, dtype=np.int64),
        malformed=[entry for _, block in blocks for entry in block.malformed],
        raw_lines=_RawLinesOfBlocks(blocks),
        rows_read=sum(block.rows_read for _, block in blocks),
    )


class _RawLinesOfBlocks(dict):
    """Line number -> raw text, looked up in the block that holds the line."""

    def __init__(self, blocks: list[tuple[int, RecordBlock]]):
        super().__init__()
        self._first_lines = [first for first, _ in blocks]
        self._blocks = [block for _, block in blocks]

    def __getitem__(self, line: int) -> str:
        return self._blocks[bisect.bisect_right(self._first_lines, line) - 1].raw_lines[line]
