"""The two ways in: every record of a landing file, block by block, hashed as it is read; and
the records of CSV text that arrived whole (an API request), cut exactly as that file would be."""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from gdx_pipeline.core.csv_source.errors import UnreadableFileError
from gdx_pipeline.core.csv_source.parsing import long_record_block, parse_block
from gdx_pipeline.core.csv_source.records import DEFAULT_BLOCK_BYTES, MAX_RECORD_BYTES, RecordBlock, string_table
from gdx_pipeline.core.csv_source.snapshot import FileSnapshot, HashingReader
from gdx_pipeline.core.csv_source.splitting import Block, LongRecord, RecordSplitter
from gdx_pipeline.dictionary import TableSpec


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
    for piece in read_record_pieces(path, block_bytes, snapshot=snapshot, max_record_bytes=max_record_bytes):
        yield parse_piece(piece, spec, max_record_bytes)


def read_record_pieces(
    path: Path,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    *,
    snapshot: FileSnapshot | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> Iterator[Block | LongRecord]:
    """`read_record_blocks` before parsing: the file cut into blocks of whole records (checked
    UTF-8) and over-long records, hashed as read, in order. Each piece is parsed by itself
    (`parse_piece`), so several can be parsed at once; the checks at the end are the same."""
    with path.open("rb") as handle:
        reading = HashingReader(handle)
        splitter = RecordSplitter(reading.read, block_bytes, max_record_bytes)
        try:
            yield from splitter.pieces()
        except UnreadableFileError:
            if snapshot is not None:
                snapshot.raise_if_changed(path)  # a file rewritten while read is not judged by a mix of two versions
            raise
        if snapshot is not None:
            snapshot.verify_read(path, reading.sha256(), reading.size)
    if not splitter.saw_content:
        raise UnreadableFileError("the file is empty: it has no data lines")


def parse_piece(piece: Block | LongRecord, spec: TableSpec, max_record_bytes: int = MAX_RECORD_BYTES) -> RecordBlock:
    """One piece of a landing file as a `RecordBlock` of `spec`'s columns."""
    if isinstance(piece, Block):
        return parse_block(piece, spec)
    return long_record_block(piece, spec, max_record_bytes, in_file=True)


def read_text_records(text: str, spec: TableSpec, *, max_record_bytes: int = MAX_RECORD_BYTES) -> RecordBlock:
    """Records of CSV text that arrived whole (an API request), numbered from line 1: cut into
    records exactly as a landing file with the same text would be, so each gets the same fate."""
    data = text.encode("utf-8")
    splitter = RecordSplitter(io.BytesIO(data).read, max(len(data), 1), max_record_bytes)
    blocks: list[tuple[int, RecordBlock]] = []
    for piece in splitter.pieces():
        if isinstance(piece, Block):
            blocks.append((piece.first_line, parse_block(piece, spec)))
        else:
            block = long_record_block(piece, spec, max_record_bytes, in_file=False)
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
