"""Rows that break the data dictionary, counted in the numbers a person acts on: rows checked,
failing rows, failures per rule and a few examples.

One tally for every judge of rows already written: `matches_dictionary` (a table's stored rows,
judged by the dictionary's Pandera model, `stored_rows_failures`) and restore verification (a
backup's rows, judged by ingestion's own rules). A rule is a reason without the offending value
(`reason_kind`), so one rule counts once however many different values broke it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from gdx_pipeline.core.validation import frame_failures
from gdx_pipeline.core.warehouse import data_tables
from gdx_pipeline.dictionary import TableSpec

CHECK_CHUNK_ROWS = 200_000


def reason_kind(reason: str) -> str:
    """A reason without the offending value, for counting rejects by kind."""
    return reason.split(" (got ", 1)[0]


@dataclass
class RuleFailures:
    """How many rows were checked and failed, how often each rule failed, and a few examples."""

    rows_checked: int = 0
    failing_rows: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5

    @property
    def passed(self) -> bool:
        return self.failing_rows == 0

    def count(self, rule: str, times: int = 1) -> None:
        self.by_rule[rule] = self.by_rule.get(rule, 0) + times

    def examples_wanted(self) -> int:
        """How many more examples are kept."""
        return max(self.max_examples - len(self.examples), 0)

    def example(self, text: str) -> None:
        if self.examples_wanted():
            self.examples.append(text)

    def listing(self) -> str:
        """`rule: count; …`, for a message."""
        return "; ".join(f"{rule}: {count:,}" for rule, count in self.by_rule.items())


def read_table_frames(engine: sa.Engine, spec: TableSpec, chunk_rows: int = CHECK_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The table in typed chunks (bounded memory), with timestamps as UTC whatever the engine."""
    table = data_tables[spec.name]
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            sa.select(table).order_by(table.c[spec.primary_key])
        )
        for rows in result.partitions(chunk_rows):
            frame = pd.DataFrame(rows, columns=spec.columns)
            for column in spec.columns:
                kind = spec.column_kind(column)
                if kind == "integer":
                    frame[column] = frame[column].astype("Int64")
                elif kind == "timestamp":
                    frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("us")
                else:
                    frame[column] = frame[column].astype("string")
            yield frame


def stored_rows_failures(engine: sa.Engine, spec: TableSpec, chunk_rows: int = CHECK_CHUNK_ROWS) -> RuleFailures:
    """Every stored row of `spec`'s table judged by the dictionary's Pandera model; a rule is
    `<column>: <Pandera check>`."""
    failures = RuleFailures()
    for frame in read_table_frames(engine, spec, chunk_rows):
        failures.rows_checked += len(frame)
        found = frame_failures(spec.schema, frame)
        failures.failing_rows += len({row for *_, row in found if row is not None})
        for column, check, _value, _row in found:
            if isinstance(column, str):  # a failure of the frame as a whole names no column
                failures.count(f"{column}: {check}")
    return failures
