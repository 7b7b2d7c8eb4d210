"""Backups and restores over HTTP, run as the code location's own Dagster jobs.

A backup runs `backup_job` on the table's backup asset; a restore runs `restore_table_job`.
Both are recorded as runs in the Dagster instance, exactly as if launched from the UI. A restore
names `latest` or a backup's file name, resolved by `core.backups.resolve_backup` as every restore
is (a plain file name of that table's backups, or refused); only the listed backup's own name is
passed on to the run.
"""

from __future__ import annotations

from typing import Annotated

import dagster as dg
from fastapi import APIRouter, Body, Path
from starlette.concurrency import run_in_threadpool

from gdx_pipeline.api.auth import WriteAccess
from gdx_pipeline.api.dependencies import Dagster, Settings
from gdx_pipeline.api.errors import Conflict, JobFailed
from gdx_pipeline.api.models import LATEST, Backup, BackupTaken, ErrorResponse, Restored, RestoreRequest
from gdx_pipeline.core.backups import (
    BACKUP_TABLES,
    BackupError,
    BackupInfo,
    BackupNotFoundError,
    backup_table_named,
    list_backups,
    resolve_backup,
)
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.defs.backups.assets import backup_asset_key
from gdx_pipeline.defs.backups.listing import restore_table_run_config
from gdx_pipeline.dictionary import excerpt

router = APIRouter(tags=["backups"])

BACKUP_JOB = "backup_job"
RESTORE_JOB = "restore_table_job"

BackupTableName = Annotated[
    str,
    Path(description=f"One of {', '.join(BACKUP_TABLES)}.", json_schema_extra={"enum": list(BACKUP_TABLES)}),
]


def requested_backup(folders: DataFolders, table: str, wanted: str) -> BackupInfo:
    """The backup a request names, resolved as every restore resolves one; a refusal is worded
    for an HTTP client (the endpoints to call, no server paths)."""
    try:
        return resolve_backup(folders, table, wanted)
    except BackupError:
        if wanted.strip() == LATEST:
            raise BackupNotFoundError(f"there is no backup of {table} yet; POST /tables/{table}/backups takes one") from None
        raise BackupNotFoundError(
            f"no backup named {excerpt(wanted.strip())} for {table}; GET /tables/{table}/backups lists them, or use 'latest'"
        ) from None


def as_backup(info: BackupInfo) -> Backup:
    return Backup(
        table=info.table,
        file=info.name,
        rows=info.rows,
        bytes=info.bytes,
        sha256=info.sha256,
        snapshot_id=info.snapshot_id,
        created=info.created,
        codec=info.codec,
    )


def run_failure(result) -> tuple[bool, str]:  # noqa: ANN001
    """(refused, message) of a failed run: a refusal is the job's own `dg.Failure` with its
    reason; anything else is an error, described by its message only (no traceback)."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return True, data.user_failure_data.description
            return False, (data.error.message.strip() if data.error else "the step failed")
    return False, "the run failed"


def materialization_metadata(result, key) -> dict[str, object]:  # noqa: ANN001
    """The metadata of the run's materialization of `key`, as plain values."""
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key == key:
            return {name: value.value for name, value in materialization.metadata.items()}
    raise JobFailed(f"run {result.run_id} succeeded but recorded no materialization of {key.to_user_string()}")


_WRITE_ERRORS = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token (only when the server has GDX_API_TOKEN)."},
    404: {"model": ErrorResponse, "description": "Unknown table, or no such backup."},
    422: {"model": ErrorResponse, "description": "Invalid request body."},
    500: {"model": ErrorResponse, "description": "The Dagster run failed; the message says why and names the run."},
}


@router.post(
    "/tables/{table}/backups",
    status_code=201,
    response_model=BackupTaken,
    summary="Back up one table to Avro now (runs backup_job on its backup asset)",
    responses=_WRITE_ERRORS,
)
async def take_backup(table: BackupTableName, settings: Settings, dagster: Dagster, _auth: None = WriteAccess) -> BackupTaken:
    table = backup_table_named(table).name
    key = backup_asset_key(table)
    result = await run_in_threadpool(dagster.run_job, BACKUP_JOB, asset_selection=[key], tags={"gdx/table": table})
    if not result.success:
        raise JobFailed(f"backup run {result.run_id} failed: {run_failure(result)[1]}")
    file_name = str(materialization_metadata(result, key)["file"]).rsplit("/", 1)[-1]
    try:
        taken = resolve_backup(settings.data_folder.folders(), table, file_name)
    except BackupError:
        raise JobFailed(f"backup run {result.run_id} finished but {file_name} is not among the listed backups of {table}") from None
    return BackupTaken(**as_backup(taken).model_dump(), run_id=result.run_id)


@router.get(
    "/tables/{table}/backups",
    response_model=list[Backup],
    summary="The complete backups of one table, newest first",
    responses={404: _WRITE_ERRORS[404]},
)
def get_backups(table: BackupTableName, settings: Settings) -> list[Backup]:
    return [as_backup(info) for info in list_backups(settings.data_folder.folders(), backup_table_named(table).name)]


@router.post(
    "/tables/{table}/restore",
    response_model=Restored,
    summary="Replace a table's contents with a verified backup (runs restore_table_job)",
    responses={
        **_WRITE_ERRORS,
        409: {
            "model": ErrorResponse,
            "description": "Restore refused (the backup failed verification, or keys would break); nothing changed.",
        },
    },
)
async def restore(
    table: BackupTableName,
    settings: Settings,
    dagster: Dagster,
    request: Annotated[RestoreRequest, Body()] = RestoreRequest(),  # noqa: B008  (immutable: never changed)
    _auth: None = WriteAccess,
) -> Restored:
    table = backup_table_named(table).name
    chosen = requested_backup(settings.data_folder.folders(), table, request.backup).name  # the listing's own string
    run_config = restore_table_run_config(table, chosen)
    result = await run_in_threadpool(dagster.run_job, RESTORE_JOB, run_config=run_config, tags={"gdx/table": table})
    if not result.success:
        refused, message = run_failure(result)
        if refused:
            raise Conflict(f"restore of {table} from {chosen} refused, nothing changed (run {result.run_id}): {message}")
        raise JobFailed(f"restore run {result.run_id} failed: {message}")
    metadata = materialization_metadata(result, dg.AssetKey(table))
    return Restored(
        table=table,
        backup=chosen,
        rows_restored=int(metadata["rows"]),
        rows_replaced=int(metadata["rows_replaced"]),
        run_id=result.run_id,
    )
