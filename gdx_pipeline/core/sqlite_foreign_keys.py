"""A whole SQLite table's foreign keys checked at once, before a bulk load commits.

A big load runs with SQLite's per-row foreign-key checks off and asks the database once at the
end whether every reference has its row (see `engines.write_transaction`). `PRAGMA
foreign_key_check` answers by visiting every row: about 2 s for 10 M rows and two keys. A key
whose column leads an index is answered from that index instead, one seek per distinct value
(a loose index scan, as PostgreSQL's wiki calls it): its 12 departments and 183 jobs take well
under a millisecond, whatever the row count. A key without such an index falls back to the
pragma. Both read what is stored, so a row the validator wrongly let through is still caught.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import defaultdict

import sqlalchemy as sa

# The distinct values of an indexed column, one index seek each, then those with no parent row.
_ORPHANS_BY_INDEX = """
WITH RECURSIVE walked(value) AS (
    SELECT min({column}) FROM {table}
    UNION ALL
    SELECT (SELECT min({column}) FROM {table} WHERE {column} > walked.value) FROM walked WHERE walked.value IS NOT NULL
)
SELECT value FROM walked WHERE value IS NOT NULL AND value NOT IN (SELECT {parent_column} FROM {parent}) LIMIT {limit}
"""


def raise_for_orphans(conn: sa.Connection, table: str, *, shown: int = 3) -> None:
    """Raise IntegrityError (as a row-by-row check would have) if some row of `table` refers to
    a row that does not exist; the message names up to `shown` of them."""
    orphans = orphan_references(conn, table, limit=shown)
    if orphans:
        failed = sqlite3.IntegrityError(f"FOREIGN KEY constraint failed: {', '.join(orphans[:shown])}")
        raise sa.exc.IntegrityError(f"foreign keys of {table}", None, failed)


def orphan_references(conn: sa.Connection, table: str, *, limit: int = 3) -> list[str]:
    """Up to `limit` references per foreign key of `table` whose row is missing, described."""
    quote = conn.dialect.identifier_preparer.quote
    found: list[str] = []
    by_pragma: set[int] = set()
    leading = _index_leading_columns(conn, table)
    for key_id, columns in _foreign_key_columns(conn, table).items():
        column, parent, parent_column = columns[0]
        if len(columns) > 1 or parent_column is None or column not in leading:
            by_pragma.add(key_id)
            continue
        query = _ORPHANS_BY_INDEX.format(
            table=quote(table), column=quote(column), parent=quote(parent), parent_column=quote(parent_column), limit=int(limit)
        )
        found += [f"{column} {value!r} has no row in {parent}" for (value,) in conn.exec_driver_sql(query)]
    if by_pragma:
        missing = (row for row in conn.exec_driver_sql(f"PRAGMA foreign_key_check({quote(table)})") if row[3] in by_pragma)
        found += [f"rowid {rowid} has no row in {parent}" for _table, rowid, parent, _key in itertools.islice(missing, limit)]
    return found


def _foreign_key_columns(conn: sa.Connection, table: str) -> dict[int, list[tuple[str, str, str | None]]]:
    """Per foreign key: (column, parent table, parent column) of each of its columns; the parent
    column is None when the key names only the table (its primary key)."""
    quote = conn.dialect.identifier_preparer.quote
    keys: dict[int, list[tuple[str, str, str | None]]] = defaultdict(list)
    for key_id, _seq, parent, column, parent_column, *_ in conn.exec_driver_sql(f"PRAGMA foreign_key_list({quote(table)})"):
        keys[key_id].append((column, parent, parent_column))
    return keys


def _index_leading_columns(conn: sa.Connection, table: str) -> set[str]:
    """Columns that some complete (not partial) index of `table` starts with."""
    quote = conn.dialect.identifier_preparer.quote
    leading = set()
    for _seq, name, _unique, _origin, partial in conn.exec_driver_sql(f"PRAGMA index_list({quote(table)})").all():
        if partial:
            continue
        first = conn.exec_driver_sql(f"PRAGMA index_info({quote(name)})").first()
        if first is not None and first[2] is not None:  # None: an expression
            leading.add(first[2])
    return leading
