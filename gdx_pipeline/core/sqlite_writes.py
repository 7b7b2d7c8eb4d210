"""Writers of one SQLite database: a queue to take turns in, and a checkpointer behind them.

SQLite has one writer at a time. Left to itself, a writer that finds the database busy polls
with growing sleeps (up to 100 ms each) and may be overtaken by one that came later, so under
concurrent writers a short transaction could wait many times its own length. Here a writer blocks
until the previous one is done: a thread lock queues the threads of this process, an flock on
`<database>-writer.lock` (beside the -wal and -shm files) queues processes.

In WAL mode a commit appends pages to the -wal file, and a checkpoint copies them back into
the database with an fsync. SQLite does that inside the commit that crosses its threshold: with
1,000-row batches every tenth writer stalled, and the queue behind it (the API's p99).
Here a background thread checkpoints shortly after writes (PASSIVE: it never blocks a writer
or a reader), so no writer pays for it; SQLite's own checkpoint stays as a backstop, at a WAL
size the thread never lets it reach.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

try:
    import fcntl
except ImportError:  # Windows: SQLite's busy handler alone orders the writers of several processes
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

AUTOCHECKPOINT_BACKSTOP_PAGES = 100_000  # ~400 MB of WAL: only if the background checkpoints cannot keep up
CHECKPOINT_DELAY_SECONDS = 0.1  # let a few commits gather: one fsync for several batches
CHECKPOINTER_IDLE_SECONDS = 10.0  # then the thread and its connection go, until the next write


class SqliteWriters:
    """The writers of one SQLite database file, in this process."""

    _by_database: dict[tuple[int, str], SqliteWriters] = {}
    _registry_lock = threading.Lock()

    def __init__(self, database: str | None):
        self.database = database  # None: in memory, nothing to queue across processes or checkpoint
        self._threads = threading.Lock()
        self._lock_path = f"{database}-writer.lock" if database and fcntl is not None else None
        self._wrote = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._checkpointer_lock = threading.Lock()

    @classmethod
    def of(cls, engine: sa.Engine) -> SqliteWriters:
        database = engine.url.database or ""
        on_disk = database not in ("", ":memory:") and not database.startswith("file:")
        path = os.path.abspath(database) if on_disk else f"memory:{id(engine)}"
        key = (os.getpid(), path)  # a forked child gets its own locks and thread
        with cls._registry_lock:
            if key not in cls._by_database:
                cls._by_database[key] = cls(path if on_disk else None)
            return cls._by_database[key]

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait until the writers before this one, in any process, are done; then write."""
        with self._threads:
            if self._lock_path is None:
                yield
                return
            descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                yield
            finally:
                os.close(descriptor)  # closing releases the flock

    def committed(self) -> None:
        """A write transaction committed: have the WAL checkpointed soon, in the background."""
        if self.database is None:
            return
        self._wrote.set()
        with self._checkpointer_lock:
            if self._checkpointer is None:
                self._checkpointer = threading.Thread(target=self._checkpoint_while_written, name="gdx-sqlite-checkpointer", daemon=True)
                self._checkpointer.start()

    def _checkpoint_while_written(self) -> None:
        try:
            connection = sqlite3.connect(self.database)
            try:
                self._checkpoint_until_idle(connection)
            finally:
                connection.close()
        except sqlite3.Error as error:  # say the file was removed: the next commit starts afresh
            log.warning("background checkpoints of %s stopped: %s", self.database, error)
        finally:
            with self._checkpointer_lock:
                if self._checkpointer is threading.current_thread():
                    self._checkpointer = None

    def _checkpoint_until_idle(self, connection: sqlite3.Connection) -> None:
        while True:
            if not self._wrote.wait(CHECKPOINTER_IDLE_SECONDS):
                with self._checkpointer_lock:
                    if not self._wrote.is_set():  # no commit slipped in while we decided to go
                        self._checkpointer = None  # the next commit starts a new thread
                        return
                continue
            time.sleep(CHECKPOINT_DELAY_SECONDS)
            self._wrote.clear()
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
