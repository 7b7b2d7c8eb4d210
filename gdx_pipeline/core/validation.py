"""Row validation: parse text columns vectorised, then judge them by the dictionary's Pandera schema.

Parsing first and validating typed columns is far faster than letting Pandera coerce text
element-wise, and keeps one unparsable value from failing a whole column's checks. Every
broken rule of a row becomes one human-readable reason, `"<column>: <problem>"`.

The rules are the Pandera model's. The check kinds the dictionary uses (bounds, lengths,
patterns) are evaluated with Arrow compute from each check's own statistics: a Pandera call
has a fixed cost whatever the row count, most of a 1,000-row API batch's validation, and Arrow
a small fraction of it. A schema with any other check is judged by Pandera itself, and a test holds
both judges to the same reasons on random rows.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa_schema
import pyarrow as pa
import pyarrow.compute as pc

from gdx_pipeline.core.csv_source import LongLine, RecordBlock
from gdx_pipeline.dictionary import ID_MAX, NAME_CHARACTERS_PATTERN, NAME_CHARACTERS_RULE, TableSpec, excerpt

# The shapes of text each kind of column parses, anchored; the API publishes the datetime one
# as its JSON Schema pattern. [0-9], not \d: Python's \d also matches other scripts' digits.
INTEGER_PATTERN = r"^[+-]?[0-9]+$"
# ISO-8601 date and time with a Z or a numeric offset (RFC 3339 also allows a space for the T).
ISO_DATETIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)$"
_INSTANT = pa.timestamp("us", tz="UTC")
_MAX_INT_DIGITS = 18  # anything longer cannot be an int64, let alone an int32 id


NOT_NULLABLE = "not_nullable"
Failure = tuple[str, str, object, int]  # column, check (as Pandera names it), failing value, row


@dataclass(frozen=True)
class RejectedRow:
    line: int
    raw: str  # the raw line, or only its start when `long_line` says where the whole line is
    reasons: list[str]
    long_line: LongLine | None = None


@dataclass
class ValidatedBlock:
    valid: pa.Table  # the valid rows, typed, in dictionary column order
    rejected: list[RejectedRow]


@dataclass
class ParsedColumn:
    values: pa.Array  # typed; null where the text was blank or could not be parsed
    problem: str | None = None  # why a non-blank value became null
    unparsable: pa.Array | None = None  # boolean mask of those values
    blank: pa.Array | None = None  # boolean mask of blank or whitespace-only text
    refused: Mapping[int, str] = field(default_factory=dict)  # row -> why its value was refused before parsing


def _parse_integer(text: pa.Array) -> ParsedColumn:
    if pc.all(pc.ascii_is_decimal(text)).as_py() is not False:
        # The usual column: every value bare ASCII digits, which the pattern accepts as they are.
        is_integer, digits, unsigned = pc.is_valid(text), text, text
    else:
        is_integer = pc.fill_null(pc.match_substring_regex(text, INTEGER_PATTERN), False)
        digits = pc.utf8_ltrim(text, characters="+-")
        signed = pc.any(pc.starts_with(text, "+")).as_py()
        unsigned = pc.replace_substring_regex(text, r"^\+", "") if signed else text  # Arrow's cast refuses "+7"
    fits = pc.and_(is_integer, pc.less_equal(pc.utf8_length(digits), _MAX_INT_DIGITS))
    values = pc.cast(pc.if_else(fits, unsigned, pa.scalar(None, pa.string())), pa.int64())
    not_integer = pc.and_(pc.is_valid(text), pc.invert(is_integer))
    too_long = pc.and_(is_integer, pc.invert(fits))
    if pc.any(too_long).as_py():
        # Too many digits for any integer type: out of range, like any other too-large id (the
        # reason quotes the text, not this stand-in).
        values = pc.if_else(too_long, pa.scalar(ID_MAX + 1, pa.int64()), values)
    return ParsedColumn(values, "not an integer", not_integer)


# The one shape most files write, `2021-03-31T23:30:00Z`: such a text needs no normalising and
# is checked for it by its bytes, position by position (byte ranges, low and high).
_CANONICAL_INSTANT = np.frombuffer(b"0000-00-00T00:00:00Z", dtype=np.uint8)
_CANONICAL_LOW = _CANONICAL_INSTANT
_CANONICAL_HIGH = np.where(_CANONICAL_INSTANT == ord("0"), ord("9"), _CANONICAL_INSTANT).astype(np.uint8)


def _canonical_instants(text: pa.Array) -> np.ndarray:
    """Mask of the texts of exactly the shape `YYYY-MM-DDTHH:MM:SSZ` (ASCII digits where the Ys..Ss are)."""
    width = len(_CANONICAL_INSTANT)
    sized = pc.fill_null(pc.equal(pc.binary_length(text), width), False)
    candidates = pc.filter(text, sized)  # contiguous values: one row of `width` bytes each
    mask = np.zeros(len(text), dtype=bool)
    if len(candidates):
        offsets = np.frombuffer(candidates.buffers()[1], dtype=np.int32)[candidates.offset : candidates.offset + len(candidates) + 1]
        data = np.frombuffer(candidates.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(-1, width)
        mask[np.flatnonzero(sized.to_numpy(zero_copy_only=False))] = ((data >= _CANONICAL_LOW) & (data <= _CANONICAL_HIGH)).all(axis=1)
    return mask


def _normalized_instants(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(whether each text has the ISO shape, the shaped ones normalised for Arrow's cast)."""
    shaped = pc.fill_null(pc.match_substring_regex(text, ISO_DATETIME_PATTERN), False)
    candidates = pc.if_else(shaped, text, pa.scalar(None, pa.string()))
    normalized = pc.replace_substring(pc.replace_substring(pc.utf8_upper(candidates), ",", "."), " ", "T")
    return shaped, pc.replace_substring_regex(normalized, r"(\.\d{6})\d+", r"\1")  # the columns keep microseconds


