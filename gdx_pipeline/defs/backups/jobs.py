"""Backup and restore jobs.

`backup_job` (no config) backs up every table from one snapshot. `restore_table_job` restores
one table (picked from a list in the Launchpad) from `latest` or a named backup file;
`restore_snapshot_job` restores every table of one snapshot together. The backups that exist,
with run configs to paste, are listed in each `backups/<table>` asset's latest materialization.
A refused restore fails the run with the reason as the failure's description (and its counts
as metadata), logged first on its own, and leaves the database exactly as it was; a
successful one records a materialization of the restored table asset, so its history says
where the rows came from.
"""

import enum

import dagster as dg
from pydantic import Field

from gdx_pipeline.core.backups import BACKUP_TABLES, BackupError, RestoreRefusedError, RestoreResult, restore_snapshot, restore_table
from gdx_pipeline.defs.backups.assets import BACKUP_GROUP
from gdx_pipeline.defs.backups.listing import RESTORE_SNAPSHOT_OP, RESTORE_TABLE_OP
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource

backup_job = dg.define_asset_job(
    "backup_job",
    selection=dg.AssetSelection.groups(BACKUP_GROUP),
    description="Back up every table (departments, jobs, hired_employees, rejected_rows) to Avro from one "
    "consistent snapshot, then delete backups beyond the retention setting.",
)


# The Launchpad offers these as a list (a Dagster Enum), so a table cannot be misspelled.
BackupTableName = enum.Enum("BackupTableName", [(name, name) for name in BACKUP_TABLES], type=str)

WHERE_BACKUPS_ARE_LISTED = "the backups/<table> asset's latest materialization lists them, with a run config to paste"


class RestoreTableConfig(dg.Config):
    table: BackupTableName = Field(description="The table to restore.")
    backup: str = Field(default="latest", description=f"'latest', or a backup file name of that table ({WHERE_BACKUPS_ARE_LISTED}).")


class RestoreSnapshotConfig(dg.Config):
    snapshot: str = Field(
        default="latest", description=f"'latest' (the newest snapshot of every table) or a snapshot id ({WHERE_BACKUPS_ARE_LISTED})."
    )


def _record_restores(context: dg.OpExecutionContext, results: list[RestoreResult]) -> None:
    for result in results:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=result.table,
                description=f"Restored from backup {result.backup}",
                metadata={
                    "restored_from": result.backup,
                    "snapshot_id": result.snapshot_id,
                    "rows": result.rows_restored,
                    "dagster/row_count": result.rows_restored,
                    "rows_replaced": result.rows_replaced,
                    "duration_seconds": round(result.seconds, 3),
                },
            )
        )


def _failure(context: dg.OpExecutionContext, error: BackupError) -> dg.Failure:
    """The refusal as the step's failure: its message is the description, its counts the
    metadata. Logged on its own first, so the run's log leads with the reason rather than with
    the failure's stack of framework frames."""
    context.log.error(str(error))
    details = error.details if isinstance(error, RestoreRefusedError) else {}
    return dg.Failure(
        description=str(error), metadata={key: _metadata_value(value) for key, value in details.items()} or None, allow_retries=False
    )


def _metadata_value(value: object) -> object:
    """Plain values and lists of names as text the UI shows inline; anything nested as JSON."""
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    return dg.MetadataValue.json(value)


@dg.op(
    name=RESTORE_TABLE_OP,
    description="Verify a backup (sha256, schema, every row) and replace the table's contents with it in one transaction.",
)
def restore_table_op(
    context: dg.OpExecutionContext, config: RestoreTableConfig, warehouse: WarehouseResource, data_folder: DataFolderResource
) -> None:
    try:
        result = restore_table(
            warehouse.engine(), data_folder.folders(), config.table.value, config.backup, run_id=context.run_id, log=context.log
        )
    except BackupError as error:
        raise _failure(context, error) from None
    _record_restores(context, [result])


@dg.op(
    name=RESTORE_SNAPSHOT_OP,
    description="Verify every backup of one snapshot and restore all its tables together, in dependency order, in one transaction.",
)
def restore_snapshot_op(
    context: dg.OpExecutionContext, config: RestoreSnapshotConfig, warehouse: WarehouseResource, data_folder: DataFolderResource
) -> None:
    try:
        results = restore_snapshot(warehouse.engine(), data_folder.folders(), config.snapshot, run_id=context.run_id, log=context.log)
    except BackupError as error:
        raise _failure(context, error) from None
    _record_restores(context, results)


@dg.job(
    name="restore_table_job",
    description="Restore one table from a backup. Config: {ops: {restore_table: {config: {table: hired_employees, backup: latest}}}}; "
    f"{WHERE_BACKUPS_ARE_LISTED}.",
)
def restore_table_job():
    restore_table_op()


@dg.job(
    name="restore_snapshot_job",
    description="Restore every table of one backup snapshot together. Config: {ops: {restore_snapshot: {config: {snapshot: latest}}}}; "
    f"{WHERE_BACKUPS_ARE_LISTED}.",
)
def restore_snapshot_job():
    restore_snapshot_op()
