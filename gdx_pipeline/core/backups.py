"""Avro backups of the warehouse tables, and restores that verify everything before they write.

Backups: every table of one run is read from one consistent snapshot (a repeatable-read
transaction on PostgreSQL, one WAL read transaction on SQLite) in bounded chunks, written with
fastavro under a hidden temporary name and renamed into place, followed by a sidecar manifest
(rows, sha256, schema fingerprint, snapshot id, created time). The manifest is written last:
a backup without one is not a backup, so a run killed at any moment leaves nothing that a
restore would pick up.

Restores: the file is checked against its manifest (sha256, size), its schema against the data
dictionary and every row against the dictionary, into a local spool, before the database is
touched. Then one transaction checks that no foreign key would break, replaces the table's
contents, and records the swap in the ingestion ledger. A refusal leaves every table as it was.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import sqlalchemy as sa

from gdx_pipeline.core.avro_schema import (
    BACKUP_TABLES,
    BackupTable,
    backup_table_named,
    referencing_tables,
    schema_fingerprint,
    schema_signature,
)
from gdx_pipeline.core.avro_writer import AvroFileSpec, WrittenFile, write_avro
from gdx_pipeline.core.csv_source import RecordBlock, file_sha256
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import Logger, lock_table_for_writes, now_utc
from gdx_pipeline.core.loading import create_secondary_structures, drop_secondary_structures, quote_identifier
from gdx_pipeline.core.validation import SeenIds, check_rows
from gdx_pipeline.core.warehouse import ingestion_ledger, is_postgres, write_transaction
from gdx_pipeline.dictionary import TABLES

DEFAULT_CODEC = "deflate"
DEFAULT_RETENTION = 14
CHUNK_ROWS = 100_000
# From this many rows on, fastavro encodes in a helper process while this one reads the database.
HELPER_PROCESS_ROWS = 200_000
MANIFEST_FORMAT = "gdx-backup/1"
AVRO_SUFFIX = ".avro"
MANIFEST_SUFFIX = ".manifest.json"
PART_SUFFIX = ".part"
# From this many rows on, a PostgreSQL restore drops the keys and indexes, COPYs, and builds them
# once after: one sorted index build and one set-wise foreign key check beat per-row upkeep.
BULK_RESTORE_ROWS = 200_000
# A hidden part file this old belongs to a backup that died; retention removes it.
STALE_PART_AGE = timedelta(days=1)
_STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_STAMP = re.compile(r"\d{8}T\d{6}\.\d{6}Z")

_default_log = logging.getLogger("gdx_pipeline.backups")


# ---------------------------------------------------------------------------------------------
# Errors a user can cause: each message says what was wrong and what to do.


class BackupError(Exception):
    """A backup or restore that cannot be done as asked; nothing was changed."""


class BackupNotFoundError(BackupError, LookupError):
    """The named backup (or any backup, for `latest`) does not exist."""


class InvalidBackupNameError(BackupError, ValueError):
    """The backup was not named as `latest` or a plain file name of the table's backup folder."""


class RestoreRefusedError(BackupError):
    """The backup failed verification, or restoring it would break foreign keys."""

    def __init__(self, message: str, details: dict[str, object] | None = None):
        super().__init__(message)
        self.details = details or {}


# ---------------------------------------------------------------------------------------------
# Codecs


def available_codecs() -> list[str]:
    """Codecs fastavro can write here: null and deflate always; snappy, zstandard with their libraries."""
    return [codec for codec in ("null", "deflate", "snappy", "zstandard", "bzip2", "xz", "lz4") if _codec_works(codec)]


def _codec_works(codec: str) -> bool:
    schema = {"type": "record", "name": "probe", "fields": [{"name": "x", "type": "int"}]}
    try:
        fastavro.writer(io.BytesIO(), schema, [{"x": 1}], codec=codec)
    except Exception:  # fastavro raises ValueError for unknown codecs, its own error for missing libraries
        return False
    return True


def check_codec(codec: str) -> str:
    if codec not in ("null", "deflate") and not _codec_works(codec):
        raise BackupError(
            f"Avro codec {codec!r} is not available here; use one of {', '.join(available_codecs())} "
            "(snappy needs the `cramjam` package, zstandard the `zstandard` package)"
        )
    return codec


# ---------------------------------------------------------------------------------------------
# Names, manifests and listing


@dataclass(frozen=True)
class BackupInfo:
    """One complete backup file and what its manifest says about it."""

    table: str
    name: str
    path: Path
    rows: int
    created: datetime
    sha256: str
    bytes: int
    snapshot_id: str
    codec: str
    schema_fingerprint: str
    # Every table the snapshot was taken of: all of them for backup_job, one for backup_table.
    snapshot_tables: tuple[str, ...] = tuple(BACKUP_TABLES)

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "name": self.name,
            "rows": self.rows,
            "created": self.created.isoformat(),
            "sha256": self.sha256,
            "bytes": self.bytes,
            "snapshot_id": self.snapshot_id,
            "codec": self.codec,
        }


def backup_folder(folders: DataFolders, table: str) -> Path:
    return folders.backups / _known_table(table)


def _known_table(table: str) -> str:
    if table not in BACKUP_TABLES:
        raise BackupNotFoundError(f"unknown table {table!r}: backups exist for {', '.join(BACKUP_TABLES)}")
    return table


def snapshot_id_at(created: datetime) -> str:
    """A snapshot id is the UTC time the snapshot was taken, to the microsecond."""
    return created.astimezone(UTC).strftime(_STAMP_FORMAT)


def backup_file_name(table: str, snapshot_id: str) -> str:
    return f"{table}__{snapshot_id}{AVRO_SUFFIX}"


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(AVRO_SUFFIX) + MANIFEST_SUFFIX)


def _parse_backup_name(name: str) -> tuple[str, str] | None:
    """(table, snapshot id) of a well-formed backup file name, else None."""
    if not name.endswith(AVRO_SUFFIX) or "__" not in name:
        return None
    table, _, stamp = name.removesuffix(AVRO_SUFFIX).rpartition("__")
    if table not in BACKUP_TABLES or not _STAMP.fullmatch(stamp):
        return None
    return table, stamp


