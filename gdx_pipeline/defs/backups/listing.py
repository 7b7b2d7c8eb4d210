"""What the Launchpad needs to restore: the backups that exist, and run configs to paste.

Each backup materialization lists its table's backups as they are after retention, with the
run configs that restore the backup just taken and its whole snapshot. JSON is YAML, so a
config copied from the metadata pastes into the Launchpad as it is.
"""

import dagster as dg

from gdx_pipeline.core.backups import BackupInfo, list_backups
from gdx_pipeline.core.folders import DataFolders

RESTORE_TABLE_OP = "restore_table"
RESTORE_SNAPSHOT_OP = "restore_snapshot"

_COLUMNS = [
    dg.TableColumn("file", "string", description="Pass it as `backup` to restore_table_job."),
    dg.TableColumn("snapshot_id", "string", description="Pass it as `snapshot` to restore_snapshot_job."),
    dg.TableColumn("snapshot_tables", "string", description="The tables that snapshot restores together."),
    dg.TableColumn("rows", "int"),
    dg.TableColumn("created", "string", description="UTC."),
]


def restore_table_run_config(table: str, backup: str = "latest") -> dict:
    return {"ops": {RESTORE_TABLE_OP: {"config": {"table": table, "backup": backup}}}}


def restore_snapshot_run_config(snapshot: str = "latest") -> dict:
    return {"ops": {RESTORE_SNAPSHOT_OP: {"config": {"snapshot": snapshot}}}}


def backups_table(backups: list[BackupInfo]) -> dg.TableMetadataValue:
    records = [
        dg.TableRecord(
            {
                "file": info.name,
                "snapshot_id": info.snapshot_id,
                "snapshot_tables": ", ".join(info.snapshot_tables),
                "rows": info.rows,
                "created": info.created.isoformat(),
            }
        )
        for info in backups
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=_COLUMNS))


def restore_metadata(folders: DataFolders, table: str, file: str, snapshot_id: str) -> dict[str, dg.MetadataValue]:
    """The table's backups on disk, newest first, and the run configs that restore `file` and its snapshot."""
    return {
        "backups_on_disk": backups_table(list_backups(folders, table)),
        "restore_this_backup": dg.MetadataValue.json(restore_table_run_config(table, file)),
        "restore_this_snapshot": dg.MetadataValue.json(restore_snapshot_run_config(snapshot_id)),
    }
