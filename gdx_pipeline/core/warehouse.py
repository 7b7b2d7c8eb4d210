"""The warehouse schema: SQLAlchemy tables derived from the data dictionary, the system tables
(ingestion ledger, rejected-row log, quarantined files, files changed while read) and the
metric tables, all on one `metadata`, so `create_schema` makes every one of them.

Engines and write transactions live in `engines` (re-exported here for older imports).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from gdx_pipeline.core.engines import (  # noqa: F401  (re-exported: older imports name them here)
    PING_AFTER_IDLE_SECONDS,
    create_warehouse_engine,
    is_postgres,
    is_sqlite_url,
    is_transient_database_error,
    normalize_database_url,
    write_transaction,
)
from gdx_pipeline.core.locks import lock_hire_rollup, lock_schema, lock_table_for_writes
from gdx_pipeline.core.utc import as_utc  # noqa: F401  (re-exported: older imports name it here)
from gdx_pipeline.dictionary import NAME_MAX_LENGTH, TABLES, TableSpec

# Named primary keys, so the bulk loader can drop and rebuild them by name.
metadata = sa.MetaData(naming_convention={"pk": "pk_%(table_name)s"})


def _sql_type(spec: TableSpec, column: str) -> sa.types.TypeEngine:
    kind = spec.column_kind(column)
    if kind == "integer":
        return sa.Integer()
    if kind == "timestamp":
        return sa.DateTime(timezone=True)
    return sa.String(NAME_MAX_LENGTH)


def _table_from_spec(spec: TableSpec) -> sa.Table:
    """DDL for one dictionary table: types, NOT NULL, primary key, named foreign keys, checks."""
    schema_columns = spec.schema.columns
    columns = []
    for name, column in schema_columns.items():
        columns.append(
            sa.Column(
                name,
                _sql_type(spec, name),
                primary_key=name == spec.primary_key,
                autoincrement=False,
                nullable=bool(column.nullable),
                comment=column.description,
            )
        )
    constraints: list[sa.SchemaItem] = [
        sa.ForeignKeyConstraint([fk.column], [f"{fk.table}.{fk.target_column}"], name=fk_constraint_name(spec.name, fk.column))
        for fk in spec.foreign_keys
    ]
    table = sa.Table(spec.name, metadata, *columns, *constraints, comment=spec.description)
    for fk in spec.foreign_keys:
        # The metrics join and group by these; the FK checks of restores look them up.
        sa.Index(f"ix_{spec.name}_{fk.column}", table.c[fk.column])
    return table


def fk_constraint_name(table: str, column: str) -> str:
    return f"fk_{table}_{column}"


data_tables: dict[str, sa.Table] = {name: _table_from_spec(spec) for name, spec in TABLES.items()}


def only_on(dialect: str, index: sa.Index) -> sa.Index:
    """An index that exists on one engine only (`indexes_on` and `create_all` both honour it)."""
    index.info["dialect"] = dialect
    return index.ddl_if(dialect=dialect)


def indexes_on(table: sa.Table, dialect: str) -> list[sa.Index]:
    """The table's indexes that exist on `dialect`."""
    return [index for index in table.indexes if index.info.get("dialect", dialect) == dialect]


# PostgreSQL: the hire time itself, which metrics, the year list and the year counts range over.
only_on("postgresql", sa.Index("ix_hired_employees_datetime", data_tables["hired_employees"].c.datetime))
# SQLite: only the hire year. Its metrics scan the table anyway (see `metrics`), and an index on
# the time itself puts every new row at a random place in it: a 1,000-row API batch dirtied most
# of its pages and wrote megabytes of WAL per commit (benchmarks/results/api.md). In the year index,
# a batch's new rows land together at the end of their year's entries.
# The year is the UTC timestamp text's ("YYYY-MM-DD HH:MM:SS.ffffff") first four characters;
# literal arguments, so the queries that use this expression match the index's exactly.
SQLITE_HIRE_YEAR = sa.func.substr(
    data_tables["hired_employees"].c.datetime, sa.literal_column("1"), sa.literal_column("4"), type_=sa.String
)
only_on("sqlite", sa.Index("ix_hired_employees_year", SQLITE_HIRE_YEAR))
# SQLite indexes that older versions created and this one no longer wants.
RETIRED_SQLITE_INDEXES = ("ix_hired_employees_datetime",)