def _read_manifest(path: Path) -> BackupInfo | None:
    """The backup at `path` if it is complete (file and manifest agree on table and name)."""
    parsed = _parse_backup_name(path.name)
    sidecar = manifest_path(path)
    if parsed is None or not path.is_file() or not sidecar.is_file():
        return None
    try:
        manifest = json.loads(sidecar.read_text(encoding="utf-8"))
        info = BackupInfo(
            table=manifest["table"],
            name=manifest["file"],
            path=path,
            rows=int(manifest["rows"]),
            created=datetime.fromisoformat(manifest["created"]),
            sha256=manifest["sha256"],
            bytes=int(manifest["bytes"]),
            snapshot_id=manifest["snapshot_id"],
            codec=manifest["codec"],
            schema_fingerprint=manifest["schema_fingerprint"],
            # Manifests older than this field came from runs that could not say: assume every
            # table, so a snapshot missing one is refused rather than restored in part.
            snapshot_tables=tuple(manifest.get("snapshot_tables", BACKUP_TABLES)),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if not set(info.snapshot_tables) <= set(BACKUP_TABLES) or info.table not in info.snapshot_tables:
        return None
    if manifest.get("format") != MANIFEST_FORMAT or info.name != path.name or info.table != parsed[0]:
        return None
    return info


def list_backups(folders: DataFolders, table: str) -> list[BackupInfo]:
    """Complete backups of `table`, newest first. Hidden part files and files without a manifest are not backups."""
    folder = backup_folder(folders, table)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.name.endswith(AVRO_SUFFIX):
            continue
        info = _read_manifest(path)
        if info is not None and info.table == table:
            found.append(info)
    return sorted(found, key=lambda b: (b.snapshot_id, b.name), reverse=True)


def list_snapshots(folders: DataFolders) -> dict[str, dict[str, BackupInfo]]:
    """Backups grouped by snapshot id, newest snapshot first."""
    snapshots: dict[str, dict[str, BackupInfo]] = {}
    for table in BACKUP_TABLES:
        for info in list_backups(folders, table):
            snapshots.setdefault(info.snapshot_id, {})[table] = info
    return dict(sorted(snapshots.items(), reverse=True))


def missing_tables(snapshot: Mapping[str, BackupInfo]) -> list[str]:
    """Tables a snapshot was taken of whose backup is no longer there (deleted, or its manifest lost)."""
    taken = set().union(*(info.snapshot_tables for info in snapshot.values()))
    return [table for table in BACKUP_TABLES if table in taken and table not in snapshot]


def resolve_backup(folders: DataFolders, table: str, backup: str = "latest") -> BackupInfo:
    """The backup a user named: `latest`, or a file name listed in `backups/<table>/`."""
    _known_table(table)
    backup = (backup or "").strip()
    listed = list_backups(folders, table)
    if backup == "latest":
        if not listed:
            raise BackupNotFoundError(f"there is no backup of {table} yet in {backup_folder(folders, table)}; run backup_job first")
        return listed[0]
    hint = f"use 'latest' or one of the file names in backups/{table}/" + (f" (newest: {listed[0].name})" if listed else "")
    if not backup or backup != Path(backup).name or "/" in backup or "\\" in backup or ".." in backup or backup.startswith("."):
        raise InvalidBackupNameError(f"backup {backup!r} is not a plain backup file name; {hint}")
    parsed = _parse_backup_name(backup)
    if parsed is None:
        raise InvalidBackupNameError(f"{backup!r} is not a backup file name (expected {table}__<UTC timestamp>{AVRO_SUFFIX}); {hint}")
    if parsed[0] != table:
        raise InvalidBackupNameError(f"{backup!r} is a backup of {parsed[0]}, not of {table}; {hint}")
    for info in listed:
        if info.name == backup:
            return info
    if (backup_folder(folders, table) / backup).exists():
        raise BackupNotFoundError(f"{backup} has no valid manifest, so it is not a complete backup; {hint}")
    raise BackupNotFoundError(f"no backup named {backup} in backups/{table}/; {hint}")


# ---------------------------------------------------------------------------------------------
# Reading one consistent snapshot in typed chunks


def arrow_type(kind: str) -> pa.DataType:
    return {
        "integer": pa.int32(),
        "long": pa.int64(),
        "text": pa.string(),
        "json": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }[kind]


def arrow_schema(table: BackupTable) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c.kind), nullable=c.nullable) for c in table.columns])


def lock_order(names: Iterable[str]) -> list[str]:
    """Tables in the one order every backup and restore locks them: referencing tables first.

    That is the order in which PostgreSQL's own DDL locks them (dropping a foreign key locks the
    table, then the table it references), so no two of our transactions can deadlock.
    """
    wanted = set(names)
    return [name for name in reversed(BACKUP_TABLES) if name in wanted]


