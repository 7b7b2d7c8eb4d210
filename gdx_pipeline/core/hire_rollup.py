"""`hires_by_quarter` kept in step with `hired_employees`, inside each writer's transaction.

A write changes the rollup by what it adds minus what it replaces: the rows it writes are
counted as they go by (Arrow, in the writer's process), the rows they replace are counted in
the database before they are overwritten (`subtract_stored`), and the difference is added to
the rollup once, before the commit (`apply`). A row written unchanged adds one and takes one
away; a row moved to another quarter, department or job moves its count. A write that empties
the table first (a restore) clears the rollup instead.

PostgreSQL: API batches of `hired_employees` run side by side under a shared writer lock. Each
reads the rows it replaces with `FOR UPDATE`, in key order (`subtract_replaced`), so a batch
that moves the same rows waits for the first one's commit and then reads what it wrote; the
rollup's cells are updated last, in key order, under their own row locks. A batch whose upsert
meets an id another batch inserted after that read could not count what it replaced, and is
tried again (`ConcurrentInsert`). Writers that hold the table alone (files, restores, reset)
race with none of that; those that count what they replace with a join (big writes) or clear
the rollup take `lock_hire_rollup` as well. An earlier design had every batch take that lock before reading
what it replaces, until its commit: batches then ran one at a time, at half the rows/s
(benchmarks/results/api.md). SQLite's writers already take turns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from gdx_pipeline.core.locks import lock_hire_rollup
from gdx_pipeline.core.warehouse import hire_quarter_sql, hires_by_quarter, is_postgres
from gdx_pipeline.dictionary import HIRED_FROM, HIRED_UNTIL

# The table whose rows the rollup counts.
COUNTED_TABLE = "hired_employees"
KEY = ("year", "quarter", "department_id", "job_id")
# Counted parts are folded into one once there are this many (a big file has many blocks).
_FOLD_PARTS = 32

Part = TypeVar("Part", pa.Table, pa.RecordBatch)


@cache
def _quarter_of_day() -> tuple[int, np.ndarray]:
    """(first day, table): for each UTC day the dictionary admits (days since 1970), year * 4 +
    quarter - 1. A lookup per row is several times cheaper than Arrow's calendar functions."""
    first = (HIRED_FROM.normalize() - pd.Timestamp("1970-01-01", tz="UTC")).days
    days = np.arange(first, (HIRED_UNTIL.normalize() - pd.Timestamp("1970-01-01", tz="UTC")).days + 1).astype("datetime64[D]")
    months = days.astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    return first, ((months // 12 + 1970) * 4 + months % 12 // 3).astype(np.int64)


def count_hires(rows: pa.Table | pa.RecordBatch) -> pa.Table:
    """Rows (with datetime, department_id, job_id) as (year, quarter, department_id, job_id, hires).

    Grouped on two keys, not four: the quarter and the department share one int64 (quarter above
    bit 32, department id below, which the dictionary keeps under 2**31)."""
    first, quarter_of_day = _quarter_of_day()
    micros = rows.column("datetime").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    quarters = quarter_of_day[micros // 86_400_000_000 - first]
    packed = (quarters << 32) | rows.column("department_id").cast(pa.int64()).to_numpy(zero_copy_only=False)
    keys = pa.table({"packed": packed, "job_id": rows.column("job_id").cast(pa.int64())})
    grouped = keys.group_by(["packed", "job_id"]).aggregate([([], "count_all")])
    packed = grouped.column("packed").to_numpy()
    quarters = packed >> 32
    return pa.table(
        {
            "year": quarters // 4,
            "quarter": quarters % 4 + 1,
            "department_id": packed & 0xFFFFFFFF,
            "job_id": grouped.column("job_id"),
            "hires": grouped.column("count_all"),
        }
    )


def _summed(parts: list[pa.Table]) -> pa.Table:
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts).group_by(list(KEY)).aggregate([("hires", "sum")]).rename_columns([*KEY, "hires"])


def array_text(values: Iterable[int]) -> str:
    """PostgreSQL array text of integers (`{1,2,3}`): one string to send, where psycopg dumps a
    list element by element in Python (a third of a 1,000-row API batch's own CPU time)."""
    return "{" + ",".join(map(str, values)) + "}"


class HireRollupChange:
    """What one write does to `hires_by_quarter`: gathered while it writes, applied before it commits."""

    def __init__(self, conn: sa.Connection):
        self.conn = conn
        self._parts: list[pa.Table] = []
        self._locked = False
        self._row_locked = False  # what it replaces is row-locked (`subtract_replaced`): no rollup lock

    def _lock(self) -> None:
        if not self._locked and not self._row_locked:
            lock_hire_rollup(self.conn)
            self._locked = True

    def _keep(self, part: pa.Table) -> None:
        self._parts.append(part)
        if len(self._parts) >= _FOLD_PARTS:
            self._parts = [_summed(self._parts)]

    def add(self, rows: pa.Table | pa.RecordBatch) -> None:
        """Rows this write puts into `hired_employees` (dictionary columns, typed)."""
        if rows.num_rows:
            self._keep(count_hires(rows))

    def counted_ahead(self, rows: pa.Table | pa.RecordBatch) -> pa.Table | None:
        """`rows` counted for `add_counted`, without the connection: any thread may count them."""
        return count_hires(rows)

    def add_counted(self, counts: pa.Table) -> None:
        """Rows this write puts into `hired_employees`, as `counted_ahead` counted them."""
        if counts.num_rows:
            self._keep(counts)

    def counting(self, parts: Iterable[Part]) -> Iterator[Part]:
        """`parts`, each added as it goes by on its way to the table."""
        for part in parts:
            self.add(part)
            yield part

    def subtract_stored(self, rows_sql: str, parameters: tuple = ()) -> None:
        """Rows this write is about to replace: `rows_sql` is the FROM clause that selects them from
        `hired_employees` under the alias `t` (joins, WHERE), read before they are overwritten."""
        self._lock()
        self._subtract(rows_sql, parameters)

    def subtract_replaced(self, target: str, key: str, ids: list[int]) -> int | None:
        """PostgreSQL: the stored rows of `ids` (`key`'s values in `target`, both quoted), which this
        write is about to replace, locked until it commits (`FOR UPDATE`, in key order) and
        subtracted; returns how many there were (None where nothing is counted). A writer sharing
        the table's lock that replaces the same rows waits for this one's commit, then reads what
        it wrote."""
        self._row_locked = True
        locked = (
            f"(SELECT datetime, department_id, job_id FROM {target} WHERE {key} = ANY(%s::bigint[]) ORDER BY {key} FOR UPDATE) AS t"
        )
        return self._subtract(locked, (array_text(ids),))

    def _subtract(self, rows_sql: str, parameters: tuple) -> int:
        """Count the rows `rows_sql` selects (alias `t`) by cell and keep them as a negative part;
        returns how many rows there were."""
        year, quarter = hire_quarter_sql(self.conn, "t.datetime")
        stored = self.conn.exec_driver_sql(
            f"SELECT {year}, {quarter}, t.department_id, t.job_id, count(*) FROM {rows_sql} GROUP BY 1, 2, 3, 4", parameters
        ).all()
        if stored:
            columns = list(zip(*stored))
            counts = {name: pa.array(values, pa.int64()) for name, values in zip(KEY, columns[:4])}
            self._keep(pa.table(counts | {"hires": pc.negate(pa.array(columns[4], pa.int64()))}))
        return sum(row[4] for row in stored)

    def clear(self) -> None:
        """The write empties `hired_employees` first: so does the rollup (before any `add`)."""
        self._lock()
        self.conn.exec_driver_sql(f"DELETE FROM {hires_by_quarter.name}")

    def apply(self) -> None:
        """Add the gathered difference to `hires_by_quarter`; cells that reach 0 go."""
        if not self._parts:
            return
        self._lock()
        delta = _summed(self._parts)
        self._parts = []
        delta = delta.filter(pc.not_equal(delta.column("hires"), 0)).sort_by([(name, "ascending") for name in KEY])
        if delta.num_rows == 0:
            return
        columns = [delta.column(name).to_pylist() for name in (*KEY, "hires")]
        table = hires_by_quarter.name
        update = f"ON CONFLICT (year, quarter, department_id, job_id) DO UPDATE SET hires = {table}.hires + excluded.hires"
        if is_postgres(self.conn):
            self.conn.exec_driver_sql(
                f"INSERT INTO {table} (year, quarter, department_id, job_id, hires) "
                "SELECT * FROM unnest(%s::integer[], %s::smallint[], %s::integer[], %s::integer[], %s::integer[]) "
                f"{update}",
                tuple(array_text(column) for column in columns),
            )
        else:
            self.conn.exec_driver_sql(
                f"INSERT INTO main.{table} (year, quarter, department_id, job_id, hires) VALUES (?, ?, ?, ?, ?) {update}",
                list(zip(*columns)),
            )
        if pc.any(pc.less(delta.column("hires"), 0)).as_py():
            self.conn.exec_driver_sql(f"DELETE FROM {table} WHERE hires <= 0")


class _Unchanged(HireRollupChange):
    """The change of a write to any other table: none."""

    def add(self, rows: pa.Table | pa.RecordBatch) -> None:
        pass

    def counted_ahead(self, rows: pa.Table | pa.RecordBatch) -> pa.Table | None:
        return None

    def add_counted(self, counts: pa.Table) -> None:
        pass

    def counting(self, parts: Iterable[Part]) -> Iterator[Part]:
        return iter(parts)

    def subtract_stored(self, rows_sql: str, parameters: tuple = ()) -> None:
        pass

    def subtract_replaced(self, target: str, key: str, ids: list[int]) -> int | None:
        return None

    def clear(self) -> None:
        pass

    def apply(self) -> None:
        pass


def hire_rollup_change(conn: sa.Connection, table: str) -> HireRollupChange:
    """The rollup change of a write to `table` (one that does nothing unless it is `hired_employees`)."""
    return HireRollupChange(conn) if table == COUNTED_TABLE else _Unchanged(conn)
