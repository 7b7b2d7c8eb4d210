"""Two judges of the dictionary's rules: Arrow (the fast path) and Pandera itself. On random
rows, broken in every way the dictionary can name, both give every row the same reasons."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from gdx_pipeline.core.validation import ArrowRules, pandera_failures, parse_columns, reasons_by_row
from gdx_pipeline.dictionary import ID_MAX, NAME_MAX_LENGTH, TABLES, TableSpec, table_spec


def random_integer_text(rng: random.Random) -> str:
    return rng.choice([
        str(rng.randint(1, 5_000)),
        str(rng.choice([0, -1, ID_MAX, ID_MAX + 1, -ID_MAX, 2**40, 10**25])),
        rng.choice(["", " ", "x1", "1.5", "+7", " 42 "]),
    ])


def random_name_text(rng: random.Random) -> str:
    alphabet = "abcXYZ ñé漢字🙂-'."
    length = rng.choice([0, 1, 2, 30, NAME_MAX_LENGTH - 1, NAME_MAX_LENGTH, NAME_MAX_LENGTH + 1, 400])
    text = "".join(rng.choice(alphabet) for _ in range(length))
    if text and rng.random() < 0.25:  # a control character somewhere inside
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice("\t\x00\x01\x1f\x7f\r") + text[at:]
    return text


def random_datetime_text(rng: random.Random) -> str:
    year = rng.choice([1899, 1900, 1901, 2021, 2262, 2263, 2999, 3000, rng.randint(1, 9999)])
    return rng.choice([
        f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
        "1899-12-31T23:59:59.999999Z",
        "1900-01-01T00:00:00Z",
        "2999-12-31T23:59:59.999999Z",
        "3000-01-01T00:00:00+01:00",  # 2999 in UTC: valid
        "2021-02-30T00:00:00Z",
        "yesterday",
        "",
    ])


TEXT_OF_KIND = {"integer": random_integer_text, "text": random_name_text, "timestamp": random_datetime_text}


def random_fields(spec: TableSpec, rng: random.Random, rows: int) -> pa.Table:
    return pa.table({c: pa.array([TEXT_OF_KIND[spec.column_kind(c)](rng) for _ in range(rows)], pa.string()) for c in spec.columns})


@pytest.mark.parametrize("table", list(TABLES))
def test_arrow_and_pandera_give_every_row_the_same_reasons(table: str) -> None:
    spec = table_spec(table)
    rules = ArrowRules.for_schema(spec.schema)
    assert rules is not None  # the dictionary only uses checks Arrow can stand in for
    rng = random.Random(f"{table}-20261122")
    judged = 0
    for _ in range(20):
        fields = random_fields(spec, rng, 300)
        typed, parsed = parse_columns(spec, fields)
        by_arrow = reasons_by_row(rules.failures(typed), parsed, fields)
        by_pandera = reasons_by_row(pandera_failures(spec.schema, typed), parsed, fields)
        assert by_arrow == by_pandera
        judged += sum(len(r) for r in by_arrow.values())
    assert judged > 1_000  # plenty of broken rules were compared, not just clean rows


def test_a_schema_with_a_check_arrow_cannot_stand_in_for_is_judged_by_pandera() -> None:
    import pandera.pandas as pa_schema

    schema = pa_schema.DataFrameSchema({"id": pa_schema.Column(int, pa_schema.Check(lambda s: s % 2 == 0))})
    assert ArrowRules.for_schema(schema) is None
    assert ArrowRules.for_schema(table_spec("jobs").schema) is not None