ingestion_ledger = sa.Table(
    "ingestion_ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("source", sa.String(512), nullable=False, comment="File name, or 'api'."),
    sa.Column("sha256", sa.String(64), nullable=True, comment="Content hash of a file; NULL for API batches."),
    sa.Column("size_bytes", sa.BigInteger, nullable=True),
    sa.Column("rows_read", sa.BigInteger, nullable=False),
    sa.Column("rows_inserted", sa.BigInteger, nullable=False),
    sa.Column("rows_updated", sa.BigInteger, nullable=False),
    sa.Column("rows_unchanged", sa.BigInteger, nullable=False),
    sa.Column("rows_rejected", sa.BigInteger, nullable=False),
    sa.Column("rows_deleted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    # A file is applied once: its hash is the idempotency key.
    sa.UniqueConstraint("sha256", name="uq_ingestion_ledger_sha256"),
    comment="One row per applied file, API batch or restore: what it did to which table.",
)

rejected_rows = sa.Table(
    "rejected_rows",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("source", sa.String(512), nullable=False, comment="File name, or 'api'."),
    sa.Column("source_sha256", sa.String(64), nullable=True),
    sa.Column("line_number", sa.BigInteger, nullable=True, comment="1-based line in the file, or row index in an API batch."),
    sa.Column("raw_line", sa.Text, nullable=False, comment="The line exactly as it arrived, without its line ending."),
    sa.Column("reasons", sa.JSON, nullable=False, comment="List of reasons, one per broken rule."),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_rejected_rows_table_source", "table_name", "source"),
    comment="Every row that did not land in its table, with why.",
)

quarantined_files = sa.Table(
    "quarantined_files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("file_name", sa.String(512), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
    comment="Files that could not be read at all, moved to quarantine/.",
)

files_changed_while_read = sa.Table(
    "files_changed_while_read",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("file_name", sa.String(512), nullable=False),
    sa.Column(
        "sha256", sa.String(64), nullable=False, comment="Hash of the file before it was read; empty if it changed while being hashed."
    ),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_files_changed_while_read_file_name", "file_name"),
    comment="Landing files that changed while being read: nothing of them was applied and they were left for the next run. "
    "A file's rows go once it is applied, skipped or quarantined (the third change in a row quarantines it).",
)


def _described(table: str, column: str) -> str:
    """A dictionary column's description, reused where a metric table copies that column."""
    return TABLES[table].schema.columns[column].description


# The metric tables: what the metric assets store for each year (see `metrics`).
QUARTERS = ("Q1", "Q2", "Q3", "Q4")
_QUARTER_MONTHS = {"Q1": "January to March", "Q2": "April to June", "Q3": "July to September", "Q4": "October to December"}
_YEAR = "Hiring year (UTC) the row is about."
_COMPUTED_AT = "When the metric asset computed this row (UTC)."

metric_quarterly_hires = sa.Table(
    "metric_quarterly_hires",
    metadata,
    sa.Column("year", sa.Integer, primary_key=True, autoincrement=False, comment=_YEAR),
    sa.Column("department_id", sa.Integer, primary_key=True, autoincrement=False, comment=_described("departments", "id")),
    sa.Column("job_id", sa.Integer, primary_key=True, autoincrement=False, comment=_described("jobs", "id")),
    sa.Column("department", sa.String(NAME_MAX_LENGTH), nullable=False, comment=_described("departments", "department")),
    sa.Column("job", sa.String(NAME_MAX_LENGTH), nullable=False, comment=_described("jobs", "job")),
    *(
        sa.Column(
            q.lower(),
            sa.Integer,
            nullable=False,
            comment=f"Employees hired into this department and job in {q} ({_QUARTER_MONTHS[q]}, UTC).",
        )
        for q in QUARTERS
    ),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, comment=_COMPUTED_AT),
    comment="Hires per department and job in each quarter (UTC) of a year; one row per pair with a hire that year.",
)

