"""The gdx_pipeline code location: assembles what the defs modules define, nothing else."""

import dagster as dg

from gdx_pipeline.defs.ingest.assets import landing_files, quarantined_files, rejected_rows, table_assets
from gdx_pipeline.defs.ingest.checks import table_checks
from gdx_pipeline.defs.ingest.jobs import migrate_job
from gdx_pipeline.defs.ingest.sensors import landing_files_sensor
from gdx_pipeline.defs.resources import resources_from_environment

defs = dg.Definitions(
    assets=[landing_files, *table_assets, rejected_rows, quarantined_files],
    asset_checks=table_checks,
    jobs=[migrate_job],
    sensors=[landing_files_sensor],
    resources=resources_from_environment(),
)
