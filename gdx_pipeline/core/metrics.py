"""The two hiring metrics the stakeholders asked for, computed in the database for one year.

They read `hires_by_quarter`, the rollup every writer of `hired_employees` keeps in step in its
own transaction (`hire_rollup`), plus the changes writes appended to it and no one has
folded in yet (`hires_by_quarter_changes`): tens of thousands of rows at most however many
employees, and never stale.
The same metrics computed from `hired_employees` itself (`full_scan=True`, and the query
builders by default) are the oracle the tests and the benchmark hold the rollup to.

Over `hired_employees`, quarters are decided in SQL by comparing each hire's timestamp with the UTC instants at which
the year's months 1, 4, 7 and 10 begin ("quarter from the month"): no date functions, so
SQLite (timestamps stored as UTC text) and PostgreSQL (timestamptz, whatever the session's
TimeZone) agree exactly. `extract('quarter')` is avoided on purpose: on SQLite it compiles to
`strftime('quarter')`, which is silently wrong.

The mean of `departments_above_mean` is taken over the departments with at least one hire in
the year (departments without hires do not drag it down). Every ordering ends in ids, so ties
come back in the same order from both engines.
"""

from __future__ import annotations

import operator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from gdx_pipeline.core.atomic_files import write_text_atomically
from gdx_pipeline.core.utc import as_utc
from gdx_pipeline.core.warehouse import (  # noqa: F401  (the metric tables are re-exported: their DDL is the warehouse's)
    METRIC_TABLES,
    QUARTERS,
    SQLITE_HIRE_YEAR,
    create_schema,
    data_tables,
    hires_by_quarter,
    hires_by_quarter_changes,
    is_postgres,
    metric_departments_above_mean,
    metric_quarterly_hires,
    write_transaction,
)
from gdx_pipeline.dictionary import HIRED_FROM, HIRED_UNTIL

QUARTERLY_COLUMNS = ["department", "job", *QUARTERS]
ABOVE_MEAN_COLUMNS = ["id", "department", "hired"]
FIRST_YEAR = HIRED_FROM.year
LAST_YEAR = HIRED_UNTIL.year

_hired = data_tables["hired_employees"]
_departments = data_tables["departments"]
_jobs = data_tables["jobs"]


class InvalidYearError(ValueError):
    """A year the metrics cannot be computed for; the message says what is accepted."""


def hiring_year(value: object) -> int:
    """`value` as a hiring year, or InvalidYearError: an integer (or its digits) within the dictionary's bounds."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool):
        raise InvalidYearError(f"year must be a whole number such as 2021, not {value!r}")
    try:
        year = operator.index(value)
    except TypeError:
        raise InvalidYearError(f"year must be a whole number such as 2021, not {value!r}") from None
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidYearError(f"year {year} is outside the hiring dates the data dictionary admits ({FIRST_YEAR}-{LAST_YEAR})")
    return year


def quarter_starts(year: int) -> list[datetime]:
    """The five UTC instants that bound the year's quarters: Jan 1, Apr 1, Jul 1, Oct 1, next Jan 1."""
    return [datetime(year, month, 1, tzinfo=UTC) for month in (1, 4, 7, 10)] + [datetime(year + 1, 1, 1, tzinfo=UTC)]


def _read_from_rows(column: sa.Column, postgres: bool) -> sa.ColumnElement:
    """A `hired_employees` column as the year's aggregates should read it.

    On SQLite it is written `+column`, which keeps the value but stops the planner from walking
    that column's index (for the year's range, or in GROUP BY order) and fetching each of
    millions of rows from the table one by one, several times slower than a plain scan of the
    table (benchmarks/results/metrics.md). PostgreSQL weighs its indexes against a
    parallel scan well by itself.
    """
    return (
        column.label(column.name)
        if postgres
        else UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type).label(column.name)
    )


def _in_year(year: int, when: sa.ColumnElement | None = None) -> sa.ColumnElement[bool]:
    starts = quarter_starts(year)
    when = _hired.c.datetime if when is None else when
    return sa.and_(when >= starts[0], when < starts[4])


def _by_codepoint(column: sa.ColumnElement, postgres: bool) -> sa.ColumnElement:
    """Names ordered by code point on both engines: SQLite's default BINARY collation does that;
    PostgreSQL would otherwise follow the database's locale (en_US ignores case and punctuation)."""
    return column.collate("C") if postgres else column


_CELL = tuple(hires_by_quarter_changes.c.keys())  # year, quarter, department_id, job_id, hires