metric_departments_above_mean = sa.Table(
    "metric_departments_above_mean",
    metadata,
    sa.Column("year", sa.Integer, primary_key=True, autoincrement=False, comment=_YEAR),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False, comment=_described("departments", "id")),
    sa.Column("department", sa.String(NAME_MAX_LENGTH), nullable=False, comment=_described("departments", "department")),
    sa.Column("hired", sa.Integer, nullable=False, comment="Employees the department hired in the year."),
    sa.Column(
        "mean_hired",
        sa.Float,
        nullable=False,
        comment="The year's mean hires per department, over the departments with at least one hire that year.",
    ),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, comment=_COMPUTED_AT),
    comment="Departments that hired more than the year's mean per hiring department.",
)

METRIC_TABLES = (metric_quarterly_hires, metric_departments_above_mean)

# What both metrics read: hires counted per UTC quarter, department and job, a few thousand rows
# however many employees there are. Every writer of `hired_employees` keeps it in step in its
# own transaction (`hire_rollup`): each appends its change to `hires_by_quarter_changes` below,
# which the metrics add to the rollup and which is folded into it every 20,000 cells.
# Nothing else writes either, and neither is backed up (a restore rebuilds them from the rows it
# puts back).
ROLLUP_FILLFACTOR = 50
hires_by_quarter = sa.Table(
    "hires_by_quarter",
    metadata,
    # Key in this order: a year's rows come grouped by department and job, as both metrics read them.
    sa.Column("year", sa.Integer, primary_key=True, autoincrement=False, comment="Hiring year (UTC)."),
    sa.Column("department_id", sa.Integer, primary_key=True, autoincrement=False, comment=_described("hired_employees", "department_id")),
    sa.Column("job_id", sa.Integer, primary_key=True, autoincrement=False, comment=_described("hired_employees", "job_id")),
    sa.Column("quarter", sa.SmallInteger, primary_key=True, autoincrement=False, comment="Quarter (UTC): 1 is January to March."),
    sa.Column(
        "hires",
        sa.Integer,
        nullable=False,
        comment="Rows of hired_employees with this quarter, department and job, before the changes in hires_by_quarter_changes "
        "(a row exists only while above 0).",
    ),
    comment="Hires per UTC quarter, department and job (plus hires_by_quarter_changes): hired_employees counted, kept in step.",
    # PostgreSQL: a fold updates most of a year's rows at once (~8,800 after 27 API batches of
    # one year); half-empty pages keep each new row version on its page without a new index
    # entry (a HOT update), which halved a fold (~150 -> ~65 ms).
    postgresql_with={"fillfactor": ROLLUP_FILLFACTOR},
)

# Writes' changes to `hires_by_quarter`, not yet folded into it: appended, so no two writers
# contend for a row, where updating the rollup's cells in place made concurrent API batches queue
# on the same rows (benchmarks/results/api.md). On PostgreSQL a row holds one write's cells as
# parallel arrays: a row per cell cost as much again to delete at each fold as to append, about
# 2 ms of server CPU per 1,000-row batch. SQLite, which has no arrays and whose writers take
# turns, holds one cell per row. No key and no index: the table is only read whole.
def _cell_column(name: str, sql_type: type[sa.types.TypeEngine], comment: str) -> sa.Column:
    return sa.Column(name, sa.ARRAY(sql_type).with_variant(sql_type(), "sqlite"), nullable=False, comment=comment)


hires_by_quarter_changes = sa.Table(
    "hires_by_quarter_changes",
    metadata,
    _cell_column("year", sa.Integer, "Hiring year (UTC)."),
    _cell_column("quarter", sa.SmallInteger, "Quarter (UTC): 1 is January to March."),
    _cell_column("department_id", sa.Integer, _described("hired_employees", "department_id")),
    _cell_column("job_id", sa.Integer, _described("hired_employees", "job_id")),
    _cell_column("hires", sa.Integer, "Hires the write added to the cell (negative: took away)."),
    comment="Changes of writes to hires_by_quarter not yet folded into it (PostgreSQL: a write's cells per row, "
    "as arrays); the metrics read both.",
)


