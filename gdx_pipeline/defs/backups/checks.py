"""Checks on the backups: the newest backup of each table is still intact (its sha256 matches
its manifest), and says how old it is, so a silent disk fault or a stopped schedule shows up.

One op checks every table: in a multiprocess run each step is a process of its own, and four
processes to hash four files cost more than the hashing.
"""


import dagster as dg

from gdx_pipeline.core.backups import BACKUP_TABLES, list_backups
from gdx_pipeline.core.csv_source import file_sha256
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.utc import now_utc
from gdx_pipeline.defs.backups.assets import backup_asset_key
from gdx_pipeline.defs.resources import DataFolderResource

LATEST_BACKUP_INTACT = "latest_backup_intact"


def latest_backup_result(folders: DataFolders, table: str) -> dg.AssetCheckResult:
    key = backup_asset_key(table)
    backups = list_backups(folders, table)
    if not backups:
        return dg.AssetCheckResult(
            asset_key=key, check_name=LATEST_BACKUP_INTACT, passed=False, metadata={"backups": 0}, description=f"no backup of {table} yet"
        )
    newest = backups[0]
    intact = file_sha256(newest.path) == newest.sha256
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=LATEST_BACKUP_INTACT,
        passed=intact,
        metadata={
            "file": newest.name,
            "rows": newest.rows,
            "bytes": newest.bytes,
            "age_hours": round((now_utc() - newest.created).total_seconds() / 3600, 2),
            "backups": len(backups),
        },
        description=None if intact else f"{newest.name} does not match its manifest's sha256: restore from an older backup",
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            LATEST_BACKUP_INTACT,
            asset=backup_asset_key(table),
            description=f"The newest backup of {table} exists and its sha256 matches its manifest.",
        )
        for table in BACKUP_TABLES
    ],
    can_subset=True,
    name="latest_backups_intact",
)
def latest_backups_intact(context: dg.AssetCheckExecutionContext, data_folder: DataFolderResource):
    folders = data_folder.folders()
    for table in BACKUP_TABLES:
        if dg.AssetCheckKey(backup_asset_key(table), LATEST_BACKUP_INTACT) in context.selected_asset_check_keys:
            yield latest_backup_result(folders, table)


backup_checks = [latest_backups_intact]
