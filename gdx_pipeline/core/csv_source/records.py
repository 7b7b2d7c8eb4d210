"""What reading gives back: blocks of whole records, each row with its physical line number and
raw text, and the limits every reader honours."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_BLOCK_BYTES = 8 * 1024 * 1024
# The widest valid row is a few KiB (five fields, names of at most 255 characters). A record
# longer than this is rejected whole and streamed through, never held in memory or parsed.
MAX_RECORD_BYTES = 1024 * 1024
# How much of a very long raw line the reject table keeps (the reject file keeps it whole).
RAW_LINE_KEEP_CHARS = 8 * 1024


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


def string_table(columns: list[str], rows: list[list[str]]) -> pa.Table:
    """Rows of field texts as an Arrow table of string columns."""
    return pa.table({c: pa.array([row[i] for row in rows], type=pa.string()) for i, c in enumerate(columns)})


def raw_texts(raw_lines: Mapping[int, str], lines: list[int]) -> list[str]:
    """The raw texts of `lines` from a `RecordBlock.raw_lines`, all at once where it can cut
    them so (a landing file's block: `many`), else line by line."""
    many = getattr(raw_lines, "many", None)
    return many(lines) if many is not None else [raw_lines[line] for line in lines]
