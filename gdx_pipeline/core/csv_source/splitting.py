"""Cutting a byte stream into blocks of whole records, and over-long records rejected whole.

Blocks end only where records end (`record_ends`), hold only UTF-8 text without NUL bytes, and
know the physical line they start on. A record longer than the limit is streamed through,
checked and counted but never held, and reading goes on at its real end.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from gdx_pipeline.core.csv_source.errors import UnreadableFileError
from gdx_pipeline.core.csv_source.record_ends import CR, LF, QuoteState, count_line_breaks, line_ending_length, record_ends
from gdx_pipeline.core.csv_source.records import RAW_LINE_KEEP_CHARS, UTF8_BOM, LongLine


@dataclass
class Block:
    """Whole records of a file, not yet parsed, starting at physical line `first_line`."""

    data: bytes
    first_line: int
    open_quote: bool = False  # its last record's quoted field runs to the end of the file
    line_breaks: int | None = None  # physical line breaks in `data`, when already counted


@dataclass
class LongRecord:
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


def _valid_text(data: bytes) -> bool:
    """Whether `data` is whole UTF-8 text without NUL bytes: checked by Arrow's validator, which
    refuses what Python's strict decoder refuses and, unlike it, does not hold the GIL."""
    if data.find(b"\x00") >= 0:
        return False
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)]).cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


class RecordSplitter:
    """Cuts a byte stream into blocks of whole records, and over-long records.

    Blocks are about `block_bytes` (plus one record). A record longer than `max_record_bytes`
    comes out alone as a `LongRecord`: once the record being read passes the limit its bytes
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

    def pieces(self) -> Iterator[Block | LongRecord]:
        buffer = self._read(max(self.block_bytes, len(UTF8_BOM)))
        final = not buffer
        if buffer.startswith(UTF8_BOM):
            buffer, self.offset = buffer[len(UTF8_BOM) :], len(UTF8_BOM)
        while True:
            consumed = yield from self._complete_records(buffer, final)
            buffer = buffer[consumed:]
            self.offset += consumed
            # Too long already, whatever follows (a last line break would not count).
            if not final and len(buffer) - line_ending_length(buffer, len(buffer)) > self.max_record_bytes:
                buffer, final = yield from self._stream_long_record(buffer)
                continue
            if final:
                return
            chunk = self._read(self.block_bytes)
            final = not chunk
            buffer += chunk

    def _complete_records(self, buffer: bytes, final: bool) -> Iterator[Block | LongRecord]:
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
        crlf = (last == LF) & (ends > 1) & (view[np.maximum(ends - 2, 0)] == CR)
        return np.where(last == LF, 1 + crlf, np.where(last == CR, 1, 0))

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
        state = QuoteState()
        ends, _ = record_ends(buffer, state, final=final)
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

    def _block(self, data: bytes, *, open_quote: bool) -> Block:
        if not _valid_text(data):
            _DecodeCheck().decode(data, self.line, final=True)  # raises, saying where
        self.saw_content = self.saw_content or bool(data.strip())
        block = Block(data, self.line, open_quote, count_line_breaks(data))
        self.line += block.line_breaks
        return block

    def _long_record_in_memory(self, buffer: bytes, start: int, content_end: int, end: int, *, open_quote: bool) -> LongRecord:
        check = _LongRecordReading(self.line, self.offset + start)
        check.add(buffer[start:content_end])
        record = check.finish(self.offset + content_end, open_quote=open_quote)
        self.saw_content = True
        self.line += count_line_breaks(buffer[start:end])
        return record

    def _stream_long_record(self, buffer: bytes) -> Iterator[LongRecord]:
        """Read on through the record that starts `buffer` and is already too long, to its real
        end; return what follows it and whether the stream is at its end."""
        reading = _LongRecordReading(self.line, self.offset)
        state = QuoteState()
        final = False
        while True:
            ends, stop = record_ends(buffer, state, final=final)
            if ends.size or final:
                end = int(ends[0]) if ends.size else len(buffer)
                content_end = end - line_ending_length(buffer, end)
                reading.add(buffer[:content_end])
                yield reading.finish(self.offset + content_end, open_quote=not ends.size and state.in_quotes)
                self.saw_content = True
                self.line = reading.last_line + (content_end < end)
                self.offset += end
                return buffer[end:], final and end == len(buffer)
            # A line break at the end may turn out to be the file's last, which is not part of the record.
            keep = stop - line_ending_length(buffer, stop)
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

    def finish(self, end: int, *, open_quote: bool) -> LongRecord:
        self._check.decode(b"", self.last_line, final=True)
        return LongRecord(
            self.first_line, self.last_line, self.size, "".join(self._head), LongLine(self.chars, self.start, end), open_quote
        )
