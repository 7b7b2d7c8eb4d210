"""Which table a landing file feeds: decided by its name alone (`jobs*.csv`, ...)."""

from __future__ import annotations

from pathlib import Path

from gdx_pipeline.core.csv_source.errors import UnreadableFileError
from gdx_pipeline.dictionary import TABLES, TableSpec


def table_for_file(path: Path) -> TableSpec:
    """The table a landing file feeds, by its name prefix (`jobs*.csv`, ...)."""
    name = path.name
    if name.lower().endswith(".csv"):
        # Longest prefix first, so no table name can shadow a longer one.
        for table in sorted(TABLES, key=len, reverse=True):
            if name.startswith(table):
                return TABLES[table]
    expected = ", ".join(f"{t}*.csv" for t in TABLES)
    raise UnreadableFileError(f"unknown file name {name!r}: expected one of {expected}")
