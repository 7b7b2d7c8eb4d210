"""Which ids each foreign key of a table may point at now: what validation checks references against."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from gdx_pipeline.core.warehouse import array_text, data_tables, is_postgres
from gdx_pipeline.dictionary import ID_MAX, ID_MIN, TableSpec


def known_keys(conn: sa.Connection, spec: TableSpec, *, among: pa.Table | None = None) -> dict[str, list[int]]:
    """For each foreign key of `spec`, the ids that exist now in the referenced table (one query).

    With `among` (typed rows of `spec`), only those of the ids the rows refer to: what an API
    batch needs, at a cost that does not grow with the referenced tables (reading them all
    made a 1,000-row batch several times slower against 100,000 jobs). The ids go as one
    parameter per key (an array, or JSON on SQLite), not one each: compiling an `IN` of a few
    hundred parameters cost a batch more than the query."""
    if not spec.foreign_keys:
        return {}
    selects = []
    for fk in spec.foreign_keys:
        target = data_tables[fk.table].c[fk.target_column]
        select = sa.select(sa.literal(fk.column).label("fk"), target.label("id"))
        if among is not None:
            named = pc.unique(among.column(fk.column).drop_null())
            # An id outside the dictionary's range exists nowhere (and PostgreSQL refuses to compare it).
            named = pc.filter(named, pc.and_(pc.greater_equal(named, ID_MIN), pc.less_equal(named, ID_MAX)))
            select = select.where(_among(conn, target, named.to_pylist()))
        selects.append(select)
    keys: dict[str, list[int]] = {fk.column: [] for fk in spec.foreign_keys}
    for column, id_ in conn.execute(sa.union_all(*selects)):
        keys[column].append(id_)
    return keys


def _among(conn: sa.Connection, column: sa.ColumnElement, ids: list[int]) -> sa.ColumnElement[bool]:
    """`column` is one of `ids`, with the ids bound as one parameter."""
    if is_postgres(conn):
        # A set to join, not `= ANY(array)`: that tests every row against the whole array.
        return column.in_(sa.select(sa.func.unnest(sa.cast(sa.bindparam(None, array_text(ids), sa.String), ARRAY(sa.Integer)))))
    return column.in_(sa.select(sa.literal_column("value")).select_from(sa.func.json_each(sa.bindparam(None, json.dumps(ids), sa.String))))
