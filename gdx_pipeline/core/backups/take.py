"""Taking backups: every table of one run from one snapshot, written to Avro, then retention.

Each file is written with fastavro under a hidden temporary name and renamed into place,
followed by its manifest (rows, sha256, schema fingerprint, snapshot id and tables, created
time). The manifest is written last: a backup without one is not a backup, so a run killed at
any moment leaves nothing that a restore would pick up.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.ipc as ipc
import sqlalchemy as sa

from gdx_pipeline.core.atomic_files import write_text_atomically
from gdx_pipeline.core.backups import avro_writer
from gdx_pipeline.core.backups.avro_schema import BACKUP_TABLES, BackupTable
from gdx_pipeline.core.backups.avro_writer import AvroFileSpec, WrittenFile, write_avro
from gdx_pipeline.core.backups.catalog import MANIFEST_FORMAT, PART_SUFFIX, backup_file_name, known_table, manifest_path, snapshot_id_at
from gdx_pipeline.core.backups.errors import BackupError
from gdx_pipeline.core.backups.retention import discard_stale_spools, prune_backups
from gdx_pipeline.core.backups.snapshot import CHUNK_ROWS, SnapshotReader
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.logger import Logger
from gdx_pipeline.core.utc import now_utc

DEFAULT_CODEC = "deflate"

# From this many rows on, fastavro encodes in a helper process while this one reads the database.
HELPER_PROCESS_ROWS = 200_000

_default_log = logging.getLogger("gdx_pipeline.backups")


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
    selected = [BACKUP_TABLES[known_table(name)] for name in (list(tables) if tables is not None else BACKUP_TABLES)]
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
        write_text_atomically(manifest_path(final), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
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
    """Stream the batches to a helper process running `avro_writer.py`, which encodes them into `part`.

    The module is run by its path, with `-P` (the script's folder stays off `sys.path`), so the
    helper does not import this package and its database stack: it starts with pyarrow and
    fastavro only.
    """
    with tempfile.TemporaryFile() as errors:
        helper = subprocess.Popen(
            [sys.executable, "-P", avro_writer.__file__, str(part), spec.to_json()],
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
            raise BackupError(
                f"the Avro writer process failed ({detail[-1] if detail else f'exit status {helper.returncode}'}); no backup was written"
            )
    written = WrittenFile(**json.loads(output))
    if written.rows != sent:
        raise BackupError(f"the Avro writer process wrote {written.rows:,} rows of {sent:,}; no backup was written")
    return written
