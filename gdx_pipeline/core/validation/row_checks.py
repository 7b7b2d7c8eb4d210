"""A block judged by the rules a row can break on its own, each broken rule in words:
`"<column>: <problem>"`, quoting what was sent. Needs no database, so it can run before a writer
takes its lock; foreign keys and duplicates of earlier rows are the validator's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gdx_pipeline.core.csv_source import RecordBlock
from gdx_pipeline.core.validation.judges import NOT_NULLABLE, ArrowRules, Failure, pandera_failures
from gdx_pipeline.core.validation.parsing import ParsedColumn, parse_columns
from gdx_pipeline.dictionary import NAME_CHARACTERS_PATTERN, NAME_CHARACTERS_RULE, TableSpec, excerpt


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
    sent = _sent_texts(failures, fields)
    unparsable = {
        column: parse.unparsable.fill_null(False).to_numpy(zero_copy_only=False)
        for column, parse in parsed.items()
        if parse.unparsable is not None
    }
    for column, check, _value, row in failures:
        column_parse = parsed[column]
        if check == NOT_NULLABLE:
            if row in column_parse.refused:
                reason = f"{column}: {column_parse.refused[row]}"
            elif column in unparsable and unparsable[column][row]:
                reason = f"{column}: {column_parse.problem} (got {excerpt(sent[column, row])})"
            else:
                reason = f"{column}: missing"
        else:
            # an integer's text is digits: quoted bare, like the id it is
            shown = excerpt(sent[column, row], quoted=not pa.types.is_integer(column_parse.values.type))
            reason = f"{column}: {_describe_check(check)} (got {shown})"
        reasons.setdefault(row, []).append(reason)
    return reasons


def _sent_texts(failures: list[Failure], fields: pa.Table) -> dict[tuple[str, int], str]:
    """(column, row) -> the text sent there, trimmed, for every failure: one `take` per column."""
    rows_by_column: dict[str, set[int]] = {}
    for column, _check, _value, row in failures:
        rows_by_column.setdefault(column, set()).add(row)
    sent: dict[tuple[str, int], str] = {}
    for column, rows in rows_by_column.items():
        ordered = sorted(rows)
        texts = fields.column(column).take(pa.array(ordered, pa.int64())).to_pylist()
        sent.update(((column, row), (text or "").strip()) for row, text in zip(ordered, texts))
    return sent