def _parse_timestamp(text: pa.Array) -> ParsedColumn:
    canonical = _canonical_instants(text)
    others = pc.and_(pc.is_valid(text), pa.array(~canonical))
    if pc.any(others).as_py():  # only the other texts go through the pattern and normalising
        others_shaped, others_normalized = _normalized_instants(pc.filter(text, others))
        shaped = pc.replace_with_mask(pa.array(canonical), others, others_shaped)
        candidates = pc.replace_with_mask(pc.if_else(pa.array(canonical), text, pa.scalar(None, pa.string())), others, others_normalized)
    else:
        shaped, candidates = pa.array(canonical), text
    values = _cast_instants(candidates)
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


def _to_pandas_typed(typed: pa.Table) -> pd.DataFrame:
    """Arrow to the dictionary's pandas dtypes (Int64, string, datetime64[us, UTC])."""
    mapping = {pa.int64(): pd.Int64Dtype(), pa.string(): pd.StringDtype()}
    return typed.to_pandas(types_mapper=mapping.get)


def _describe_check(check: str) -> str:
    match = re.fullmatch(r"(\w+)\((.*)\)", check, re.DOTALL)  # a pattern may hold line breaks
    name, argument = (match.group(1), match.group(2)) if match else (check, "")
    if name == "greater_than_or_equal_to":
        return f"must be >= {argument}"
    if name == "less_than_or_equal_to":
        return f"must be <= {argument}"
    if name == "str_length":
        low, _, high = argument.partition(",")
        return f"must be {low.strip()} to {high.strip()} characters long"
    if name == "str_matches" and argument.strip("'\"") == NAME_CHARACTERS_PATTERN:
        return NAME_CHARACTERS_RULE
    return f"fails {check}"