def _counted_hires(postgres: bool, year: int | None = None) -> sa.Subquery:
    """The rollup's cells (of `year`, if given) and the changes not yet folded into them
    (`hire_rollup`; on PostgreSQL each change row holds a write's cells as arrays): a cell's
    hires are the sum of its rows here."""
    rollup, changes = hires_by_quarter, hires_by_quarter_changes
    stored = sa.select(*(rollup.c[name] for name in _CELL))
    if postgres:
        cell = sa.func.unnest(*(changes.c[name] for name in _CELL)).table_valued(*_CELL).render_derived(name="cell")
        pending = sa.select(*(cell.c[name] for name in _CELL)).select_from(changes).join(cell, sa.true())
    else:
        cell = changes
        pending = sa.select(*(changes.c[name] for name in _CELL))
    if year is not None:
        stored, pending = stored.where(rollup.c.year == year), pending.where(cell.c.year == year)
    return sa.union_all(stored, pending).subquery("counted_hires")


def _quarter_counts_from_rollup(year: int, postgres: bool) -> sa.Select:
    counted = _counted_hires(postgres, year)
    return (
        sa.select(
            counted.c.department_id,
            counted.c.job_id,
            *(
                sa.func.sum(sa.case((counted.c.quarter == i + 1, counted.c.hires), else_=0)).label(q.lower())
                for i, q in enumerate(QUARTERS)
            ),
        )
        .group_by(counted.c.department_id, counted.c.job_id)
        .having(sa.func.sum(counted.c.hires) > 0)
    )


def quarterly_hires_query(year: int, postgres: bool, *, rollup: bool = False) -> sa.Select:
    """Hires per (department, job) per quarter: aggregated on the ids first (from `hired_employees`,
    or from `hires_by_quarter` with `rollup`), then named."""
    counts = (_quarter_counts_from_rollup(year, postgres) if rollup else _quarter_counts_from_rows(year, postgres)).cte("quarter_counts")
    return (
        sa.select(
            counts.c.department_id,
            _departments.c.department,
            counts.c.job_id,
            _jobs.c.job,
            *(counts.c[q.lower()] for q in QUARTERS),
        )
        .join_from(counts, _departments, _departments.c.id == counts.c.department_id)
        .join(_jobs, _jobs.c.id == counts.c.job_id)
        .order_by(
            _by_codepoint(_departments.c.department, postgres),
            _by_codepoint(_jobs.c.job, postgres),
            counts.c.department_id,
            counts.c.job_id,
        )
    )


def _quarter_counts_from_rows(year: int, postgres: bool) -> sa.Select:
    starts = quarter_starts(year)
    when = _read_from_rows(_hired.c.datetime, postgres).element
    department_id = _read_from_rows(_hired.c.department_id, postgres)
    job_id = _read_from_rows(_hired.c.job_id, postgres)
    return (
        sa.select(
            department_id,
            job_id,
            *(
                sa.func.sum(sa.case((sa.and_(when >= starts[i], when < starts[i + 1]), 1), else_=0)).label(q.lower())
                for i, q in enumerate(QUARTERS)
            ),
        )
        .where(_in_year(year, when))
        .group_by(department_id.element, job_id.element)
    )


def _hires_per_department_id(year: int, postgres: bool, *, rollup: bool = False) -> sa.Select:
    if rollup:
        counted = _counted_hires(postgres, year)
        hired = sa.func.sum(counted.c.hires)
        return sa.select(counted.c.department_id, hired.label("hired")).group_by(counted.c.department_id).having(hired > 0)
    department_id = _read_from_rows(_hired.c.department_id, postgres)
    return (
        sa.select(department_id, sa.func.count().label("hired"))
        .where(_in_year(year, _read_from_rows(_hired.c.datetime, postgres).element))
        .group_by(department_id.element)
    )


def departments_above_mean_query(year: int, postgres: bool, *, rollup: bool = False) -> sa.Select:
    """One statement: hires per department (from `hired_employees`, or from `hires_by_quarter`
    with `rollup`), their mean, and the departments above it.

    The one-row `stats` is LEFT JOINed to the departments above it, so the mean comes back
    even when no department beats it (then a single row with NULL id).
    """
    per_department = _hires_per_department_id(year, postgres, rollup=rollup).cte("hired_per_department")
    stats = sa.select(
        sa.func.avg(sa.cast(per_department.c.hired, sa.Float)).label("mean_hired"),
        sa.func.count().label("departments_hiring"),
    ).cte("stats")
    above = (
        sa.select(_departments.c.id, _departments.c.department, per_department.c.hired)
        .join_from(per_department, _departments, _departments.c.id == per_department.c.department_id)
        .subquery("above")
    )
    return (
        sa.select(stats.c.mean_hired, stats.c.departments_hiring, above.c.id, above.c.department, above.c.hired)
        .select_from(stats.outerjoin(above, above.c.hired > stats.c.mean_hired))
        .order_by(above.c.hired.desc(), _by_codepoint(above.c.department, postgres), above.c.id)
    )


