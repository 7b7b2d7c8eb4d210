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
_MAX_INT_DIGITS = 18  # anything longer cannot be an int64, let alone an int32 id


@dataclass
class ParsedColumn:
    values: pa.Array  # typed; null where the text was blank or could not be parsed
    problem: str | None = None  # why a non-blank value became null
    unparsable: pa.Array | None = None  # boolean mask of those values
    blank: pa.Array | None = None  # boolean mask of blank or whitespace-only text
    refused: Mapping[int, str] = field(default_factory=dict)  # row -> why its value was refused before parsing


def _parse_integer(text: pa.Array) -> ParsedColumn:
    is_integer = pc.fill_null(pc.match_substring_regex(text, INTEGER_PATTERN), False)
    fits = pc.and_(is_integer, pc.less_equal(pc.utf8_length(pc.utf8_ltrim(text, characters="+-")), _MAX_INT_DIGITS))
    unsigned = pc.replace_substring_regex(text, r"^\+", "")  # Arrow's cast refuses "+7"
    values = pc.cast(pc.if_else(fits, unsigned, pa.scalar(None, pa.string())), pa.int64())
    not_integer = pc.and_(pc.is_valid(text), pc.invert(is_integer))
    too_long = pc.and_(is_integer, pc.invert(fits))
    if pc.any(too_long).as_py():
        # Too many digits for any integer type: out of range, like any other too-large id (the
        # reason quotes the text, not this stand-in).
        values = pc.if_else(too_long, pa.scalar(ID_MAX + 1, pa.int64()), values)
    return ParsedColumn(values, "not an integer", not_integer)


def _parse_timestamp(text: pa.Array) -> ParsedColumn:
    shaped = pc.fill_null(pc.match_substring_regex(text, ISO_DATETIME_PATTERN), False)
    candidates = pc.if_else(shaped, text, pa.scalar(None, pa.string()))
    normalized = pc.replace_substring(pc.replace_substring(pc.utf8_upper(candidates), ",", "."), " ", "T")
    to_microseconds = pc.replace_substring_regex(normalized, r"(\.\d{6})\d+", r"\1")  # the columns keep microseconds
    values = _cast_instants(to_microseconds)
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
    trimmed = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


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
