"""The warehouse: SQLAlchemy tables derived from the data dictionary, plus the system tables
(ingestion ledger, rejected-row log, quarantined files), and engines for SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gdx_pipeline.core.sqlite_writes import AUTOCHECKPOINT_BACKSTOP_PAGES, SqliteWriters
from gdx_pipeline.dictionary import NAME_MAX_LENGTH, TABLES, TableSpec

# PostgreSQL connections idle in the pool for longer than this are pinged before use.
PING_AFTER_IDLE_SECONDS = 5.0
_WRITES = "gdx_writes"  # execution option: this SQLite transaction writes (BEGIN IMMEDIATE)

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
SQLITE_HIRE_YEAR = sa.func.substr(data_tables["hired_employees"].c.datetime, sa.literal_column("1"), sa.literal_column("4"), type_=sa.String)
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
    sa.Column("sha256", sa.String(64), nullable=False, comment="Hash of the file before it was read; empty if it changed while being hashed."),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_files_changed_while_read_file_name", "file_name"),
    comment="Landing files that changed while being read: nothing of them was applied and they were left for the next run. "
    "A file's rows go once it is applied, skipped or quarantined (the third change in a row quarantines it).",
)


def normalize_database_url(url: str) -> str:
    """Name the driver: bare `postgresql://` becomes psycopg 3, which the COPY loader needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite_url(url: str) -> bool:
    """The warehouse at `url` is a SQLite database (embedded), not a PostgreSQL server."""
    return make_url(url).get_backend_name() == "sqlite"


def create_warehouse_engine(url: str, *, ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> sa.Engine:
    url = normalize_database_url(url)
    if is_sqlite_url(url):
        engine = sa.create_engine(url, connect_args={"timeout": 60})
        _configure_sqlite(engine)
        return engine
    engine = sa.create_engine(url)
    _ping_idle_connections(engine, ping_after_idle_seconds)
    return engine


def _ping_idle_connections(engine: sa.Engine, idle_seconds: float) -> None:
    """Ping a pooled connection before handing it out when it sat unused for `idle_seconds`.

    `pool_pre_ping` pings at every checkout: one more round trip per API batch, which costs
    the PostgreSQL API rows/s. A connection checked in moments ago is as alive as a ping would
    say a moment later; one that sat idle may have been cut by a restart, a proxy or
    `idle_session_timeout`, and is replaced (the pool's documented DisconnectionError protocol).
    """

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):  # noqa: ANN001
        record.info["gdx_checked_in"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy):  # noqa: ANN001
        checked_in = record.info.get("gdx_checked_in")
        if checked_in is None or time.monotonic() - checked_in < idle_seconds:
            return  # new, or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise sa.exc.DisconnectionError(f"idle connection failed its ping: {error}") from error
        if not alive:
            raise sa.exc.DisconnectionError("idle connection failed its ping")


def _configure_sqlite(engine: sa.Engine) -> None:
    """Foreign keys on, WAL for concurrent readers, and transactions that say what they are.

    pysqlite's own transaction handling defers BEGIN; SQLAlchemy's documented recipe hands
    transaction control back to us. A `write_transaction` begins IMMEDIATE, taking the write
    lock up front (in its turn); every other transaction is a reader and begins DEFERRED, so
    it neither waits for writers nor makes them wait.
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        # A 1,000-row batch dirties hundreds of index pages: with the default 2 MB cache and a
        # checkpoint inside nearly every commit, a batch's write took longer.
        # Checkpoints run in the background (`SqliteWriters`); the automatic one, inside some
        # unlucky writer's commit, is only a backstop.
        cursor.execute("PRAGMA cache_size = -16384")
        cursor.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_BACKSTOP_PAGES}")
        cursor.execute("PRAGMA journal_size_limit = 67108864")
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):  # noqa: ANN001
        writes = connection.get_execution_options().get(_WRITES, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN DEFERRED")


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that writes: committed on success, rolled back on error.

    On SQLite writers queue for it and the WAL is checkpointed behind them (see
    `SqliteWriters`); on PostgreSQL callers take the row or advisory locks they need inside it.
    """
    if is_postgres(engine):
        with engine.begin() as conn:
            yield conn
        return
    writers = SqliteWriters.of(engine)
    with writers.turn(), engine.connect() as conn:
        conn.execution_options(**{_WRITES: True})  # in place: its BEGIN is IMMEDIATE
        with conn.begin():
            yield conn
    writers.committed()


def is_postgres(engine_or_connection: sa.Engine | sa.Connection) -> bool:
    return engine_or_connection.dialect.name == "postgresql"


def create_schema(engine: sa.Engine) -> None:
    """Create every table and index that does not exist yet (idempotent)."""
    if is_postgres(engine):
        # Two processes starting at once must not race on CREATE TABLE.
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7420001)")
            metadata.create_all(conn)
    else:
        with write_transaction(engine) as conn:
            metadata.create_all(conn)
            for name in RETIRED_SQLITE_INDEXES:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")


# SQLite result codes of a lock held by another connection: worth waiting for, unlike the rest
# of what sqlite3 raises as OperationalError ("no such table", "unable to open database file").
_SQLITE_TRANSIENT_CODES = {"SQLITE_BUSY", "SQLITE_LOCKED"}


def is_transient_database_error(error: BaseException) -> bool:
    """The database may well succeed if asked again in a moment: a dropped or refused connection,
    a server restarting, a deadlock or serialization failure, a full connection pool, a lock.

    PostgreSQL (psycopg) reports all of those, and only those, as OperationalError; SQLite uses
    OperationalError for broken schemas and paths too, so there only its lock codes count. A
    refusal (IntegrityError, a bad value, a missing table) is never transient.
    """
    if isinstance(error, (sa.exc.DisconnectionError, sa.exc.TimeoutError)):
        return True
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if not isinstance(error, sa.exc.OperationalError):
        return False
    if isinstance(error.orig, sqlite3.Error):
        return getattr(error.orig, "sqlite_errorname", None) in _SQLITE_TRANSIENT_CODES
    return True


def as_utc(value: datetime | str) -> datetime:
    """A timestamp read back from the warehouse, as an aware UTC datetime: SQLite hands them back
    naive (they are stored in UTC), and an aggregate's (min, max) even as text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
