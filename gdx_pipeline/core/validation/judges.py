"""The two judges of the dictionary's rules over typed rows: Arrow compute and Pandera itself.

The rules are the Pandera model's. The check kinds the dictionary uses (bounds, lengths,
patterns) are evaluated with Arrow compute from each check's own statistics: a Pandera call
has a fixed cost whatever the row count, most of a 1,000-row API batch's validation, and Arrow
a small fraction of it. A schema with any other check is judged by Pandera itself, and a test holds
both judges to the same reasons on random rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pandera.pandas as pa_schema
import pyarrow as pa
import pyarrow.compute as pc

NOT_NULLABLE = "not_nullable"
Failure = tuple[str, str, object, int]  # column, check (as Pandera names it), failing value, row


def _to_pandas_typed(typed: pa.Table) -> pd.DataFrame:
    """Arrow to the dictionary's pandas dtypes (Int64, string, datetime64[us, UTC])."""
    mapping = {pa.int64(): pd.Int64Dtype(), pa.string(): pd.StringDtype()}
    return typed.to_pandas(types_mapper=mapping.get)


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
                and all(
                    check.name in cls.TRANSLATED and not check.element_wise and isinstance(check.statistics.get("pattern", ""), str)
                    for check in column.checks
                )
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
                rows = np.flatnonzero(pc.invert(passed).to_numpy(zero_copy_only=False))
                failing = values.take(pa.array(rows, pa.int64())).to_pylist() if len(rows) else []
                found += [(name, check.error, value, int(row)) for row, value in zip(rows, failing)]
        return found
