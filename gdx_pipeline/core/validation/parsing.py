"""Text columns to typed Arrow columns, vectorised: null where a value is blank or cannot be
parsed, and why.

Parsing first and validating typed columns is far faster than letting Pandera coerce text
element-wise, and keeps one unparsable value from failing a whole column's checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gdx_pipeline.dictionary import ID_MAX, TableSpec

# The shapes of text each kind of column parses, anchored; the API publishes the datetime one
# as its JSON Schema pattern. [0-9], not \d: Python's \d also matches other scripts' digits.
INTEGER_PATTERN = r"^[+-]?[0-9]+$"
# ISO-8601 date and time with a Z or a numeric offset (RFC 3339 also allows a space for the T).
ISO_DATETIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)$"
)
_INSTANT = pa.timestamp("us", tz="UTC")
# From this many values on, a column is trimmed and made null where blank or unparsable without
# copying its strings (`_trimmed`, `_null_where_not`); below it (an API batch, a small file),
# Arrow's plain kernels, whose fixed costs are then smaller than the copies saved.
COPY_FREE_FROM_VALUES = 8_192
_MAX_INT_DIGITS = 18  # anything longer cannot be an int64, let alone an int32 id


@dataclass
class ParsedColumn:
    values: pa.Array  # typed; null where the text was blank or could not be parsed
    problem: str | None = None  # why a non-blank value became null
    unparsable: pa.Array | None = None  # boolean mask of those values
    blank: pa.Array | None = None  # boolean mask of blank or whitespace-only text
    refused: Mapping[int, str] = field(default_factory=dict)  # row -> why its value was refused before parsing


def _parse_integer(text: pa.Array) -> ParsedColumn:
    # The usual value is bare ASCII digits, which the pattern accepts as they are; only the others
    # (signed or malformed: a few in a dirty block) go through the pattern, apart, and their
    # values are put in their places (numbers: putting texts back costs more than all the rest).
    is_integer = pc.fill_null(pc.ascii_is_decimal(text), False)
    values = _integer_values(text, is_integer, pc.binary_length(text))  # digits are one byte each
    others = pc.and_(pc.is_valid(text), pc.invert(is_integer))
    if pc.any(others).as_py():
        rest = pc.filter(text, others)
        rest_integer = pc.fill_null(pc.match_substring_regex(rest, INTEGER_PATTERN), False)
        unsigned = pc.replace_substring_regex(rest, r"^\+", "")  # Arrow's cast refuses "+7"
        rest_values = _integer_values(unsigned, rest_integer, pc.binary_length(pc.utf8_ltrim(rest, characters="+-")))
        is_integer = pc.replace_with_mask(is_integer, others, rest_integer)
        values = pc.replace_with_mask(values, others, rest_values)
    return ParsedColumn(values, "not an integer", pc.and_(pc.is_valid(text), pc.invert(is_integer)))


def _integer_values(text: pa.Array, is_integer: pa.Array, digits: pa.Array) -> pa.Array:
    """The integers of the texts `is_integer` marks (`digits`: how many each has), null elsewhere."""
    fits = pc.and_(is_integer, pc.less_equal(digits, _MAX_INT_DIGITS))
    values = pc.cast(_null_where_not(text, fits), pa.int64())
    too_long = pc.and_(is_integer, pc.invert(fits))
    if pc.any(too_long).as_py():
        # Too many digits for any integer type: out of range, like any other too-large id (the
        # reason quotes the text, not this stand-in).
        values = pc.if_else(too_long, pa.scalar(ID_MAX + 1, pa.int64()), values)
    return values


# The one shape most files write, `2021-03-31T23:30:00Z`: such a text needs no normalising and
# is checked for it by its bytes, position by position: byte - low <= high - low, in unsigned
# bytes, so one comparison checks both bounds (a byte below `low` wraps around to a large one).
_CANONICAL_INSTANT = np.frombuffer(b"0000-00-00T00:00:00Z", dtype=np.uint8)
_CANONICAL_LOW = _CANONICAL_INSTANT
_CANONICAL_SPAN = np.where(_CANONICAL_INSTANT == ord("0"), 9, 0).astype(np.uint8)
# numpy compares rows of 20 bytes slowly (its inner loop is one row long), so the bounds are
# repeated for this many rows at a time.
_TILE_ROWS = 1024
_LOW_TILE, _SPAN_TILE = np.tile(_CANONICAL_LOW, _TILE_ROWS), np.tile(_CANONICAL_SPAN, _TILE_ROWS)


def _canonical_instants(text: pa.Array) -> np.ndarray:
    """Mask of the texts of exactly the shape `YYYY-MM-DDTHH:MM:SSZ` (ASCII digits where the Ys..Ss are)."""
    width = len(_CANONICAL_INSTANT)
    sized = pc.fill_null(pc.equal(pc.binary_length(text), width), False)
    candidates = pc.filter(text, sized)  # contiguous values: one row of `width` bytes each
    mask = np.zeros(len(text), dtype=bool)
    rows = len(candidates)
    if rows:
        offsets = np.frombuffer(candidates.buffers()[1], dtype=np.int32)[candidates.offset : candidates.offset + rows + 1]
        data = np.frombuffer(candidates.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        wrong = np.empty(rows * width, dtype=bool)  # a byte out of its position's range
        tiled = rows // _TILE_ROWS * _TILE_ROWS * width
        np.greater(data[:tiled].reshape(-1, _LOW_TILE.size) - _LOW_TILE, _SPAN_TILE, out=wrong[:tiled].reshape(-1, _LOW_TILE.size))
        np.greater(data[tiled:].reshape(-1, width) - _CANONICAL_LOW, _CANONICAL_SPAN, out=wrong[tiled:].reshape(-1, width))
        words = wrong.view(np.uint32).reshape(rows, width // 4)  # a row's flags, four to a word
        any_wrong = words[:, 0].copy()
        for column in range(1, words.shape[1]):
            any_wrong |= words[:, column]
        mask[sized.to_numpy(zero_copy_only=False)] = any_wrong == 0
    return mask


def _normalized_instants(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(whether each text has the ISO shape, the shaped ones normalised for Arrow's cast)."""
    shaped = pc.fill_null(pc.match_substring_regex(text, ISO_DATETIME_PATTERN), False)
    candidates = pc.if_else(shaped, text, pa.scalar(None, pa.string()))
    normalized = pc.replace_substring(pc.replace_substring(pc.utf8_upper(candidates), ",", "."), " ", "T")
    return shaped, pc.replace_substring_regex(normalized, r"(\.\d{6})\d+", r"\1")  # the columns keep microseconds


