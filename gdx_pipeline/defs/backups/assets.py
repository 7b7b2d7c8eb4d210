"""Backup assets: one per table, all written by one op from one database snapshot.

Selecting some of them (the UI's "Materialize selected", or a subset of `backup_job`) backs up
only those tables; whatever is selected shares one snapshot id, so a set is always consistent.
"""

import dagster as dg

from gdx_pipeline.core.backups import BACKUP_TABLES, BackupError, BackupResult, backup_tables
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.defs.backups.listing import restore_metadata
from gdx_pipeline.defs.backups.resources import BackupSettingsResource, code_location_backup_settings
from gdx_pipeline.defs.catalog import BACKUP_LOGIC, DATA_ENGINEERING, PERSONAL_DATA_TABLES, asset_tags, freshness_for_cron, source_version
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource
from gdx_pipeline.defs.retries import TRANSIENT_DATABASE_RETRY, retried_only_when_transient

BACKUP_GROUP = "backups"
ROWS_MATCH_SNAPSHOT = "rows_match_snapshot"


def backup_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["backups", table])


def _backup_spec(table: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=backup_asset_key(table),
        group_name=BACKUP_GROUP,
        owners=[DATA_ENGINEERING],
        tags=asset_tags("backup", pii=table in PERSONAL_DATA_TABLES),
        code_version=source_version(*BACKUP_LOGIC),
        # Expected from every run of nightly_backup_schedule: stale an hour after a missed one.
        freshness_policy=freshness_for_cron(code_location_backup_settings().cron),
        kinds={"avro"},
        deps=[table],
        description=f"Avro backups of `{table}` in `backups/{table}/`: `{table}__<UTC timestamp>.avro` plus a "
        "`.manifest.json` (rows, sha256, schema fingerprint, snapshot id). Schema derived from the data dictionary. "
        "Older backups beyond the retention setting are deleted by whole snapshots, never the newest intact one. "
        "Each materialization lists the backups on disk (`backups_on_disk`) and the run configs that restore this "
        "backup (`restore_this_backup`, for restore_table_job) and its snapshot (`restore_this_snapshot`, for "
        "restore_snapshot_job), ready to paste into the Launchpad.",
        metadata={"gdx/table": table},
    )


def _check_spec(table: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        ROWS_MATCH_SNAPSHOT,
        asset=backup_asset_key(table),
        description="The backup holds exactly as many rows as the table had in the snapshot it was read from.",
    )


def backup_metadata(result: BackupResult, folders: DataFolders) -> dict[str, object]:
    return {
        "file": dg.MetadataValue.path(str(result.path)),
        "dagster/row_count": result.rows,
        "rows": result.rows,
        "bytes": result.bytes,
        "sha256": result.sha256,
        "snapshot_id": result.snapshot_id,
        "codec": result.codec,
        "duration_seconds": round(result.seconds, 3),
        "pruned": dg.MetadataValue.json(result.pruned),
        **restore_metadata(folders, result.table, result.file, result.snapshot_id),
    }


@dg.multi_asset(
    name="table_backups",
    specs=[_backup_spec(table) for table in BACKUP_TABLES],
    check_specs=[_check_spec(table) for table in BACKUP_TABLES],
    can_subset=True,
    retry_policy=TRANSIENT_DATABASE_RETRY,
    description="Back up the selected tables to Avro from one consistent snapshot, then apply retention.",
)
def table_backups(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    data_folder: DataFolderResource,
    backup_settings: BackupSettingsResource,
):
    tables = [table for table in BACKUP_TABLES if backup_asset_key(table) in context.selected_asset_keys]
    folders = data_folder.folders()
    with retried_only_when_transient():
        try:
            results = backup_tables(
                warehouse.engine(),
                folders,
                tables,
                codec=backup_settings.checked_codec(),
                retention=backup_settings.retention,
                log=context.log,
            )
        except BackupError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
    for result in results:
        key = backup_asset_key(result.table)
        yield dg.MaterializeResult(asset_key=key, metadata=backup_metadata(result, folders))
        if dg.AssetCheckKey(key, ROWS_MATCH_SNAPSHOT) in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=ROWS_MATCH_SNAPSHOT,
                passed=result.rows == result.snapshot_rows,
                metadata={
                    "rows_written": result.rows,
                    "snapshot_rows": result.snapshot_rows,
                    "difference": result.rows - result.snapshot_rows,
                },
            )


backup_assets = [table_backups]