@dataclass
class CheckedRows:
    """A block judged by the rules a row can break on its own; foreign keys and duplicates of
    earlier rows are still to be checked. Needs no database, so it can run before a writer
    takes its lock."""

    block: RecordBlock
    typed: pa.Table  # every parsed row, in block order
    reasons: dict[int, list[str]]  # row position in `typed` -> what is wrong with it


def check_rows(spec: TableSpec, block: RecordBlock, refused: Mapping[str, Mapping[int, str]] | None = None) -> CheckedRows:
    """Parse the block's text columns and let the dictionary's Pandera schema judge each row
    (`refused`: values its reader already judged, see `parse_columns`)."""
    typed, parsed = parse_columns(spec, block.fields, refused)
    reasons = _row_rule_reasons(spec, typed, parsed, block.fields) if typed.num_rows else {}
    return CheckedRows(block, typed, reasons)


def _row_rule_reasons(spec: TableSpec, typed: pa.Table, parsed: dict[str, ParsedColumn], fields: pa.Table) -> dict[int, list[str]]:
    rules = ArrowRules.for_schema(spec.schema)
    failures = rules.failures(typed) if rules is not None else pandera_failures(spec.schema, typed)
    reasons = reasons_by_row(failures, parsed, fields)
    blank = parsed[spec.columns[0]].blank
    for column in spec.columns[1:]:
        blank = pc.and_(blank, parsed[column].blank)
    for row in np.flatnonzero(blank.to_numpy(zero_copy_only=False)):
        reasons[int(row)] = ["row: blank line"]
    return reasons


def reasons_by_row(failures: list[Failure], parsed: dict[str, ParsedColumn], fields: pa.Table) -> dict[int, list[str]]:
    """Broken checks in words: why a null is null (refused, unparsable or missing), what a value
    broke. A reason quotes what was sent (trimmed), in an excerpt when long, never the parsed
    stand-in: 30 digits are quoted as sent, not as the out-of-range id they parse to."""
    reasons: dict[int, list[str]] = {}
    for column, check, _value, row in failures:
        column_parse = parsed[column]
        if check == NOT_NULLABLE:
            if row in column_parse.refused:
                reason = f"{column}: {column_parse.refused[row]}"
            elif column_parse.unparsable is not None and column_parse.unparsable[row].as_py():
                reason = f"{column}: {column_parse.problem} (got {excerpt(_sent(fields, column, row))})"
            else:
                reason = f"{column}: missing"
        else:
            sent = _sent(fields, column, row)  # an integer's text is digits: quoted bare, like the id it is
            shown = excerpt(sent, quoted=not pa.types.is_integer(column_parse.values.type))
            reason = f"{column}: {_describe_check(check)} (got {shown})"
        reasons.setdefault(row, []).append(reason)
    return reasons


def _sent(fields: pa.Table, column: str, row: int) -> str:
    return fields.column(column)[row].as_py().strip()


def pandera_failures(schema: pa_schema.DataFrameSchema, typed: pa.Table) -> list[Failure]:
    """Every broken check of every row, as Pandera itself reports them."""
    return [failure for failure in frame_failures(schema, _to_pandas_typed(typed)) if failure[3] is not None]


def frame_failures(schema: pa_schema.DataFrameSchema, frame: pd.DataFrame) -> list[tuple[str, str, object, int | None]]:
    """Every broken check Pandera reports for a typed frame: (column, check, failing value, row),
    row None for a failure of a whole column (a wrong dtype, say)."""
    try:
        schema.validate(frame, lazy=True)
    except pa_schema.errors.SchemaErrors as errors:
        cases = errors.failure_cases[["column", "check", "failure_case", "index"]]
        return [(c, str(check), value, None if pd.isna(i) else int(i)) for c, check, value, i in cases.itertuples(index=False)]
    return []


def _arrow_scalar(value: object, type_: pa.DataType) -> pa.Scalar:
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    return pa.scalar(value, type=type_)