def _parse_timestamp(text: pa.Array) -> ParsedColumn:
    canonical = pa.array(_canonical_instants(text))
    values = _cast_instants(_null_where_not(text, canonical))
    shaped = canonical
    others = pc.and_(pc.is_valid(text), pc.invert(canonical))
    if pc.any(others).as_py():  # only the other texts go through the pattern and normalising
        others_shaped, others_normalized = _normalized_instants(pc.filter(text, others))
        shaped = pc.replace_with_mask(canonical, others, others_shaped)
        values = pc.replace_with_mask(values, others, _cast_instants(others_normalized))
    unreadable = pc.or_(pc.and_(pc.is_valid(text), pc.invert(shaped)), pc.and_(shaped, pc.is_null(values)))
    return ParsedColumn(values, "not an ISO-8601 datetime with a Z or an offset", unreadable)


def _cast_instants(texts: pa.Array) -> pa.Array:
    """ISO-8601 texts to UTC instants (microseconds, years 1 to 9999); null where a text names
    no real instant, such as 2021-02-30. Arrow's cast fails as a whole on one such value, so a
    failing slice is halved until each culprit stands alone: a few casts for a few bad values."""
    try:
        return pc.cast(texts, _INSTANT)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(texts) <= 1:
            return pa.nulls(len(texts), _INSTANT)
        middle = len(texts) // 2
        return pa.concat_arrays([_cast_instants(texts.slice(0, middle)), _cast_instants(texts.slice(middle))])


