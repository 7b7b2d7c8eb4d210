"""`hires_by_quarter` kept in step with `hired_employees`, inside each writer's transaction.

A write changes the rollup by what it adds minus what it replaces: the rows it writes are
counted as they go by (in the writer's process, `count_hires`), the rows they replace are
counted in the database before they are overwritten (`subtract_stored`), and the difference is
appended once, before the commit, to `hires_by_quarter_changes` (`apply`). A row written
unchanged adds one and takes one away; a row moved to another quarter, department or job moves
its count. A write that empties the table first (a restore) clears both tables instead.

The metrics read the rollup plus the changes not yet folded into it. Appending takes no lock
another writer waits for; a write that leaves `FOLD_CELLS` changed cells or more unfolded also
moves every change it can see into the rollup (`fold_hire_changes`), so the metrics never read
many of them. On PostgreSQL a write's change is one row of arrays, so a fold deletes a row per
write, not one per cell. An earlier design had every API batch update the rollup's cells in
place: ~1,000 of them per batch, the same ones for every batch of the same months, so
concurrent batches queued on their row locks and each paid an upsert per cell
(benchmarks/results/api.md).

PostgreSQL: API batches of `hired_employees` run side by side under a shared writer lock. Each
inserts its new ids first (one that another batch is inserting waits for that commit and then
counts as existing), then reads the rows it replaces with `FOR UPDATE`, in key order, and
updates them, so a batch that moves the same rows waits for the first one's commit and then
reads what it wrote (`StagedUpsert._insert_then_update_staged`). Folds take turns under the rollup's advisory lock, which a batch only
tries (one that finds it taken leaves the fold to a later write); a fold deletes and sums, in
one statement, the changes committed before it and those of its own write, so every change is
moved whole or left whole while others keep appending. Writers that hold the table alone
(files, restores, reset) race with none of that. SQLite's writers already take turns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from gdx_pipeline.core.locks import lock_hire_rollup, try_lock_hire_rollup
from gdx_pipeline.core.warehouse import (
    array_text,
    empty_hires_by_quarter,
    hire_quarter_sql,
    hires_by_quarter,
    hires_by_quarter_changes,
    is_postgres,
)
from gdx_pipeline.dictionary import HIRED_FROM, HIRED_UNTIL

# The table whose rows the rollup counts.
COUNTED_TABLE = "hired_employees"
KEY = ("year", "quarter", "department_id", "job_id")
_KEY_SQL = ", ".join(KEY)  # both tables' key columns, as SQL
# Counted parts are summed into one once there are this many (a big file has many blocks).
_FOLD_PARTS = 32
# A write that leaves this many changed cells or more not folded folds them: the metrics read
# fewer than this many beside the rollup's, plus a write's.
FOLD_CELLS = 20_000
Part = TypeVar("Part", pa.Table, pa.RecordBatch)


@cache
def _quarter_of_day() -> tuple[int, np.ndarray]:
    """(first day, table): for each UTC day the dictionary admits (days since 1970), year * 4 +
    quarter - 1. A lookup per row is several times cheaper than Arrow's calendar functions."""
    first = (HIRED_FROM.normalize() - pd.Timestamp("1970-01-01", tz="UTC")).days
    days = np.arange(first, (HIRED_UNTIL.normalize() - pd.Timestamp("1970-01-01", tz="UTC")).days + 1).astype("datetime64[D]")
    months = days.astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    return first, ((months // 12 + 1970) * 4 + months % 12 // 3).astype(np.int64)


# Ids below this share one int64 in `count_hires`: the quarter number (under 2**14) above bit 50,
# the department id above bit 25, the job id below.
_PACKED_ID_LIMIT = 1 << 25
# `count_hires` counts into an array of every cell between the smallest and largest keys when it
# has no more cells than this many per row, plus this many: a few years' quarters, departments
# and jobs.
_DENSE_CELLS_PER_ROW = 4
_DENSE_CELLS_ANYWAY = 1 << 16


def count_hires(rows: pa.Table | pa.RecordBatch) -> pa.Table:
    """Rows (with datetime, department_id, job_id) as (year, quarter, department_id, job_id, hires),
    in that order.

    When the keys span few cells (a file's block, an API batch: a few years, departments and
    jobs), every row's cell is counted in one pass (`numpy.bincount`), no sort. Else ids under
    2**25 (all but the largest the dictionary allows) share one int64 with the quarter, counted
    with one sort (`numpy.unique`), and larger ids are grouped by Arrow on two keys."""
    first, quarter_of_day = _quarter_of_day()
    micros = rows.column("datetime").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    quarters = quarter_of_day[micros // 86_400_000_000 - first]
    departments = rows.column("department_id").to_numpy(zero_copy_only=False).astype(np.int64)
    jobs = rows.column("job_id").to_numpy(zero_copy_only=False).astype(np.int64)
    if not len(jobs):
        return _cells(*(np.zeros(0, np.int64),) * 4)
    lows = [int(keys.min()) for keys in (quarters, departments, jobs)]
    spans = [int(keys.max()) - low + 1 for keys, low in zip((quarters, departments, jobs), lows)]
    if spans[0] * spans[1] * spans[2] <= _DENSE_CELLS_PER_ROW * len(jobs) + _DENSE_CELLS_ANYWAY:
        return _count_hires_dense(quarters, departments, jobs, lows, spans)
    if max(lows[1] + spans[1], lows[2] + spans[2]) > _PACKED_ID_LIMIT:  # the largest id is low + span - 1
        return _count_hires_grouped(quarters, departments, jobs)
    packed, hires = np.unique((quarters << 50) | (departments << 25) | jobs, return_counts=True)
    return _cells(packed >> 50, (packed >> 25) & (_PACKED_ID_LIMIT - 1), packed & (_PACKED_ID_LIMIT - 1), hires)


def _count_hires_dense(quarters: np.ndarray, departments: np.ndarray, jobs: np.ndarray, lows: list[int], spans: list[int]) -> pa.Table:
    """`count_hires` over few cells: each row's cell numbered from the keys' smallest values
    (`lows`) and ranges (`spans`), in key order, and counted in one pass."""
    cell = ((quarters - lows[0]) * spans[1] + (departments - lows[1])) * spans[2] + (jobs - lows[2])
    counts = np.bincount(cell)
    cells = np.flatnonzero(counts)
    in_quarter, job = np.divmod(cells, spans[2])
    quarter, department = np.divmod(in_quarter, spans[1])
    return _cells(quarter + lows[0], department + lows[1], job + lows[2], counts[cells])


def _count_hires_grouped(quarters: np.ndarray, departments: np.ndarray, jobs: np.ndarray) -> pa.Table:
    """`count_hires` for any ids the dictionary admits (under 2**31): the quarter and the department
    share one int64, grouped with the job by Arrow."""
    keys = pa.table({"packed": (quarters << 32) | departments, "job_id": jobs})
    grouped = keys.group_by(["packed", "job_id"]).aggregate([([], "count_all")])
    packed = grouped.column("packed").to_numpy()
    return _cells(packed >> 32, packed & 0xFFFFFFFF, grouped.column("job_id").to_numpy(), grouped.column("count_all").to_numpy())


def _cells(quarters: np.ndarray, departments: np.ndarray, jobs: np.ndarray, hires: np.ndarray) -> pa.Table:
    """The rollup's cells from quarter numbers (year * 4 + quarter - 1) and the other keys."""
    return pa.table(
        {"year": quarters // 4, "quarter": quarters % 4 + 1, "department_id": departments, "job_id": jobs, "hires": hires.astype(np.int64)}
    )


def _summed(parts: list[pa.Table]) -> pa.Table:
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts).group_by(list(KEY)).aggregate([("hires", "sum")]).rename_columns([*KEY, "hires"])


class HireRollupChange:
    """What one write does to `hires_by_quarter`: gathered while it writes, appended before it commits."""

    def __init__(self, conn: sa.Connection):
        self.conn = conn
        self._parts: list[pa.Table] = []

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

    def subtract_stored(self, rows_sql: str, parameters: tuple = ()) -> int | None:
        """Rows this write is about to replace: `rows_sql` is the FROM clause that selects them from
        `hired_employees` under the alias `t` (joins, WHERE, a subquery with row locks), read before
        they are overwritten, counted by cell and kept as a negative part. Returns how many there
        were (None where nothing is counted)."""
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
        """The write empties `hired_employees` first: so do the rollup and its changes (before any `add`)."""
        lock_hire_rollup(self.conn)
        empty_hires_by_quarter(self.conn)

    def apply(self) -> None:
        """Append the gathered difference to `hires_by_quarter_changes` (PostgreSQL: one row of
        arrays, SQLite: a row per cell); fold the changes into the rollup if that leaves
        `FOLD_CELLS` or more of them."""
        if not self._parts:
            return
        delta = _summed(self._parts)
        self._parts = []
        delta = delta.filter(pc.not_equal(delta.column("hires"), 0))
        if delta.num_rows == 0:
            return
        columns = [delta.column(name).to_pylist() for name in (*KEY, "hires")]
        table = hires_by_quarter_changes.name
        if is_postgres(self.conn):
            pending = self.conn.exec_driver_sql(
                f"WITH appended AS (INSERT INTO {table} ({_KEY_SQL}, hires) "
                "VALUES (%s::integer[], %s::smallint[], %s::integer[], %s::integer[], %s::integer[]) "
                "RETURNING cardinality(hires) AS cells) "
                f"SELECT (SELECT cells FROM appended) + (SELECT coalesce(sum(cardinality(hires)), 0) FROM {table})",
                tuple(array_text(column) for column in columns),
            ).scalar_one()
        else:
            self.conn.exec_driver_sql(f"INSERT INTO main.{table} ({_KEY_SQL}, hires) VALUES (?, ?, ?, ?, ?)", list(zip(*columns)))
            # Only folds delete, all at once: rowids count from 1 again after each.
            pending = self.conn.exec_driver_sql(f"SELECT max(rowid) FROM main.{table}").scalar_one()
        if pending >= FOLD_CELLS and try_lock_hire_rollup(self.conn):
            fold_hire_changes(self.conn)


def fold_hire_changes(conn: sa.Connection) -> None:
    """Move every change the transaction can see from `hires_by_quarter_changes` into
    `hires_by_quarter`; cells that reach 0 go. The caller holds the rollup's lock: on PostgreSQL
    the changes deleted are exactly those added, even while other writers append more."""
    rollup, changes = hires_by_quarter.name, hires_by_quarter_changes.name
    update = f"ON CONFLICT ({_KEY_SQL}) DO UPDATE SET hires = {rollup}.hires + excluded.hires"
    if is_postgres(conn):
        arrays = ", ".join(f"moved.{name}" for name in (*KEY, "hires"))
        conn.exec_driver_sql(
            f"WITH moved AS (DELETE FROM {changes} RETURNING {_KEY_SQL}, hires), "
            f"cell AS (SELECT cell.* FROM moved, unnest({arrays}) "
            f"AS cell({_KEY_SQL}, hires)) "
            f"INSERT INTO {rollup} ({_KEY_SQL}, hires) SELECT {_KEY_SQL}, sum(hires) FROM cell "
            f"GROUP BY {_KEY_SQL} HAVING sum(hires) <> 0 ORDER BY {_KEY_SQL} {update}"
        )
    else:
        conn.exec_driver_sql(
            f"INSERT INTO main.{rollup} ({_KEY_SQL}, hires) SELECT {_KEY_SQL}, sum(hires) FROM main.{changes} WHERE true "
            f"GROUP BY {_KEY_SQL} HAVING sum(hires) <> 0 {update}"
        )
        conn.exec_driver_sql(f"DELETE FROM main.{changes}")
    conn.exec_driver_sql(f"DELETE FROM {rollup} WHERE hires <= 0")


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

    def subtract_stored(self, rows_sql: str, parameters: tuple = ()) -> int | None:
        return None

    def clear(self) -> None:
        pass

    def apply(self) -> None:
        pass


def hire_rollup_change(conn: sa.Connection, table: str) -> HireRollupChange:
    """The rollup change of a write to `table` (one that does nothing unless it is `hired_employees`)."""
    return HireRollupChange(conn) if table == COUNTED_TABLE else _Unchanged(conn)