def _str_length_ok(values: pa.Array, statistics: Mapping[str, object]) -> pa.Array:
    length = pc.utf8_length(values)
    if statistics.get("exact_value") is not None:
        return pc.equal(length, statistics["exact_value"])
    ok = pc.is_valid(length)
    if statistics.get("min_value") is not None:
        ok = pc.and_(ok, pc.greater_equal(length, statistics["min_value"]))
    if statistics.get("max_value") is not None:
        ok = pc.and_(ok, pc.less_equal(length, statistics["max_value"]))
    return ok


def _str_matches_ok(values: pa.Array, statistics: Mapping[str, object]) -> pa.Array:
    pattern = str(statistics["pattern"])  # pandas' str.match: anchored at the start
    return pc.match_substring_regex(values, pattern if pattern.startswith("^") else f"^{pattern}")


class ArrowRules:
    """A Pandera schema's column checks, evaluated with Arrow compute (see the module doc)."""

    TRANSLATED = {
        "greater_than_or_equal_to": lambda values, s: pc.greater_equal(values, _arrow_scalar(s["min_value"], values.type)),
        "less_than_or_equal_to": lambda values, s: pc.less_equal(values, _arrow_scalar(s["max_value"], values.type)),
        "str_length": _str_length_ok,
        "str_matches": _str_matches_ok,
    }
    _by_schema: dict[int, tuple[pa_schema.DataFrameSchema, ArrowRules | None]] = {}  # the schema kept, so its id stays its own

    def __init__(self, schema: pa_schema.DataFrameSchema):
        self.columns = schema.columns

    @classmethod
    def for_schema(cls, schema: pa_schema.DataFrameSchema) -> ArrowRules | None:
        """The Arrow judge of `schema`, or None when it has a check Arrow cannot stand in for."""
        if id(schema) not in cls._by_schema:
            columns = schema.columns.values()
            translatable = not schema.checks and all(
                not column.unique
                and not column.regex
                and all(check.name in cls.TRANSLATED and not check.element_wise and isinstance(check.statistics.get("pattern", ""), str) for check in column.checks)
                for column in columns
            )
            cls._by_schema[id(schema)] = (schema, cls(schema) if translatable else None)
        return cls._by_schema[id(schema)][1]

    def failures(self, typed: pa.Table) -> list[Failure]:
        """What Pandera would report: a null breaks `not_nullable` only; a value breaks each
        check it fails, in the order the model declares them."""
        found: list[Failure] = []
        for name, column in self.columns.items():
            values = typed.column(name).combine_chunks()
            if not column.nullable:
                found += [(name, NOT_NULLABLE, None, int(row)) for row in np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))]
            for check in column.checks:
                passed = pc.fill_null(self.TRANSLATED[check.name](values, check.statistics), True)  # checks ignore nulls
                found += [(name, check.error, values[int(row)].as_py(), int(row)) for row in np.flatnonzero(pc.invert(passed).to_numpy(zero_copy_only=False))]
        return found