def _parse_text(text: pa.Array) -> ParsedColumn:
    return ParsedColumn(text)


_PARSERS = {"integer": _parse_integer, "timestamp": _parse_timestamp, "text": _parse_text}


def _blank_to_null(column: pa.Array) -> pa.Array:
    trimmed = _trimmed(column)
    return _null_where_not(trimmed, pc.not_equal(trimmed, ""))


# A byte that may start or end a whitespace character: ASCII up to the space, or any byte of a
# multi-byte character. `byte - 0x21` wraps the first kind round to large numbers, in one comparison.
_PLAIN_LOW, _PLAIN_SPAN = np.uint8(0x21), np.uint8(0x7F - 0x21)


def _trimmed(column: pa.Array) -> pa.Array:
    """`column` with whitespace trimmed from both ends of each value, or the column itself when
    trimming would change no value (the usual file). Found without copying the strings: only the
    values that start or end with a byte that may belong to whitespace (an accented name, say)
    are trimmed, apart, to see whether any changes. Under `COPY_FREE_FROM_VALUES` values, trimmed."""
    data = column.buffers()[2]
    if len(column) < COPY_FREE_FROM_VALUES or column.type != pa.string() or data is None:
        return pc.utf8_trim_whitespace(column)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + len(column) + 1]
    text = np.frombuffer(data, dtype=np.uint8)
    if not text.size:
        return column
    # An empty value reads a neighbour's byte instead: a harmless, cautious look.
    first = text.take(offsets[:-1], mode="clip")
    last = text.take(offsets[1:] - 1, mode="clip")
    edges = ((first - _PLAIN_LOW) > _PLAIN_SPAN) | ((last - _PLAIN_LOW) > _PLAIN_SPAN)
    if not edges.any():
        return column
    candidates = column.filter(pa.array(edges))
    unchanged = pc.all(pc.equal(pc.binary_length(pc.utf8_trim_whitespace(candidates)), pc.binary_length(candidates)))
    return column if unchanged.as_py() else pc.utf8_trim_whitespace(column)


def _null_where_not(text: pa.Array, keep: pa.Array) -> pa.Array:
    """`text` with null wherever `keep` is not true; from `COPY_FREE_FROM_VALUES` values on, as a
    new validity bitmap over the same offsets and bytes (a value under a null is never read)."""
    if len(text) < COPY_FREE_FROM_VALUES or text.offset:
        return pc.if_else(keep, text, pa.scalar(None, text.type))
    valid = pc.and_(pc.is_valid(text), pc.fill_null(keep, False))  # no nulls: its values are the bitmap
    if valid.offset:
        return pc.if_else(valid, text, pa.scalar(None, text.type))
    return pa.Array.from_buffers(text.type, len(text), [valid.buffers()[1], *text.buffers()[1:]])


def parse_columns(
    spec: TableSpec, fields: pa.Table, refused: Mapping[str, Mapping[int, str]] | None = None
) -> tuple[pa.Table, dict[str, ParsedColumn]]:
    """Typed columns, vectorised in Arrow: null where blank or unparsable, and why.

    `refused` are values a reader already judged (a JSON array for a text column): column ->
    row -> problem. Their fields must be blank; they count as wrong, not as missing."""
    parsed = {}
    for column in spec.columns:
        text = _blank_to_null(fields.column(column).combine_chunks())
        parsed[column] = _PARSERS[spec.column_kind(column)](text)
        parsed[column].blank = pc.is_null(text)
        column_refused = (refused or {}).get(column)
        if column_refused:
            judged = np.zeros(len(text), dtype=bool)
            judged[list(column_refused)] = True
            parsed[column].blank = pc.and_(parsed[column].blank, pa.array(~judged))
            parsed[column].refused = column_refused
    typed = pa.table({column: parsed[column].values for column in spec.columns})
    return typed, parsed
