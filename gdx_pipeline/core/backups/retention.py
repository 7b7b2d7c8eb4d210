"""Retention: which old backups go, always by whole snapshots, and leftovers of runs that died."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path

from gdx_pipeline.core.backups.avro_schema import BACKUP_TABLES
from gdx_pipeline.core.backups.catalog import PART_SUFFIX, BackupInfo, backup_folder, list_backups, manifest_path
from gdx_pipeline.core.backups.errors import BackupError
from gdx_pipeline.core.csv_source import file_sha256
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.logger import Logger

DEFAULT_RETENTION = 14

# A hidden part file this old belongs to a backup that died; retention removes it.
STALE_PART_AGE = timedelta(days=1)

_default_log = logging.getLogger("gdx_pipeline.backups")


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
