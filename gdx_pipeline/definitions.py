"""The gdx_pipeline code location: assembles what the defs modules define, nothing else."""

import dagster as dg

from gdx_pipeline.defs.backups.assets import backup_assets
from gdx_pipeline.defs.backups.checks import backup_checks
from gdx_pipeline.defs.backups.jobs import backup_job, restore_snapshot_job, restore_table_job
from gdx_pipeline.defs.backups.resources import code_location_backup_settings
from gdx_pipeline.defs.backups.schedules import nightly_backup_schedule
from gdx_pipeline.defs.ingest.assets import landing_files, quarantined_files, rejected_rows, table_assets
from gdx_pipeline.defs.ingest.checks import table_checks
from gdx_pipeline.defs.ingest.jobs import migrate_job
from gdx_pipeline.defs.ingest.sensors import landing_files_sensor
from gdx_pipeline.defs.metrics.assets import metrics_assets
from gdx_pipeline.defs.metrics.jobs import metrics_job
from gdx_pipeline.defs.metrics.sensors import metrics_automation_sensor
from gdx_pipeline.defs.resources import resources_from_environment

defs = dg.Definitions(
    assets=[landing_files, *table_assets, rejected_rows, quarantined_files, *metrics_assets, *backup_assets],
    asset_checks=[*table_checks, *backup_checks],
    jobs=[migrate_job, metrics_job, backup_job, restore_table_job, restore_snapshot_job],
    schedules=[nightly_backup_schedule],
    sensors=[landing_files_sensor, metrics_automation_sensor],
    resources={**resources_from_environment(), "backup_settings": code_location_backup_settings()},
)
