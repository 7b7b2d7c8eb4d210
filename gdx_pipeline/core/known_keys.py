"""Which ids each foreign key of a table may point at now: what validation checks references against."""

from __future__ import annotations

import json
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from gdx_pipeline.core.warehouse import array_text, is_postgres
from gdx_pipeline.dictionary import ID_MAX, ID_MIN, TableSpec


def known_keys(conn: sa.Connection, spec: TableSpec, *, among: pa.Table | None = None) -> dict[str, list[int]]:
    """For each foreign key of `spec`, the ids that exist now in the referenced table (one query).

    With `among` (typed rows of `spec`), only those of the ids the rows refer to: what an API
    batch needs, at a cost that does not grow with the referenced tables (reading them all
    made a 1,000-row batch several times slower against 100,000 jobs). The ids go as one
    parameter per key (an array, or JSON on SQLite), not one each: compiling an `IN` of a few
    hundred parameters cost a batch more than the query. The query's text is made once per
    engine kind and table (`_lookup_sql`): building and compiling it per batch cost a 1,000-row
    API batch about as much Python time as the query took."""
    if not spec.foreign_keys:
        return {}
    postgres = is_postgres(conn)
    parameters = () if among is None else tuple(_named_ids(among, fk.column, postgres=postgres) for fk in spec.foreign_keys)
    keys: dict[str, list[int]] = {fk.column: [] for fk in spec.foreign_keys}
    for column, id_ in conn.exec_driver_sql(_lookup_sql(conn.dialect, spec, among=among is not None), parameters):
        keys[column].append(id_)
    return keys


def _named_ids(rows: pa.Table, column: str, *, postgres: bool) -> str:
    """The distinct ids `column` of `rows` names, as one parameter (array text or JSON). An id
    outside the dictionary's range exists nowhere (and PostgreSQL refuses to compare it)."""
    named = pc.unique(rows.column(column).drop_null())
    named = pc.filter(named, pc.and_(pc.greater_equal(named, ID_MIN), pc.less_equal(named, ID_MAX))).to_pylist()
    return array_text(named) if postgres else json.dumps(named)


@cache
def _lookup_sql(dialect: sa.Dialect, spec: TableSpec, *, among: bool) -> str:
    """One SELECT of (foreign key column, id) per foreign key of `spec`, joined by UNION ALL;
    `among`: each restricted to the ids of one parameter (`_named_ids`), in key order."""
    postgres, quote = dialect.name == "postgresql", dialect.identifier_preparer.quote
    selects = []
    for fk in spec.foreign_keys:
        target = quote(fk.target_column)
        select = f"SELECT '{fk.column}' AS fk, {target} AS id FROM {quote(fk.table)}"
        if among:
            # A set to join, not `= ANY(array)`: that tests every row against the whole array.
            ids = "SELECT unnest(%s::integer[])" if postgres else "SELECT value FROM json_each(?)"
            select += f" WHERE {target} IN ({ids})"
        selects.append(select)
    return " UNION ALL ".join(selects)
