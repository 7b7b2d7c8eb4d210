"""The metrics job: one hiring year's metrics, their checks and its dashboard, by hand or in a backfill."""

import dagster as dg

from gdx_pipeline.defs.metrics.assets import departments_above_mean_hires, hiring_dashboard, quarterly_hires

metrics_job = dg.define_asset_job(
    "metrics_job",
    selection=dg.AssetSelection.assets(quarterly_hires, departments_above_mean_hires, hiring_dashboard),
    description="Recompute one hiring year (a `hiring_year` partition): quarterly hires, departments above the mean, "
    "their checks, the CSVs and the HTML dashboard. Runs by itself after every load through metrics_automation_sensor.",
    # Three short SQL steps: a subprocess each would cost more (a Python start-up and an import
    # of the code location) than the work.
    executor_def=dg.in_process_executor,
)
