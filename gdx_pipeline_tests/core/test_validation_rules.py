"""Two judges of the dictionary's rules: Arrow (the fast path) and Pandera itself. On random
rows, broken in every way the dictionary can name, both give every row the same reasons."""

from __future__ import annotations

import random
import re
import sys
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from gdx_pipeline.core.validation import ArrowRules, pandera_failures, parse_columns, reasons_by_row
from gdx_pipeline.dictionary import (
    ID_MAX,
    NAME_CHARACTERS_PATTERN,
    NAME_JOINERS,
    NAME_MAX_LENGTH,
    REFUSED_NAME_CATEGORIES,
    TABLES,
    TableSpec,
    refused_name_characters,
    table_spec,
)

# Characters a name may or may not hold, by kind: controls, format characters (zero-width,
# direction, BOM, tags), separators, the joiners, private use, unassigned, astral.
ODD_CHARACTERS = (
    "\t\x00\x01\x1f\x7f\r\x85\x9f\xad\u061c\u200b\u200c\u200d\u200e\u2028\u2029\u202e\u2066\ufeff\ue000"
    "\U000e0001\U000e007f\U0001d173\U0003134b\xa0\u3000"
)


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
    if text and rng.random() < 0.25:  # an odd character somewhere inside
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice(ODD_CHARACTERS) + text[at:]
    if rng.random() < 0.05:  # made only of joiners, or of one odd character
        text = rng.choice(["\u200d", "\u200c\u200d", "\u200b", "\u202e", rng.choice(ODD_CHARACTERS)])
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
def test_arrow_and_pandera_give_every_row_the_same_reasons(table: str, parse_path: str) -> None:
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


def test_the_refused_characters_are_every_one_of_their_categories_in_all_of_unicode() -> None:
    """The dictionary scans only planes 0, 1 and 14 for them; this scans every code point."""
    everywhere = {
        p for p in range(sys.maxunicode + 1) if unicodedata.category(chr(p)) in REFUSED_NAME_CATEGORIES and chr(p) not in NAME_JOINERS
    }
    assert refused_name_characters() == everywhere
    assert {0x85, 0x200B, 0x2028, 0x2029, 0x202E, 0xFEFF, 0xE0001} <= everywhere and not {0x200C, 0x200D, 0xE000} & everywhere


def test_pythons_re_and_arrows_re2_read_the_name_pattern_alike_for_every_code_point() -> None:
    """Pandera matches with Python's `re`, the Arrow judge with RE2: on a name holding any one
    code point (surrogates cannot be UTF-8), and on that code point alone, both say the same,
    and it is what the categories say."""
    points = [p for p in range(sys.maxunicode + 1) if not 0xD800 <= p <= 0xDFFF]
    refused = refused_name_characters()
    for shape in ("a{}a", "{}"):
        names = [shape.format(chr(p)) for p in points]
        by_re2 = pc.match_substring_regex(pa.array(names), NAME_CHARACTERS_PATTERN).to_pylist()
        pattern = re.compile(NAME_CHARACTERS_PATTERN)
        by_re = [pattern.match(name) is not None for name in names]
        expected = [p not in refused and (shape == "a{}a" or chr(p) not in NAME_JOINERS) for p in points]
        assert by_re2 == by_re == expected


WHITESPACE = [chr(p) for p in range(sys.maxunicode + 1) if chr(p).isspace()]


def test_arrow_trims_exactly_pythons_whitespace_none_of_it_printable_ascii() -> None:
    """Every code point: Arrow's trim removes it iff Python's `str.isspace` says whitespace; and
    no whitespace character's UTF-8 starts or ends with a printable ASCII byte, which is what
    lets the parser skip trimming a column whose values all start and end with one."""
    points = [p for p in range(sys.maxunicode + 1) if not 0xD800 <= p <= 0xDFFF]
    trimmed = pc.utf8_trim_whitespace(pa.array([chr(p) for p in points])).to_pylist()
    assert [chr(p) for p, t in zip(points, trimmed) if t == ""] == WHITESPACE
    edges = {byte for c in WHITESPACE for byte in (c.encode()[0], c.encode()[-1])}
    assert not edges & set(range(0x21, 0x7F)) and {0x09, 0x20, 0x85, 0x80, 0xA0} <= edges


def test_values_are_trimmed_and_blanks_made_null_as_pythons_strip_does(parse_path: str) -> None:
    """Columns of names as files hold them (ASCII, accented, CJK), some with whitespace of any
    kind at either end or alone, some without any: parsed, each value is `str.strip`'s."""
    rng = random.Random(20261203)
    spec = table_spec("departments")
    words = ["Ana", "Émile", "José", "Zoë", "漢字", "O'Neil", "a-b", "x"]
    for _ in range(200):
        names = [rng.choice(words) + rng.choice(["", " ", "é", "ü"]) + rng.choice(words) for _ in range(rng.choice([1, 5, 300]))]
        for _ in range(rng.choice([0, 0, 1, 3])):  # whitespace somewhere at an edge, or a whole blank value
            at = rng.randrange(len(names))
            space = rng.choice(WHITESPACE)
            names[at] = rng.choice([space + names[at], names[at] + space, space, "", space * 2 + names[at] + space])
        fields = pa.table({"id": pa.array(["1"] * len(names)), "department": pa.array(names)})
        _typed, parsed = parse_columns(spec, fields)
        assert parsed["department"].values.to_pylist() == [name.strip() or None for name in names]
        assert parsed["department"].blank.to_pylist() == [not name.strip() for name in names]
