"""The migration job: everything waiting in landing, in dependency order."""

import dagster as dg

from gdx_pipeline.defs.ingest.assets import INGEST_GROUP

migrate_job = dg.define_asset_job(
    "migrate_job",
    selection=dg.AssetSelection.groups(INGEST_GROUP),
    description="Apply every file waiting in the landing folder: departments and jobs first, then hired employees; "
    "invalid rows go to the reject log, unreadable files to quarantine.",
    # Files must apply one after another anyway; one process saves a Python start-up per step.
    executor_def=dg.in_process_executor,
)