def quarterly_hires_by_id(engine: sa.Engine, year: int, *, full_scan: bool = False) -> pd.DataFrame:
    """The quarterly metric with the department and job ids beside the names (what the warehouse table stores)."""
    year = hiring_year(year)
    with engine.connect() as conn:
        # Plain tuples: pandas probes each SQLAlchemy Row for attributes, which costs more than the query.
        rows = [tuple(row) for row in conn.execute(quarterly_hires_query(year, is_postgres(conn), rollup=not full_scan))]
    frame = pd.DataFrame(rows, columns=["department_id", "department", "job_id", "job", *QUARTERS])
    for column in ("department_id", "job_id", *QUARTERS):
        frame[column] = frame[column].astype("int64")
    return frame


def quarterly_hires(engine: sa.Engine, year: int, *, full_scan: bool = False) -> pd.DataFrame:
    """Columns department, job, Q1..Q4: hires per quarter (UTC) of `year`, for each department
    and job with at least one hire that year, ordered by department, then job. Empty for a year without hires."""
    return quarterly_hires_by_id(engine, year, full_scan=full_scan)[QUARTERLY_COLUMNS]


def departments_above_mean(engine: sa.Engine, year: int, *, full_scan: bool = False) -> tuple[pd.DataFrame, float | None]:
    """(DataFrame[id, department, hired], mean): departments that hired more than the mean per
    hiring department in `year`, most hires first (ties by name, then id). The mean is None
    when nobody was hired that year (and the frame is empty)."""
    year = hiring_year(year)
    with engine.connect() as conn:
        rows = conn.execute(departments_above_mean_query(year, is_postgres(conn), rollup=not full_scan)).all()
    mean = rows[0].mean_hired if rows and rows[0].departments_hiring else None
    frame = pd.DataFrame([(r.id, r.department, r.hired) for r in rows if r.id is not None], columns=ABOVE_MEAN_COLUMNS)
    frame = frame.astype({"id": "int64", "hired": "int64"})
    return frame, (float(mean) if mean is not None else None)


def hires_per_department(engine: sa.Engine, year: int, *, full_scan: bool = False) -> pd.DataFrame:
    """Columns id, department, hired for every department with a hire in `year`, by name then id (for charts)."""
    year = hiring_year(year)
    with engine.connect() as conn:
        postgres = is_postgres(conn)
        per_department = _hires_per_department_id(year, postgres, rollup=not full_scan).subquery()
        rows = conn.execute(
            sa.select(_departments.c.id, _departments.c.department, per_department.c.hired)
            .join_from(per_department, _departments, _departments.c.id == per_department.c.department_id)
            .order_by(_by_codepoint(_departments.c.department, postgres), _departments.c.id)
        ).all()
    return pd.DataFrame([tuple(row) for row in rows], columns=ABOVE_MEAN_COLUMNS).astype({"id": "int64", "hired": "int64"})


def hires_by_department(quarterly: pd.DataFrame) -> pd.DataFrame:
    """Columns id, department, Q1..Q4, hired: the quarterly metric (with ids, as from
    `quarterly_hires_by_id`) summed over jobs, in its order (department name, then id)."""
    columns = ["id", "department", *QUARTERS, "hired"]
    if quarterly.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c != "department" else "object") for c in columns})
    grouped = quarterly.groupby(["department_id", "department"], sort=False)[list(QUARTERS)].sum().reset_index()
    grouped = grouped.rename(columns={"department_id": "id"})
    grouped["hired"] = grouped[list(QUARTERS)].sum(axis=1)
    return grouped[columns]


def ranked_by_hires(by_department: pd.DataFrame) -> pd.DataFrame:
    """Most hires first; ties by name (code point order), then id: the order of `departments_above_mean`."""
    return by_department.sort_values(["hired", "department", "id"], ascending=[False, True, True], kind="stable").reset_index(drop=True)


def hires_in_year(engine: sa.Engine, year: int) -> int:
    """How many employees `hired_employees` says were hired in `year` (UTC)."""
    year = hiring_year(year)
    with engine.connect() as conn:
        in_year = _in_year(year) if is_postgres(conn) else SQLITE_HIRE_YEAR == f"{year:04d}"
        return conn.execute(sa.select(sa.func.count()).select_from(_hired).where(in_year)).scalar_one()


