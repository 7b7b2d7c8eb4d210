"""`stored_rows_failures` (what `matches_dictionary` reports) against a plain-Python recount of
the dictionary's rules, on rows written around the pipeline, across chunk boundaries."""

import re

from hypothesis import HealthCheck, given, settings, strategies as st

from gdx_pipeline.core.rule_failures import RuleFailures, reason_kind, stored_rows_failures
from gdx_pipeline.core.warehouse import data_tables, write_transaction
from gdx_pipeline.dictionary import ID_MAX, ID_MIN, NAME_CHARACTERS_PATTERN, NAME_MAX_LENGTH, TABLES

DEPARTMENTS = TABLES["departments"]
# A fixed, modest budget (each example rewrites the table); raise it here for a longer run.
EXAMPLES = 25

names = st.one_of(
    st.sampled_from(["Sales", "Zoë Ñandú", "", "x" * NAME_MAX_LENGTH, "Sales\tEMEA", "\u200b", " "]),
    st.text(alphabet=st.sampled_from([*"ab Z", "\t", "\n", "\u200b", "\u200d", "é"]), max_size=6),
)


def recount(rows: list[dict]) -> tuple[int, int, int]:
    """(failing rows, id failures, name failures), judged by Python's len and re."""
    id_failures = sum(1 for r in rows if not ID_MIN <= r["id"] <= ID_MAX)
    length = [not 1 <= len(r["department"]) <= NAME_MAX_LENGTH for r in rows]
    pattern = [re.match(NAME_CHARACTERS_PATTERN, r["department"]) is None for r in rows]
    failing = sum(1 for r, long_, odd in zip(rows, length, pattern) if long_ or odd or not ID_MIN <= r["id"] <= ID_MAX)
    return failing, id_failures, sum(length) + sum(pattern)


def test_stored_rows_failures_count_what_the_rules_refuse(engine):
    table = data_tables["departments"]

    @given(rows=st.lists(st.fixed_dictionaries({"id": st.integers(-2, 40), "department": names}), max_size=12, unique_by=lambda r: r["id"]))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def counted_alike(rows: list[dict]) -> None:
        with write_transaction(engine) as conn:
            conn.execute(table.delete())
            if rows:
                conn.execute(table.insert(), rows)
        failures = stored_rows_failures(engine, DEPARTMENTS, chunk_rows=4)  # row numbers restart in every chunk
        failing, id_failures, name_failures = recount(rows)
        assert (failures.rows_checked, failures.failing_rows, failures.passed) == (len(rows), failing, failing == 0)
        by_column = {"id": 0, "department": 0}
        for rule, count in failures.by_rule.items():
            by_column[rule.split(": ", 1)[0]] += count
        assert by_column == {"id": id_failures, "department": name_failures}

    counted_alike()


def test_a_tally_keeps_a_few_examples_and_lists_its_rules():
    failures = RuleFailures(max_examples=2)
    for n in range(3):
        failures.count(reason_kind(f"id: must be >= 1 (got {-n})"))
        failures.example(f"row {n}")
    failures.count("name: missing", 2)
    assert failures.examples == ["row 0", "row 1"] and failures.examples_wanted() == 0
    assert failures.listing() == "id: must be >= 1: 3; name: missing: 2"
