"""Engines for SQLite and PostgreSQL, and the transactions that write through them.

SQLite runs with foreign keys on, WAL, and writers that queue for one write transaction at a
time (`SqliteWriters`); PostgreSQL connections that sat idle are pinged before use. Every
write goes through `write_transaction`: committed whole, or rolled back whole.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gdx_pipeline.core.sqlite_foreign_keys import raise_for_orphans
from gdx_pipeline.core.sqlite_writes import AUTOCHECKPOINT_BACKSTOP_PAGES, SqliteWriters

# PostgreSQL connections idle in the pool for longer than this are pinged before use.
PING_AFTER_IDLE_SECONDS = 5.0
_WRITES = "gdx_writes"  # execution option: this SQLite transaction writes (BEGIN IMMEDIATE)


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
def write_transaction(engine: sa.Engine, *, foreign_keys_of: str | None = None) -> Iterator[sa.Connection]:
    """A transaction that writes: committed on success, rolled back on error.

    On SQLite writers queue for it and the WAL is checkpointed behind them (see
    `SqliteWriters`); on PostgreSQL callers take the row or advisory locks they need inside it.

    `foreign_keys_of` (SQLite; a bulk load of that table): foreign keys are not checked row by
    row but once, for the whole table, before the commit (`sqlite_foreign_keys`: through the
    keys' indexes, a few seeks); a row without its referenced row rolls everything
    back, as PostgreSQL's `ADD CONSTRAINT` after a bulk load does. SQLite only switches this
    between transactions, so the connection gets it back after this one, whatever happened.
    """
    if is_postgres(engine):
        with engine.begin() as conn:
            yield conn
        return
    writers = SqliteWriters.of(engine)
    with writers.turn(), engine.connect() as conn:
        conn.execution_options(**{_WRITES: True})  # in place: its BEGIN is IMMEDIATE
        raw = conn.connection.driver_connection
        if foreign_keys_of is not None:
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                yield conn
                if foreign_keys_of is not None:
                    raise_for_orphans(conn, foreign_keys_of)
        finally:
            if foreign_keys_of is not None:
                raw.execute("PRAGMA foreign_keys = ON")
    writers.committed()


def is_postgres(engine_or_connection: sa.Engine | sa.Connection) -> bool:
    return engine_or_connection.dialect.name == "postgresql"


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
