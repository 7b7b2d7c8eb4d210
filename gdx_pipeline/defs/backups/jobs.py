"""Backup and restore jobs.

`backup_job` (no config) backs up every table from one snapshot. `restore_table_job` restores
one table from `latest` or a named backup file; `restore_snapshot_job` restores every table of
one snapshot together. A refused restore fails the run with the reason (and counts) and leaves
the database exactly as it was; a successful one records a materialization of the restored
table asset, so its history says where the rows came from.
"""

import dagster as dg
from pydantic import Field

from gdx_pipeline.core.backups import BackupError, RestoreRefusedError, RestoreResult, restore_snapshot, restore_table
from gdx_pipeline.defs.backups.assets import BACKUP_GROUP
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource

backup_job = dg.define_asset_job(
    "backup_job",
    selection=dg.AssetSelection.groups(BACKUP_GROUP),
    description="Back up every table (departments, jobs, hired_employees, rejected_rows) to Avro from one "
    "consistent snapshot, then delete backups beyond the retention setting.",
)


class RestoreTableConfig(dg.Config):
    table: str = Field(description="departments, jobs, hired_employees or rejected_rows.")
    backup: str = Field(default="latest", description="'latest', or a file name listed in backups/<table>/.")


class RestoreSnapshotConfig(dg.Config):
    snapshot: str = Field(default="latest", description="'latest' (newest snapshot covering every table) or a snapshot id.")


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


def _failure(error: BackupError) -> dg.Failure:
    details = error.details if isinstance(error, RestoreRefusedError) else {}
    return dg.Failure(description=str(error), metadata={"details": dg.MetadataValue.json(details)} if details else None, allow_retries=False)


@dg.op(
    name="restore_table",
    description="Verify a backup (sha256, schema, every row) and replace the table's contents with it in one transaction.",
)
def restore_table_op(
    context: dg.OpExecutionContext, config: RestoreTableConfig, warehouse: WarehouseResource, data_folder: DataFolderResource
) -> None:
    try:
        result = restore_table(warehouse.engine(), data_folder.folders(), config.table, config.backup, run_id=context.run_id, log=context.log)
    except BackupError as error:
        raise _failure(error) from None
    _record_restores(context, [result])


@dg.op(
    name="restore_snapshot",
    description="Verify every backup of one snapshot and restore all its tables together, in dependency order, in one transaction.",
)
def restore_snapshot_op(
    context: dg.OpExecutionContext, config: RestoreSnapshotConfig, warehouse: WarehouseResource, data_folder: DataFolderResource
) -> None:
    try:
        results = restore_snapshot(warehouse.engine(), data_folder.folders(), config.snapshot, run_id=context.run_id, log=context.log)
    except BackupError as error:
        raise _failure(error) from None
    _record_restores(context, results)


@dg.job(
    name="restore_table_job",
    description="Restore one table from a backup. Config: {ops: {restore_table: {config: {table: hired_employees, backup: latest}}}}.",
)
def restore_table_job():
    restore_table_op()


@dg.job(
    name="restore_snapshot_job",
    description="Restore every table of one backup snapshot together. Config: {ops: {restore_snapshot: {config: {snapshot: latest}}}}.",
)
def restore_snapshot_job():
    restore_snapshot_op()
