"""Avro backups of the warehouse tables, and restores that verify everything before they write.

One idea per module:

- `catalog`: which backups exist — file names, manifests, listing, what `latest` or a name means.
- `snapshot`: reading every table from one consistent point in time, in typed chunks.
- `take`: taking backups (codecs, the Avro files and their manifests), then retention.
- `retention`: which old backups go, always by whole snapshots.
- `verify`: why a restore is refused — everything a restore checks before and as it writes.
- `restore`: the swap itself, in one transaction.
- `errors`: the errors a user can cause.
- `avro_schema`, `avro_writer`: the Avro schemas derived from the dictionary, and the encoder
  (run in a helper process for large tables).

The names below are the package's public interface; import them from here.
"""

from gdx_pipeline.core.backups.avro_schema import (
    BACKUP_TABLES,
    BackupColumn,
    BackupTable,
    UnknownBackupTableError,
    avro_schema,
    backup_table_named,
    referencing_tables,
    schema_fingerprint,
    schema_signature,
)
from gdx_pipeline.core.backups.catalog import (
    AVRO_SUFFIX,
    MANIFEST_FORMAT,
    MANIFEST_SUFFIX,
    PART_SUFFIX,
    BackupInfo,
    backup_file_name,
    backup_folder,
    list_backups,
    list_snapshots,
    manifest_path,
    resolve_backup,
    resolve_snapshot,
    snapshot_id_at,
)
from gdx_pipeline.core.backups.errors import BackupError, BackupNotFoundError, InvalidBackupNameError, RestoreRefusedError
from gdx_pipeline.core.backups.restore import BULK_RESTORE_ROWS, RestoreResult, restore_backups, restore_snapshot, restore_table
from gdx_pipeline.core.backups.retention import DEFAULT_RETENTION, STALE_PART_AGE, discard_stale_spools, prune_backups
from gdx_pipeline.core.backups.snapshot import CHUNK_ROWS, SnapshotReader, arrow_schema, arrow_type, lock_order
from gdx_pipeline.core.backups.take import (
    DEFAULT_CODEC,
    HELPER_PROCESS_ROWS,
    BackupResult,
    available_codecs,
    backup_table,
    backup_tables,
    check_codec,
)
from gdx_pipeline.core.backups.verify import VerifiedBackup, check_snapshot_whole, missing_tables, verify_backup

__all__ = [
    "AVRO_SUFFIX",
    "BACKUP_TABLES",
    "BULK_RESTORE_ROWS",
    "CHUNK_ROWS",
    "DEFAULT_CODEC",
    "DEFAULT_RETENTION",
    "HELPER_PROCESS_ROWS",
    "MANIFEST_FORMAT",
    "MANIFEST_SUFFIX",
    "PART_SUFFIX",
    "STALE_PART_AGE",
    "BackupColumn",
    "BackupError",
    "BackupInfo",
    "BackupNotFoundError",
    "BackupResult",
    "BackupTable",
    "InvalidBackupNameError",
    "RestoreRefusedError",
    "RestoreResult",
    "SnapshotReader",
    "UnknownBackupTableError",
    "VerifiedBackup",
    "arrow_schema",
    "arrow_type",
    "available_codecs",
    "avro_schema",
    "backup_file_name",
    "backup_folder",
    "backup_table",
    "backup_table_named",
    "backup_tables",
    "check_codec",
    "check_snapshot_whole",
    "discard_stale_spools",
    "list_backups",
    "list_snapshots",
    "lock_order",
    "manifest_path",
    "missing_tables",
    "prune_backups",
    "referencing_tables",
    "resolve_backup",
    "resolve_snapshot",
    "restore_backups",
    "restore_snapshot",
    "restore_table",
    "schema_fingerprint",
    "schema_signature",
    "snapshot_id_at",
    "verify_backup",
]
