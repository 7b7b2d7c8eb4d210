"""Which backups exist: file names, manifests, listing, and what `latest` or a name means.

A backup is a file `backups/<table>/<table>__<snapshot id>.avro` with a sidecar manifest that
agrees with it; a file without one is not a backup. A snapshot is the set of backups one run
took, named by its snapshot id (the UTC time it was taken); each manifest records the tables
its snapshot was taken of.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# Re-exported: the suffix of hidden files being written; retention sweeps stale ones.
from gdx_pipeline.core.atomic_files import PART_SUFFIX as PART_SUFFIX
from gdx_pipeline.core.backups.avro_schema import BACKUP_TABLES
from gdx_pipeline.core.backups.errors import BackupNotFoundError, InvalidBackupNameError, UnknownBackupTableError
from gdx_pipeline.core.backups.verify import check_snapshot_whole
from gdx_pipeline.core.folders import DataFolders

MANIFEST_FORMAT = "gdx-backup/1"
AVRO_SUFFIX = ".avro"
MANIFEST_SUFFIX = ".manifest.json"
_STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_STAMP = re.compile(r"\d{8}T\d{6}\.\d{6}Z")


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


def backup_folder(folders: DataFolders, table: str) -> Path:
    return folders.backups / known_table(table)


def known_table(table: str) -> str:
    """`table`, or UnknownBackupTableError (a BackupNotFoundError) listing the tables with backups."""
    if table not in BACKUP_TABLES:
        raise UnknownBackupTableError(table, BACKUP_TABLES)
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


def resolve_backup(folders: DataFolders, table: str, backup: str = "latest") -> BackupInfo:
    """The backup a user named: `latest`, or a file name listed in `backups/<table>/`."""
    known_table(table)
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
    check_snapshot_whole(snapshot, backups, snapshots)
    return list(backups.values())