class SnapshotReader:
    """Reads several tables from one point in time, without blocking writers.

    PostgreSQL: one REPEATABLE READ, READ ONLY transaction; rows leave through COPY and are
    parsed by pyarrow. The tables are share-locked before the snapshot is taken, so a restore's
    TRUNCATE (which is not MVCC-safe) waits for the backup instead of showing it empty tables.
    SQLite (WAL): one deferred read transaction on a raw connection, so ingestion can keep
    writing while a long backup runs.
    """

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.postgres = is_postgres(engine)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> SnapshotReader:
        if self.postgres:
            conn = self._stack.enter_context(self.engine.connect().execution_options(isolation_level="REPEATABLE READ"))
            self._stack.enter_context(conn.begin())
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql(f"LOCK TABLE {', '.join(quote_identifier(conn, name) for name in lock_order(BACKUP_TABLES))} IN ACCESS SHARE MODE")
            # The snapshot is taken by the first query after the locks; take it now, so all tables share it.
            conn.exec_driver_sql("SELECT 1")
            self._conn = conn
        else:
            raw = self.engine.raw_connection()
            self._stack.callback(raw.close)
            self._sqlite = raw.driver_connection
            self._sqlite.execute("BEGIN DEFERRED")
            self._stack.callback(self._sqlite.execute, "ROLLBACK")
            self._sqlite.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def count(self, table: BackupTable) -> int:
        if self.postgres:
            return self._conn.exec_driver_sql(f"SELECT count(*) FROM {quote_identifier(self._conn, table.name)}").scalar_one()
        return self._sqlite.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]

    def chunks(self, table: BackupTable, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
        """The table in primary-key order, as Arrow batches typed by `arrow_schema`."""
        if self.postgres:
            yield from self._postgres_chunks(table, chunk_rows)
        else:
            yield from self._sqlite_chunks(table, chunk_rows)

    def _postgres_chunks(self, table: BackupTable, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        conn = self._conn
        selected = []
        for column in table.columns:
            name = quote_identifier(conn, column.name)
            # Epoch microseconds, exact (extract returns numeric), independent of the session's time zone.
            selected.append(f"(extract(epoch FROM {name}) * 1000000)::bigint" if column.kind == "timestamp" else name)
        query = (
            f"COPY (SELECT {', '.join(selected)} FROM {quote_identifier(conn, table.name)} ORDER BY {quote_identifier(conn, table.primary_key)}) "
            "TO STDOUT (FORMAT csv)"
        )
        target = arrow_schema(table)
        read_types = {c.name: pa.int64() if c.kind == "timestamp" else arrow_type(c.kind) for c in table.columns}
        options = (
            pacsv.ReadOptions(column_names=table.column_names, use_threads=False),
            pacsv.ParseOptions(newlines_in_values=True),
            pacsv.ConvertOptions(column_types=read_types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(query) as copy:
            # psycopg hands COPY data out one whole row per read: gather a chunk, parse it at once.
            buffer, rows = bytearray(), 0
            while data := copy.read():
                buffer += data
                rows += 1
                if rows == chunk_rows:
                    yield _parse_copy_chunk(buffer, options, target)
                    buffer, rows = bytearray(), 0
            if rows:
                yield _parse_copy_chunk(buffer, options, target)

    def _sqlite_chunks(self, table: BackupTable, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        columns = ", ".join(f'"{c}"' for c in table.column_names)
        cursor = self._sqlite.execute(f'SELECT {columns} FROM "{table.name}" ORDER BY "{table.primary_key}"')
        target = arrow_schema(table)
        try:
            while rows := cursor.fetchmany(chunk_rows):
                values = list(zip(*rows))
                arrays = [_sqlite_array(values[i], column.kind) for i, column in enumerate(table.columns)]
                yield pa.RecordBatch.from_arrays(arrays, schema=target)
        finally:
            cursor.close()


def _parse_copy_chunk(data: bytearray, options: tuple, target: pa.Schema) -> pa.RecordBatch:
    parsed = pacsv.read_csv(io.BytesIO(data), *options)
    arrays = [parsed.column(i).combine_chunks().cast(target.field(i).type) for i in range(parsed.num_columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=target)


def _sqlite_array(values: Sequence[object], kind: str) -> pa.Array:
    """SQLite gives back text for times (naive, UTC, as SQLAlchemy stored them) and for JSON."""
    if kind != "timestamp":
        return pa.array(values, arrow_type(kind))
    text = pa.array(values, pa.string())
    try:
        return text.cast(pa.timestamp("us")).cast(arrow_type(kind))
    except pa.ArrowInvalid:  # written with an offset by someone else: let pandas read the offsets
        parsed = pd.to_datetime(pd.Series(values, dtype="string"), utc=True, format="ISO8601")
        return pa.array(parsed.dt.as_unit("us"), arrow_type(kind))


# ---------------------------------------------------------------------------------------------
# Writing backups


@dataclass
class BackupResult:
    table: str
    file: str
    path: Path
    rows: int
    snapshot_rows: int  # the table's row count in the snapshot; equals `rows` unless something is badly wrong
    bytes: int
    sha256: str
    snapshot_id: str
    codec: str
    seconds: float
    pruned: list[str] = field(default_factory=list)


def backup_tables(
    engine: sa.Engine,
    folders: DataFolders,
    tables: Iterable[str] | None = None,
    *,
    codec: str = DEFAULT_CODEC,
    retention: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
    log: Logger = _default_log,
) -> list[BackupResult]:
    """Back up `tables` (default: all) from one snapshot; then keep the newest `retention` of each."""
    selected = [BACKUP_TABLES[_known_table(name)] for name in (list(tables) if tables is not None else BACKUP_TABLES)]
    selected.sort(key=lambda t: list(BACKUP_TABLES).index(t.name))
    check_codec(codec)
    if retention is not None and retention < 1:
        raise BackupError(f"retention must keep at least 1 backup per table, got {retention}")
    results = []
    with SnapshotReader(engine) as snapshot:
        created = now_utc()
        snapshot_id = snapshot_id_at(created)
        taken = tuple(table.name for table in selected)
        for table in selected:
            results.append(_write_backup(snapshot, folders, table, snapshot_id, taken, created, codec, chunk_rows, log))
    if retention is not None:
        pruned = prune_backups(folders, retention, log=log)
        for result in results:
            result.pruned = pruned.get(result.table, [])
        discard_stale_spools(folders)
    return results


def backup_table(engine: sa.Engine, folders: DataFolders, table: str, **options) -> BackupResult:
    """Back up one table (see `backup_tables` for the options)."""
    (result,) = backup_tables(engine, folders, [table], **options)
    return result


def _write_backup(
    snapshot: SnapshotReader,
    folders: DataFolders,
    table: BackupTable,
    snapshot_id: str,
    snapshot_tables: tuple[str, ...],
    created: datetime,
    codec: str,
    chunk_rows: int,
    log: Logger,
) -> BackupResult:
    started = time.perf_counter()
    folder = folders.backups / table.name
    folder.mkdir(parents=True, exist_ok=True)
    name = backup_file_name(table.name, snapshot_id)
    final = folder / name
    if final.exists():
        raise BackupError(f"{final} already exists; two backups in the same microsecond?")
    part = folder / f".{name}.{os.getpid()}{PART_SUFFIX}"
    snapshot_rows = snapshot.count(table)
    spec = AvroFileSpec(
        schema=table.avro_schema,
        codec=codec,
        metadata={
            "gdx.table": table.name,
            "gdx.snapshot_id": snapshot_id,
            "gdx.created": created.isoformat(),
            "gdx.schema_fingerprint": table.schema_fingerprint,
        },
        timestamp_columns=tuple(c.name for c in table.columns if c.kind == "timestamp"),
    )

    def progress(rows: int) -> None:
        log.info(f"{table.name}: {rows:,} of {snapshot_rows:,} rows written")

    try:
        batches = snapshot.chunks(table, chunk_rows)
        if snapshot_rows >= HELPER_PROCESS_ROWS:
            written = _write_in_helper(part, spec, batches, progress)
        else:
            with part.open("wb") as handle:
                written = write_avro(handle, spec, batches, progress)
        with part.open("rb+") as handle:
            os.fsync(handle.fileno())
        manifest = {
            "format": MANIFEST_FORMAT,
            "table": table.name,
            "file": name,
            "rows": written.rows,
            "bytes": written.bytes,
            "sha256": written.sha256,
            "schema_fingerprint": table.schema_fingerprint,
            "snapshot_id": snapshot_id,
            "snapshot_tables": list(snapshot_tables),
            "created": created.isoformat(),
            "codec": codec,
            "avro_schema": table.avro_schema,
        }
        os.replace(part, final)
        _write_atomically(manifest_path(final), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    finally:
        part.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.info(f"{table.name}: backed up {written.rows:,} rows to {name} ({written.bytes:,} bytes, {seconds:.1f} s)")
    return BackupResult(
        table=table.name,
        file=name,
        path=final,
        rows=written.rows,
        snapshot_rows=snapshot_rows,
        bytes=written.bytes,
        sha256=written.sha256,
        snapshot_id=snapshot_id,
        codec=codec,
        seconds=seconds,
    )


def _write_in_helper(part: Path, spec: AvroFileSpec, batches: Iterator[pa.RecordBatch], progress) -> WrittenFile:  # noqa: ANN001
    """Stream the batches to `python -m gdx_pipeline.core.avro_writer`, which encodes them into `part`."""
    with tempfile.TemporaryFile() as errors:
        helper = subprocess.Popen(
            [sys.executable, "-m", "gdx_pipeline.core.avro_writer", str(part), spec.to_json()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        sent = 0
        try:
            sink = None
            for batch in batches:
                if sink is None:
                    sink = ipc.new_stream(helper.stdin, batch.schema)
                sink.write_batch(batch)
                sent += batch.num_rows
                progress(sent)
            if sink is not None:
                sink.close()
            helper.stdin.close()
            output = helper.stdout.read()
            helper.wait()
        except BaseException:
            helper.kill()
            helper.wait()
            raise
        if helper.returncode != 0 or sent == 0:
            errors.seek(0)
            detail = errors.read().decode("utf-8", "replace").strip().splitlines()
            raise BackupError(f"the Avro writer process failed ({detail[-1] if detail else f'exit status {helper.returncode}'}); no backup was written")
    written = WrittenFile(**json.loads(output))
    if written.rows != sent:
        raise BackupError(f"the Avro writer process wrote {written.rows:,} rows of {sent:,}; no backup was written")
    return written


def _write_atomically(path: Path, text: str) -> None:
    part = path.with_name(f".{path.name}.{os.getpid()}{PART_SUFFIX}")
    try:
        with part.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # make the renames durable where the platform allows
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# ---------------------------------------------------------------------------------------------
# Retention


def prune_backups(folders: DataFolders, keep: int, *, log: Logger = _default_log) -> dict[str, list[str]]:
    """Delete old backups by whole snapshots; return the names removed, by table.

    Each table keeps its newest `keep` backups, and the newest one that still matches its
    manifest's sha256 even if older (say the disk corrupted the newer ones). A snapshot any
    table keeps is kept whole: a backup beyond its table's newest `keep` goes only when no
    other table keeps a backup of its snapshot. So retention never leaves a snapshot that a
    restore would find incomplete. A table backed up on its own (`backup_table`) makes a
    snapshot of that one table, which counts towards that table's `keep` only; an older
    snapshot of every table stays whole as long as any of its tables keeps it, so a table can
    hold more than `keep` backups. Hidden part files of backups that died more than a day ago
    are removed too.
    """
    if keep < 1:
        raise BackupError(f"retention must keep at least 1 backup per table, got {keep}")
    listed = {table: list_backups(folders, table) for table in BACKUP_TABLES}
    kept = _kept_snapshots(listed, keep, log)
    removed: dict[str, list[str]] = {}
    for table, backups in listed.items():
        for info in backups:
            if info.snapshot_id not in kept:
                manifest_path(info.path).unlink(missing_ok=True)
                info.path.unlink(missing_ok=True)
                removed.setdefault(table, []).append(info.name)
        removed[table] = removed.get(table, []) + _remove_stale_parts(backup_folder(folders, table))
        if removed[table]:
            log.info(f"{table}: retention (keep {keep}, whole snapshots) removed {', '.join(removed[table])}")
    return {table: names for table, names in removed.items() if names}


def _kept_snapshots(listed: dict[str, list[BackupInfo]], keep: int, log: Logger) -> set[str]:
    """Snapshot ids that some table keeps: its newest `keep`, and its newest intact backup."""
    kept: set[str] = set()
    for table, backups in listed.items():
        newest = backups[:keep]
        kept.update(info.snapshot_id for info in newest)
        if any(_is_intact(info) for info in newest):
            continue
        for info in backups[keep:]:
            if _is_intact(info):
                log.warning(f"{table}: no kept backup is intact; also keeping {info.name} (and its snapshot)")
                kept.add(info.snapshot_id)
                break
    return kept


def _remove_stale_parts(folder: Path) -> list[str]:
    cutoff = time.time() - STALE_PART_AGE.total_seconds()
    removed = []
    for part in folder.glob(f".*{PART_SUFFIX}") if folder.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            if part.stat().st_mtime < cutoff:
                part.unlink()
                removed.append(part.name)
    return removed


def _is_intact(info: BackupInfo) -> bool:
    return info.path.is_file() and info.path.stat().st_size == info.bytes and file_sha256(info.path) == info.sha256


# ---------------------------------------------------------------------------------------------
# Verifying a backup before a restore


@dataclass
class VerifiedBackup:
    """A backup that passed every check, its rows spooled to a local Arrow stream."""

    info: BackupInfo
    table: BackupTable
    spool: Path
    rows: int
    ids: np.ndarray  # sorted distinct primary keys, kept only for tables that others reference
    foreign_values: dict[str, tuple[np.ndarray, np.ndarray]]  # fk column -> (distinct values, row counts)

    def spooled_batches(self) -> Iterator[pa.RecordBatch]:
        with ipc.open_stream(self.spool) as reader:
            yield from reader


def _refuse(info: BackupInfo, problem: str, details: dict[str, object] | None = None) -> RestoreRefusedError:
    return RestoreRefusedError(f"{info.name}: {problem}. Nothing was restored; the table is unchanged.", details)


def verify_backup(info: BackupInfo, spool_dir: Path, *, chunk_rows: int = CHUNK_ROWS, log: Logger = _default_log) -> VerifiedBackup:
    """Check file, schema and every row; spool the typed rows for the load. Raises RestoreRefusedError."""
    table = backup_table_named(info.table)
    size = info.path.stat().st_size
    if size != info.bytes:
        raise _refuse(info, f"the file has {size:,} bytes but its manifest says {info.bytes:,} (truncated or changed)", {"bytes": size, "expected_bytes": info.bytes})
    actual = file_sha256(info.path)
    if actual != info.sha256:
        raise _refuse(info, f"sha256 {actual[:12]}… does not match the manifest's {info.sha256[:12]}… (the file is corrupt or was changed)", {"sha256": actual, "expected_sha256": info.sha256})
    spool = spool_dir / f"{info.name}.arrows"
    checker = _RowChecker(table)
    try:
        with info.path.open("rb") as handle:
            try:
                reader = fastavro.reader(handle)
                writer_schema = reader.metadata.get("avro.schema", "")
            except Exception as error:
                raise _refuse(info, f"not a readable Avro file ({error})") from None
            _check_schema(info, table, writer_schema)
            target = arrow_schema(table)
            with ipc.new_stream(spool, target) as sink:
                while True:
                    try:
                        records = list(itertools.islice(reader, chunk_rows))
                    except Exception as error:
                        raise _refuse(info, f"the Avro data cannot be read after row {checker.rows:,} ({type(error).__name__}: {error})") from None
                    if not records:
                        break
                    try:
                        batch = pa.RecordBatch.from_arrays(
                            [pa.array([r[c.name] for r in records], arrow_type(c.kind)) for c in table.columns], schema=target
                        )
                    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
                        raise _refuse(info, f"a value does not fit its column ({error})") from None
                    checker.check(batch)
                    sink.write_batch(batch)
                    if checker.rows % 1_000_000 < batch.num_rows:
                        log.info(f"{info.name}: {checker.rows:,} of {info.rows:,} rows verified")
    except BaseException:
        spool.unlink(missing_ok=True)
        raise
    if checker.failures:
        spool.unlink(missing_ok=True)
        listing = "; ".join(f"{rule}: {count:,}" for rule, count in checker.failures.items())
        raise _refuse(
            info,
            f"{checker.failing_rows:,} row(s) break the data dictionary ({listing})",
            {"failing_rows": checker.failing_rows, "failures_by_rule": dict(checker.failures), "examples": checker.examples},
        )
    if checker.rows != info.rows:
        spool.unlink(missing_ok=True)
        raise _refuse(info, f"the file holds {checker.rows:,} rows but its manifest says {info.rows:,}", {"rows": checker.rows, "expected_rows": info.rows})
    log.info(f"{info.name}: verified {checker.rows:,} rows (sha256, schema, data dictionary)")
    return VerifiedBackup(info, table, spool, checker.rows, checker.distinct_ids(), checker.foreign_value_counts())


def _as_landing_text(values: pa.Array) -> pa.Array:
    """A column as a landing file would write it. Times: naive UTC text plus `Z` (Arrow turns
    naive times into text many times faster than zoned ones)."""
    if pa.types.is_timestamp(values.type):
        naive = values.cast(pa.timestamp(values.type.unit)).cast(pa.string())
        return pc.binary_join_element_wise(naive, pa.scalar("Z"), "")
    return values.cast(pa.string())


def _excerpt(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(str(value)):,} characters)"


def _check_schema(info: BackupInfo, table: BackupTable, writer_schema: str) -> None:
    expected = table.avro_schema
    try:
        found = json.loads(writer_schema)
    except ValueError:
        raise _refuse(info, "the Avro header carries no readable schema") from None
    if schema_signature(found) == schema_signature(expected):
        if info.schema_fingerprint != schema_fingerprint(expected):
            raise _refuse(info, "the manifest's schema fingerprint does not match the file")
        return
    differences = _schema_differences(found, expected)
    raise _refuse(info, f"its Avro schema does not match the data dictionary for {table.name} ({'; '.join(differences)})", {"schema_differences": differences})


def _schema_differences(found: object, expected: dict) -> list[str]:
    if not isinstance(found, dict) or found.get("type") != "record":
        return ["not a record schema"]
    problems = []
    if found.get("name") != expected["name"]:
        problems.append(f"record is named {found.get('name')!r}, expected {expected['name']!r}")
    found_fields = {f.get("name"): f.get("type") for f in found.get("fields", []) if isinstance(f, dict)}
    expected_fields = {f["name"]: f["type"] for f in expected["fields"]}
    for name, avro_type in expected_fields.items():
        if name not in found_fields:
            problems.append(f"column {name} is missing")
        elif schema_signature({"t": found_fields[name]}) != schema_signature({"t": avro_type}):
            problems.append(f"column {name} is {json.dumps(found_fields[name])}, expected {json.dumps(avro_type)}")
    problems += [f"unexpected column {name}" for name in found_fields if name not in expected_fields]
    if not problems and list(found_fields) != list(expected_fields):
        problems.append("columns are in a different order")
    return problems or ["namespace or attributes differ"]


class _RowChecker:
    """Every row against the dictionary, and primary keys unique across the whole file.

    Data tables are judged by ingestion's own rule code (`check_rows`): each value is given to
    it as text, so a backup passes exactly when its rows would load unchanged from a landing
    file. A value ingestion would store differently — untrimmed text, whitespace-only (that is
    missing) — is refused, not normalised: a restore puts back what the verified file holds or
    nothing, and the table never held such values unless someone wrote them behind the
    pipeline's back. The reject log has no dictionary model: its text lengths are checked.
    """

    EXAMPLES = 5  # reasons quoted in a refusal's details

    def __init__(self, table: BackupTable):
        self.table = table
        self.rows = 0
        self.failing_rows = 0
        self.failures: dict[str, int] = {}
        self.examples: list[str] = []
        self._seen = SeenIds()
        self._keep_ids = bool(referencing_tables(table.name))
        self._ids: list[np.ndarray] = []
        self._foreign: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {fk.column: [] for fk in table.foreign_keys}

    def check(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        bad = np.zeros(batch.num_rows, dtype=bool)
        if self.table.spec is not None:
            bad |= self._check_dictionary(batch)
        else:
            bad |= self._check_lengths(batch)
        key = batch.column(self.table.primary_key).to_numpy(zero_copy_only=False).astype(np.int64)
        in_range = (key >= 0) & (key <= np.iinfo(np.int32).max)
        if not in_range.all():
            self._fail("primary key out of range", int((~in_range).sum()))
            bad |= ~in_range
        duplicates = self._seen.mark(np.where(in_range, key, 0), in_range)
        if duplicates.any():
            self._fail(f"{self.table.primary_key}: duplicate", int(duplicates.sum()))
            for row in np.flatnonzero(duplicates)[: self.EXAMPLES - len(self.examples)]:
                self.examples.append(f"{self.table.primary_key} {key[row]}: {self.table.primary_key}: duplicate of an earlier row")
            bad |= duplicates
        self.failing_rows += int(bad.sum())
        if self._keep_ids:
            self._ids.append(np.unique(key))
        for fk in self.table.foreign_keys:
            values, counts = np.unique(batch.column(fk.column).to_numpy(zero_copy_only=False).astype(np.int64), return_counts=True)
            self._foreign[fk.column].append((values, counts))

    def _check_dictionary(self, batch: pa.RecordBatch) -> np.ndarray:
        spec = self.table.spec
        as_text = pa.table({column: _as_landing_text(batch.column(column)) for column in spec.columns})
        checked = check_rows(spec, RecordBlock(as_text, np.arange(batch.num_rows), [], {}))
        reasons = {row: list(found) for row, found in checked.reasons.items()}
        for column in spec.columns:
            original = batch.column(column)
            stored = checked.typed.column(column).combine_chunks().cast(original.type)
            differs = pc.and_(pc.is_valid(original), pc.fill_null(pc.not_equal(stored, original), True))
            for row in np.flatnonzero(differs.to_numpy(zero_copy_only=False)):
                row_reasons = reasons.setdefault(int(row), [])
                if not any(reason.startswith(f"{column}:") for reason in row_reasons):
                    value, kept = original[int(row)].as_py(), stored[int(row)].as_py()
                    row_reasons.append(f"{column}: not as ingestion stores it (got {_excerpt(value)}, stored as {_excerpt(kept)})")
        bad = np.zeros(batch.num_rows, dtype=bool)
        keys = batch.column(self.table.primary_key)
        for row, row_reasons in sorted(reasons.items()):
            bad[row] = True
            for reason in row_reasons:
                self._fail(reason.split(" (got ", 1)[0])
                if len(self.examples) < self.EXAMPLES:
                    self.examples.append(f"{self.table.primary_key} {keys[row].as_py()}: {reason}")
        return bad

    def _check_lengths(self, batch: pa.RecordBatch) -> np.ndarray:
        bad = np.zeros(batch.num_rows, dtype=bool)
        for column in self.table.columns:
            if column.max_length is None:
                continue
            too_long = pc.fill_null(pc.greater(pc.utf8_length(batch.column(column.name)), column.max_length), False).to_numpy(zero_copy_only=False)
            if too_long.any():
                self._fail(f"{column.name}: longer than {column.max_length} characters", int(too_long.sum()))
                bad |= too_long
        return bad

    def _fail(self, rule: str, count: int = 1) -> None:
        self.failures[rule] = self.failures.get(rule, 0) + count

    def distinct_ids(self) -> np.ndarray:
        return np.unique(np.concatenate(self._ids)) if self._ids else np.array([], dtype=np.int64)

    def foreign_value_counts(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        merged = {}
        for column, parts in self._foreign.items():
            if not parts:
                merged[column] = (np.array([], dtype=np.int64), np.array([], dtype=np.int64))
                continue
            values = np.concatenate([v for v, _ in parts])
            counts = np.concatenate([c for _, c in parts])
            distinct, inverse = np.unique(values, return_inverse=True)
            merged[column] = (distinct, np.bincount(inverse, weights=counts).astype(np.int64))
        return merged


# ---------------------------------------------------------------------------------------------
# Restoring


@dataclass
class RestoreResult:
    table: str
    backup: str
    snapshot_id: str
    rows_restored: int
    rows_replaced: int  # rows the table held before
    seconds: float


def restore_table(
    engine: sa.Engine,
    folders: DataFolders,
    table: str,
    backup: str = "latest",
    *,
    run_id: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    log: Logger = _default_log,
) -> RestoreResult:
    """Replace `table`'s contents with a verified backup (`latest` or a file name), atomically.

    Refused (RestoreRefusedError, table unchanged) if the file fails verification or if the
    restore would leave an employee pointing at a missing department or job.
    """
    info = resolve_backup(folders, table, backup)
    (result,) = restore_backups(engine, folders, [info], run_id=run_id, chunk_rows=chunk_rows, log=log)
    return result


def resolve_snapshot(folders: DataFolders, snapshot: str = "latest") -> list[BackupInfo]:
    """The backups of one whole snapshot: `latest` is the newest snapshot that covers every table.

    A named snapshot that lost the backup of a table it was taken of is refused
    (RestoreRefusedError naming the missing tables), never restored in part.
    """
    snapshots = list_snapshots(folders)
    snapshot = (snapshot or "").strip()
    if snapshot == "latest":
        for backups in snapshots.values():
            if set(backups) == set(BACKUP_TABLES):
                return list(backups.values())
        raise BackupNotFoundError("there is no snapshot that covers every table yet; run backup_job first")
    if snapshot not in snapshots:
        known = ", ".join(list(snapshots)[:5]) or "none yet"
        raise BackupNotFoundError(f"no snapshot {snapshot!r}; use 'latest' or one of: {known}")
    backups = snapshots[snapshot]
    missing = missing_tables(backups)
    if missing:
        newest_whole = next((sid for sid, members in snapshots.items() if set(members) == set(BACKUP_TABLES)), None)
        instead = f"Restore a whole snapshot instead ('latest' is {newest_whole})" if newest_whole else "No snapshot of every table is whole"
        raise RestoreRefusedError(
            f"snapshot {snapshot} is incomplete: it was taken of {', '.join(t for t in BACKUP_TABLES if t in backups or t in missing)} "
            f"but the backup of {', '.join(missing)} is gone (deleted, or its manifest is missing). Nothing was restored. "
            f"{instead}, or restore this snapshot's remaining tables one at a time with restore_table_job.",
            {"missing_tables": missing, "present_tables": list(backups)},
        )
    return list(backups.values())


def restore_snapshot(
    engine: sa.Engine,
    folders: DataFolders,
    snapshot: str = "latest",
    *,
    run_id: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    log: Logger = _default_log,
) -> list[RestoreResult]:
    """Restore every table of one snapshot together, in dependency order, in one transaction."""
    return restore_backups(engine, folders, resolve_snapshot(folders, snapshot), run_id=run_id, chunk_rows=chunk_rows, log=log)


def restore_backups(
    engine: sa.Engine,
    folders: DataFolders,
    backups: Sequence[BackupInfo],
    *,
    run_id: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    log: Logger = _default_log,
) -> list[RestoreResult]:
    """Verify every backup, then replace all their tables in one transaction."""
    order = list(BACKUP_TABLES)
    backups = sorted(backups, key=lambda b: order.index(b.table))
    if len({b.table for b in backups}) != len(backups):
        raise BackupError("one restore can take only one backup per table")
    started = time.perf_counter()
    folders.backups.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=folders.backups) as spool_dir:
        verified = [verify_backup(info, Path(spool_dir), chunk_rows=chunk_rows, log=log) for info in backups]
        results = _swap_in(engine, verified, run_id=run_id, log=log)
    seconds = time.perf_counter() - started
    for result in results:
        result.seconds = seconds
        log.info(f"{result.table}: restored {result.rows_restored:,} rows from {result.backup} (replaced {result.rows_replaced:,})")
    return results


def _swap_in(engine: sa.Engine, verified: list[VerifiedBackup], *, run_id: str | None, log: Logger) -> list[RestoreResult]:
    by_table = {v.table.name: v for v in verified}
    replaced = _replaceable(by_table)
    started_at = now_utc()
    try:
        with write_transaction(engine) as conn:
            _lock(conn, by_table, replaced)
            _check_foreign_keys(conn, by_table)
            prior = {name: _count(conn, name) for name in by_table}
            accounted = {name: _ledger_balance(conn, name) for name in by_table}
            _empty(conn, [name for name in by_table if name in replaced])
            for name, item in by_table.items():
                if name in replaced:
                    _load(conn, item)
                else:
                    _merge(conn, item)
                _after_load(conn, item)
                conn.execute(
                    ingestion_ledger.insert().values(
                        table_name=name,
                        source=f"restore:{item.info.name}"[:512],
                        sha256=None,
                        size_bytes=item.info.bytes,
                        rows_read=0,
                        rows_inserted=item.rows,
                        rows_updated=0,
                        rows_unchanged=0,
                        rows_rejected=0,
                        # What the ledger accounted for, not what was there: a restore that repairs
                        # an out-of-band change also puts the ledger back in balance with the table.
                        rows_deleted=accounted[name],
                        run_id=run_id,
                        started_at=started_at,
                        finished_at=now_utc(),
                    )
                )
    except (sa.exc.IntegrityError, sa.exc.DataError) as error:
        # Someone wrote a conflicting row between our checks and the swap; the database said no.
        raise RestoreRefusedError(
            f"the database refused the restore ({str(error.orig).splitlines()[0]}); nothing was restored. "
            "Another writer may have changed a related table meanwhile: try again, or restore a whole snapshot."
        ) from None
    return [RestoreResult(name, item.info.name, item.info.snapshot_id, item.rows, prior[name], 0.0) for name, item in by_table.items()]


def _replaceable(by_table: dict[str, VerifiedBackup]) -> set[str]:
    """Tables that can be emptied and reloaded: every table pointing at them is replaced too.

    The others (say `departments` restored alone, with employees pointing at it) are merged:
    rows the backup keeps are updated in place, so the references to them hold throughout.
    """
    replaced: set[str] = set()
    for name in reversed(list(by_table)):  # children first
        if all(child.name in replaced for child, _ in referencing_tables(name)):
            replaced.add(name)
    return replaced


def _is_bulk(conn: sa.Connection, item: VerifiedBackup) -> bool:
    return is_postgres(conn) and item.rows >= BULK_RESTORE_ROWS


def _lock(conn: sa.Connection, by_table: dict[str, VerifiedBackup], replaced: set[str]) -> None:
    """Take the writers' locks of the tables involved, then (PostgreSQL) the table locks TRUNCATE
    and the key rebuild need, in `lock_order`, all up front so no lock is upgraded later.

    The reject log is written under its data table's lock, so restoring it takes all of them.
    """
    wanted = set(by_table)
    if "rejected_rows" in wanted:
        wanted |= set(TABLES)
    for name, spec in TABLES.items():
        if name in wanted or any(fk.table == name for t in by_table.values() for fk in t.table.foreign_keys):
            lock_table_for_writes(conn, spec)
    if not is_postgres(conn):
        return  # SQLite: the transaction began with BEGIN IMMEDIATE
    exclusive = set(replaced)
    for name in replaced:
        if _is_bulk(conn, by_table[name]):
            exclusive |= {fk.table for fk in by_table[name].table.foreign_keys}
    if exclusive:
        conn.exec_driver_sql(f"LOCK TABLE {', '.join(quote_identifier(conn, n) for n in lock_order(exclusive))} IN ACCESS EXCLUSIVE MODE")


def _empty(conn: sa.Connection, names: list[str]) -> None:
    """PostgreSQL: one TRUNCATE (fresh files, no dead rows for the COPY to step over). SQLite:
    DELETE, children first."""
    if not names:
        return
    if is_postgres(conn):
        conn.exec_driver_sql(f"TRUNCATE {', '.join(quote_identifier(conn, n) for n in lock_order(names))}")
        return
    for name in lock_order(names):
        conn.exec_driver_sql(f"DELETE FROM {quote_identifier(conn, name)}")


def _ledger_balance(conn: sa.Connection, name: str) -> int:
    ledger = ingestion_ledger.c
    balance = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(ledger.rows_inserted), 0) - sa.func.coalesce(sa.func.sum(ledger.rows_deleted), 0)).where(ledger.table_name == name)
    ).scalar_one()
    return int(balance)


def _count(conn: sa.Connection, name: str) -> int:
    return conn.exec_driver_sql(f"SELECT count(*) FROM {quote_identifier(conn, name)}").scalar_one()


def _check_foreign_keys(conn: sa.Connection, by_table: dict[str, VerifiedBackup]) -> None:
    """Refuse, with counts, a restore after which some row would point at nothing."""
    broken: dict[str, int] = {}
    for name, item in by_table.items():
        # Rows of the backup whose references would not exist.
        for fk in item.table.foreign_keys:
            parent_ids = by_table[fk.table].ids if fk.table in by_table else _distinct_ids(conn, fk.table, fk.target_column)
            values, counts = item.foreign_values[fk.column]
            missing = int(counts[~np.isin(values, parent_ids)].sum())
            if missing:
                broken[f"{name}.{fk.column} -> {fk.table}.{fk.target_column}"] = missing
        # Rows of other tables that point at ids this backup does not have.
        for child, fk in referencing_tables(name):
            if child.name in by_table:
                continue
            values, counts = _value_counts(conn, child.name, fk.column)
            missing = int(counts[~np.isin(values, item.ids)].sum())
            if missing:
                broken[f"{child.name}.{fk.column} -> {name}.{fk.target_column}"] = missing
    if broken:
        listing = "; ".join(f"{count:,} row(s) of {reference.split(' -> ')[0].split('.')[0]} via {reference}" for reference, count in broken.items())
        files = ", ".join(item.info.name for item in by_table.values())
        raise RestoreRefusedError(
            f"{files}: restoring would break foreign keys: {listing}. Nothing was restored; the tables are unchanged. "
            "Restore a whole snapshot (restore_snapshot_job) to restore related tables together.",
            {"orphans": broken, "orphan_count": sum(broken.values())},
        )


def _distinct_ids(conn: sa.Connection, table: str, column: str) -> np.ndarray:
    values = conn.exec_driver_sql(f"SELECT {quote_identifier(conn, column)} FROM {quote_identifier(conn, table)}").scalars().all()
    return np.unique(np.asarray(values, dtype=np.int64))


def _value_counts(conn: sa.Connection, table: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    rows = conn.exec_driver_sql(f"SELECT {quote_identifier(conn, column)}, count(*) FROM {quote_identifier(conn, table)} GROUP BY {quote_identifier(conn, column)}").all()
    if not rows:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    values, counts = zip(*rows)
    return np.asarray(values, dtype=np.int64), np.asarray(counts, dtype=np.int64)


def _columns_sql(conn: sa.Connection, table: BackupTable) -> str:
    return ", ".join(quote_identifier(conn, c) for c in table.column_names)


def _write_rows(conn: sa.Connection, item: VerifiedBackup, target: str) -> None:
    """Stream the spooled rows into `target`: COPY on PostgreSQL, executemany on SQLite."""
    columns = _columns_sql(conn, item.table)
    if is_postgres(conn):
        # Times go out as naive UTC text (Arrow writes those ~10x faster than zoned ones), read
        # back as UTC by the session time zone set here for this transaction only.
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT csv)") as copy:
            for batch in item.spooled_batches():
                buffer = io.BytesIO()
                pacsv.write_csv(_naive_times(batch, item.table), buffer, pacsv.WriteOptions(include_header=False))
                copy.write(buffer.getbuffer())
        return
    placeholders = ", ".join("?" for _ in item.table.columns)
    for batch in item.spooled_batches():
        naive = _naive_times(batch, item.table)
        # SQLAlchemy's SQLite DateTime text: naive UTC, microseconds; Arrow's cast writes exactly that.
        arrays = [naive.column(i).cast(pa.string()).to_pylist() if c.kind == "timestamp" else naive.column(i).to_pylist() for i, c in enumerate(item.table.columns)]
        conn.exec_driver_sql(f"INSERT INTO {target} ({columns}) VALUES ({placeholders})", list(zip(*arrays)))


def _naive_times(batch: pa.RecordBatch, table: BackupTable) -> pa.RecordBatch:
    arrays = [batch.column(i).cast(pa.timestamp("us")) if c.kind == "timestamp" else batch.column(i) for i, c in enumerate(table.columns)]
    return pa.RecordBatch.from_arrays(arrays, names=table.column_names)


def _load(conn: sa.Connection, item: VerifiedBackup) -> None:
    """Into the emptied table. A large PostgreSQL load drops the foreign keys, secondary indexes
    and (if nothing references it) the primary key, and builds them once after the COPY, as
    ingestion's first load does: one sorted index build and one set-wise key check beat per-row upkeep."""
    target = quote_identifier(conn, item.table.name)
    sql_table = item.table.sql_table
    bulk = _is_bulk(conn, item)
    keep_key = bool(referencing_tables(item.table.name))
    if bulk:
        drop_secondary_structures(conn, sql_table, primary_key=not keep_key)
    _write_rows(conn, item, target if is_postgres(conn) else f"main.{target}")
    if bulk:
        create_secondary_structures(conn, sql_table, primary_key=not keep_key)


def _merge(conn: sa.Connection, item: VerifiedBackup) -> None:
    """Replace the contents of a table others reference without ever deleting a referenced row:
    stage the backup, delete the rows it lacks (checked unreferenced), upsert the rest."""
    postgres = is_postgres(conn)
    table = item.table
    target = quote_identifier(conn, table.name)
    stage = f"gdx_restore_{table.name}"
    columns = _columns_sql(conn, table)
    key = quote_identifier(conn, table.primary_key)
    if postgres:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{stage}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP")
        stage_ref, target_ref = stage, target
    else:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{stage}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} AS SELECT {columns} FROM main.{target} WHERE 0")
        stage_ref, target_ref = f"temp.{stage}", f"main.{target}"
    _write_rows(conn, item, stage_ref)
    conn.exec_driver_sql(f"DELETE FROM {target_ref} WHERE NOT EXISTS (SELECT 1 FROM {stage_ref} AS s WHERE s.{key} = {target_ref}.{key})")
    others = [c for c in table.column_names if c != table.primary_key]
    assignments = ", ".join(f"{quote_identifier(conn, c)} = excluded.{quote_identifier(conn, c)}" for c in others)
    conflict = f"ON CONFLICT ({key}) DO UPDATE SET {assignments}" if others else f"ON CONFLICT ({key}) DO NOTHING"
    conn.exec_driver_sql(f"INSERT INTO {target_ref} ({columns}) SELECT {columns} FROM {stage_ref} WHERE true {conflict}")
    conn.exec_driver_sql(f"DROP TABLE {stage_ref}")


def _after_load(conn: sa.Connection, item: VerifiedBackup) -> None:
    if not is_postgres(conn):
        return
    target = quote_identifier(conn, item.table.name)
    column = item.table.sql_table.c[item.table.primary_key]
    if column.autoincrement is True:
        # A serial id: new rows must be numbered after the restored ones.
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{item.table.name}', '{item.table.primary_key}'), "
            f"coalesce(max({quote_identifier(conn, item.table.primary_key)}), 0) + 1, false) FROM {target}"
        )
    if _is_bulk(conn, item):
        conn.exec_driver_sql(f"ANALYZE {target}")


def discard_stale_spools(folders: DataFolders) -> list[str]:
    """Remove spools of restores that died (hidden `.restore-*` folders) once a day old."""
    cutoff = time.time() - STALE_PART_AGE.total_seconds()
    removed = []
    for folder in folders.backups.glob(".restore-*"):
        with contextlib.suppress(FileNotFoundError):
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
    return removed
