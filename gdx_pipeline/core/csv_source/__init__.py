"""Reading landing files: which table a file feeds, and its records in bounded blocks.

A file is cut into blocks of whole records by a scan that reads quotes exactly as the parsers
do, so where a block ends never changes how a record is read. Every record keeps its physical
line number and can give back its raw text, so a rejected row is stored exactly as it arrived.
Rows with the wrong number of fields, a quoted field never closed and records too long to be a
row are reported, not dropped. A file is hashed as it is read; with a `FileSnapshot` taken
before, reading ends by proving that the bytes parsed are the bytes hashed first.

One idea per module, in the order the bytes flow:

- `file_names`: which table a file feeds, by its name.
- `snapshot`: a file's sha256, and proof that it did not change while it was read.
- `record_ends`: where records end in raw bytes, as Python's csv module would find them.
- `splitting`: a byte stream cut into blocks of whole records, and over-long records.
- `parsing`: each block parsed (pyarrow, or the csv module) into a `RecordBlock`.
- `reading`: the two ways in, a landing file and CSV text that arrived whole.
- `records`, `errors`: what reading gives back and its limits; how a file fails as a whole.

The names below are the package's public interface; import them from here.
"""

from gdx_pipeline.core.csv_source.errors import FileChangedError, UnreadableFileError
from gdx_pipeline.core.csv_source.file_names import table_for_file
from gdx_pipeline.core.csv_source.reading import parse_piece, read_record_blocks, read_record_pieces, read_text_records
from gdx_pipeline.core.csv_source.record_ends import count_line_breaks
from gdx_pipeline.core.csv_source.records import (
    DEFAULT_BLOCK_BYTES,
    MAX_RECORD_BYTES,
    RAW_LINE_KEEP_CHARS,
    UTF8_BOM,
    LongLine,
    RecordBlock,
    raw_texts,
    string_table,
)
from gdx_pipeline.core.csv_source.snapshot import FileSnapshot, file_sha256

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "MAX_RECORD_BYTES",
    "RAW_LINE_KEEP_CHARS",
    "UTF8_BOM",
    "FileChangedError",
    "FileSnapshot",
    "LongLine",
    "RecordBlock",
    "raw_texts",
    "UnreadableFileError",
    "count_line_breaks",
    "file_sha256",
    "parse_piece",
    "read_record_blocks",
    "read_record_pieces",
    "read_text_records",
    "string_table",
    "table_for_file",
]