class RowValidator:
    """Validates blocks of one file (or one API batch) against a table's dictionary model.

    `known_keys` are the ids each foreign key may point to; `seen_ids` spans blocks so a later
    duplicate of an id is rejected wherever in the file it appears. `source_kind` names what the
    rows came in ("file", "request", "backup") in the duplicate's reason.
    """

    def __init__(self, spec: TableSpec, known_keys: Mapping[str, Collection[int]] | None = None, *, source_kind: str = "file"):
        self.spec = spec
        self.source_kind = source_kind
        known_keys = known_keys or {}
        self.allowed_keys = {fk.column: pa.array(sorted(known_keys.get(fk.column, ())), type=pa.int64()) for fk in spec.foreign_keys}
        self.seen_ids = SeenIds()

    def validate(self, block: RecordBlock) -> ValidatedBlock:
        return self.settle(check_rows(self.spec, block))

    def settle(self, checked: CheckedRows) -> ValidatedBlock:
        """Add what depends on the database and earlier blocks: foreign keys, then duplicates."""
        block, typed = checked.block, checked.typed
        rejected = [RejectedRow(line, raw, [reason], block.long_lines.get(line)) for line, raw, reason in block.malformed]
        if typed.num_rows:
            reasons = {row: list(row_reasons) for row, row_reasons in checked.reasons.items()}
            self._foreign_key_reasons(typed, reasons)  # blank lines have no values to look up
            key = self.spec.primary_key
            candidate = np.ones(typed.num_rows, dtype=bool)
            candidate[list(reasons)] = False
            ids = typed.column(key).fill_null(0).to_numpy()
            duplicates = self.seen_ids.mark(ids, candidate)
            for row in np.flatnonzero(duplicates):
                reasons[int(row)] = [f"{key}: duplicate of an earlier row in this {self.source_kind} (got {ids[row]})"]
            order = {column: i for i, column in enumerate(self.spec.columns)}
            lines, raw_lines = block.lines, block.raw_lines
            for row in sorted(reasons):
                line = int(lines[row])
                row_reasons = reasons[row]
                if len(row_reasons) > 1:
                    row_reasons = sorted(row_reasons, key=lambda r: order.get(r.split(":")[0], -1))
                rejected.append(RejectedRow(line, raw_lines[line], row_reasons))
            if reasons:
                keep = np.ones(typed.num_rows, dtype=bool)
                keep[list(reasons)] = False
                typed = typed.filter(pa.array(keep))
        rejected.sort(key=lambda r: r.line)
        return ValidatedBlock(typed, rejected)

    def _foreign_key_reasons(self, typed: pa.Table, reasons: dict[int, list[str]]) -> None:
        """Relational rules Pandera has no words for, checked set-wise against the referenced ids.

        Kept out of the Pandera schema so the schema is built once, not once per batch."""
        for fk in self.spec.foreign_keys:
            values = typed.column(fk.column)
            unknown = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=self.allowed_keys[fk.column])))
            for row in np.flatnonzero(unknown.to_numpy(zero_copy_only=False)):
                reasons.setdefault(int(row), []).append(f"{fk.column}: no such id in {fk.table} (got {values[int(row)].as_py()})")


class SeenIds:
    """Which ids a file already produced: a bitmap over the int32 id space.

    256 MiB of address space, but only the pages of ids actually seen are ever touched, so
    memory stays a few MiB for dense ids; a Python set of 10 M ids would take ~600 MiB. The
    bitmap is made when a second block arrives: a one-block file or API batch never needs it.
    """

    def __init__(self) -> None:
        self._bits: np.ndarray | None = None
        self._first_block: np.ndarray | None = None  # ids kept from the only block so far

    def mark(self, ids: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """Record candidate ids; return a mask of candidates whose id came earlier."""
        duplicate = np.zeros(len(ids), dtype=bool)
        positions = np.flatnonzero(candidate)
        values = ids[positions]
        within = pd.Series(values).duplicated(keep="first").to_numpy()
        if self._bits is None and self._first_block is None:
            duplicate[positions[within]] = True
            self._first_block = values[~within]
            return duplicate
        if self._bits is None:
            self._bits = np.zeros((ID_MAX >> 3) + 1, dtype=np.uint8)
            self._set(self._first_block)
            self._first_block = None
        if positions.size == 0:
            return duplicate
        seen_before = (self._bits[values >> 3] >> (values & 7).astype(np.uint8)) & 1
        dup = seen_before.astype(bool) | within
        duplicate[positions[dup]] = True
        self._set(values[~dup])
        return duplicate

    def _set(self, values: np.ndarray) -> None:
        np.bitwise_or.at(self._bits, values >> 3, (np.uint8(1) << (values & 7).astype(np.uint8)).astype(np.uint8))