def hire_quarter_sql(conn: sa.Connection, column: str) -> tuple[str, str]:
    """SQL for the UTC year and quarter (1-4) of a `hired_employees.datetime` value `column`,
    whatever the session's time zone: PostgreSQL converts the instant to UTC first; SQLite holds
    it as UTC text "YYYY-MM-DD HH:MM:SS.ffffff"."""
    if is_postgres(conn):
        utc = f"({column} AT TIME ZONE 'UTC')"
        return f"CAST(date_part('year', {utc}) AS integer)", f"CAST(date_part('quarter', {utc}) AS integer)"
    return f"CAST(substr({column}, 1, 4) AS integer)", f"(CAST(substr({column}, 6, 2) AS integer) + 2) / 3"


def rebuild_hires_by_quarter(conn: sa.Connection) -> None:
    """Count `hires_by_quarter` afresh from `hired_employees`, in the caller's transaction, with
    the locks every writer of them takes, in their order."""
    lock_table_for_writes(conn, TABLES["hired_employees"])
    lock_hire_rollup(conn)
    year, quarter = hire_quarter_sql(conn, "datetime")
    empty_hires_by_quarter(conn)
    conn.exec_driver_sql(
        f"INSERT INTO {hires_by_quarter.name} (year, quarter, department_id, job_id, hires) "
        f"SELECT {year}, {quarter}, department_id, job_id, count(*) FROM hired_employees GROUP BY 1, 2, 3, 4"
    )


def empty_hires_by_quarter(conn: sa.Connection) -> None:
    """Delete the rollup and its pending changes (the caller holds the rollup's lock)."""
    conn.exec_driver_sql(f"DELETE FROM {hires_by_quarter_changes.name}")
    conn.exec_driver_sql(f"DELETE FROM {hires_by_quarter.name}")


def array_text(values: Iterable[int]) -> str:
    """PostgreSQL array text of integers (`{1,2,3}`): one string to send, where psycopg dumps a
    list element by element in Python (a third of a 1,000-row API batch's own CPU time)."""
    return "{" + ",".join(map(str, values)) + "}"


def quote_identifier(conn: sa.Connection, name: str) -> str:
    """A table or column name from the dictionary, quoted for the connection's dialect."""
    return conn.dialect.identifier_preparer.quote(name)


def create_schema(engine: sa.Engine) -> None:
    """Create every table and index that does not exist yet (idempotent): a warehouse made by an
    older version gets the tables added since (the metric tables, say) the same way."""
    with write_transaction(engine) as conn:
        lock_schema(conn)  # two processes starting at once must not race on CREATE TABLE
        rollup_missing = not sa.inspect(conn).has_table(hires_by_quarter.name)
        metadata.create_all(conn)
        if rollup_missing:  # a warehouse made before the rollup: count what it holds, once
            rebuild_hires_by_quarter(conn)
        elif is_postgres(conn):  # one made while the rollup was at fillfactor 100 (a9561c6 to 665b217)
            _set_rollup_fillfactor(conn)
        if not is_postgres(conn):
            for name in RETIRED_SQLITE_INDEXES:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")


def _set_rollup_fillfactor(conn: sa.Connection) -> None:
    """`hires_by_quarter` at `ROLLUP_FILLFACTOR` (PostgreSQL), if it is not already."""
    wanted = f"fillfactor={ROLLUP_FILLFACTOR}"
    options = conn.exec_driver_sql(f"SELECT reloptions FROM pg_class WHERE oid = '{hires_by_quarter.name}'::regclass").scalar_one()
    if wanted not in (options or []):
        conn.exec_driver_sql(f"ALTER TABLE {hires_by_quarter.name} SET ({wanted})")