def years_with_hires(engine: sa.Engine, *, full_scan: bool = False) -> dict[int, int]:
    """{year: hires} for every year with at least one hire, from `hires_by_quarter`; with
    `full_scan`, from an index of `hired_employees` rather than the table.

    PostgreSQL: min/max of the indexed `datetime` bound the range, and each year in it is counted
    over its own index range. SQLite: one pass over its index of hire years, grouped.
    """
    with engine.connect() as conn:
        if not full_scan:
            counted = _counted_hires(is_postgres(conn))
            hires = sa.func.sum(counted.c.hires)
            counts = sa.select(counted.c.year, hires).group_by(counted.c.year).having(hires > 0).order_by(counted.c.year)
            return {int(year): int(count) for year, count in conn.execute(counts)}
        if not is_postgres(conn):
            counts = sa.select(SQLITE_HIRE_YEAR, sa.func.count()).group_by(SQLITE_HIRE_YEAR)
            return {int(found): count for found, count in conn.execute(counts)}
        first, last = conn.execute(sa.select(sa.func.min(_hired.c.datetime), sa.func.max(_hired.c.datetime))).one()
        if first is None:
            return {}
        years = {}
        for year in range(as_utc(first).year, as_utc(last).year + 1):
            count = conn.execute(sa.select(sa.func.count()).select_from(_hired).where(_in_year(year))).scalar_one()
            if count:
                years[year] = count
    return years


def ensure_metric_tables(engine: sa.Engine) -> None:
    """Create the metric tables where missing (kept for older callers: `create_schema` makes them
    now, with every other table, and adds them to a warehouse made before they existed)."""
    create_schema(engine)


def store_quarterly_hires(engine: sa.Engine, year: int, frame: pd.DataFrame, computed_at: datetime) -> None:
    """Replace the year's rows of `metric_quarterly_hires` with `frame` (which carries the ids)."""
    rows = [
        {
            "year": year,
            "department_id": int(r.department_id),
            "department": r.department,
            "job_id": int(r.job_id),
            "job": r.job,
            **{q.lower(): int(getattr(r, q)) for q in QUARTERS},
            "computed_at": computed_at,
        }
        for r in frame.itertuples(index=False)
    ]
    _replace_year(engine, metric_quarterly_hires, year, rows)


def store_departments_above_mean(engine: sa.Engine, year: int, frame: pd.DataFrame, mean: float | None, computed_at: datetime) -> None:
    rows = [
        {"year": year, "id": int(r.id), "department": r.department, "hired": int(r.hired), "mean_hired": mean, "computed_at": computed_at}
        for r in frame.itertuples(index=False)
    ]
    _replace_year(engine, metric_departments_above_mean, year, rows)


def _replace_year(engine: sa.Engine, table: sa.Table, year: int, rows: list[dict]) -> None:
    with write_transaction(engine) as conn:
        conn.execute(table.delete().where(table.c.year == year))
        if rows:
            conn.execute(table.insert(), rows)


def stored_quarter_totals(engine: sa.Engine, year: int) -> dict[str, int]:
    """Q1..Q4 summed over what `metric_quarterly_hires` holds for `year`."""
    table = metric_quarterly_hires
    with engine.connect() as conn:
        totals = conn.execute(
            sa.select(*(sa.func.coalesce(sa.func.sum(table.c[q.lower()]), 0) for q in QUARTERS)).where(table.c.year == year)
        ).one()
    return {q: int(t) for q, t in zip(QUARTERS, totals)}


def stored_departments_above_mean(engine: sa.Engine, year: int) -> pd.DataFrame:
    """What `metric_departments_above_mean` holds for `year`, with the mean each row was compared to."""
    table = metric_departments_above_mean
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.id, table.c.department, table.c.hired, table.c.mean_hired)
            .where(table.c.year == year)
            .order_by(table.c.hired.desc(), _by_codepoint(table.c.department, is_postgres(conn)), table.c.id)
        ).all()
    return pd.DataFrame(rows, columns=["id", "department", "hired", "mean_hired"])


def write_csv_report(frame: pd.DataFrame, path: Path) -> Path:
    return write_text_atomically(path, frame.to_csv(index=False))


def quarterly_hires_csv_path(reports: Path, year: int) -> Path:
    return reports / f"quarterly_hires_{year}.csv"


def departments_above_mean_csv_path(reports: Path, year: int) -> Path:
    return reports / f"departments_above_mean_hires_{year}.csv"
