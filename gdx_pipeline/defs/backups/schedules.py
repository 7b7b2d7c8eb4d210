"""The nightly backup: `backup_job` on the cron of the backup settings (`GDX_BACKUP_CRON`, UTC)."""

import dagster as dg

from gdx_pipeline.defs.backups.jobs import backup_job
from gdx_pipeline.defs.backups.resources import BackupSettingsResource, code_location_backup_settings


def build_nightly_backup_schedule(settings: BackupSettingsResource) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="nightly_backup_schedule",
        job=backup_job,
        cron_schedule=settings.cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Backs up every table at `{settings.cron}` (UTC) and keeps the newest {settings.retention} backups per table.",
    )
    def nightly_backup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        scheduled = context.scheduled_execution_time
        # One run per scheduled time: a daemon that ticks twice for the same slot does not back up twice.
        return dg.RunRequest(
            run_key=f"nightly_backup:{scheduled.isoformat()}" if scheduled else None,
            run_config={},
            tags={"gdx/trigger": "nightly_backup_schedule"},
        )

    return nightly_backup_schedule


nightly_backup_schedule = build_nightly_backup_schedule(code_location_backup_settings())
