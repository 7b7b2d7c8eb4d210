"""Declarative automation for the metrics: the sensor that evaluates their automation conditions,
and those of the tables' blocking checks the metrics wait on."""

import dagster as dg

from gdx_pipeline.defs.ingest.checks import blocking_check_keys
from gdx_pipeline.defs.metrics.assets import METRICS_GROUP, NIGHTLY_REFRESH_CRON

metrics_automation_sensor = dg.AutomationConditionSensorDefinition(
    "metrics_automation_sensor",
    target=dg.AssetSelection.groups(METRICS_GROUP) | dg.AssetSelection.checks(*blocking_check_keys),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Refreshes the hiring metrics after loads, and nightly at "
    f"{NIGHTLY_REFRESH_CRON} (UTC): when departments, jobs or hired_employees update and their blocking checks "
    "(matches_dictionary, no_orphans) pass, requests hiring_years and every known year's metrics (one run per year), "
    "then the dashboard once they settle; a new year is requested once hiring_years adds its partition. Runs the "
    "blocking checks itself after a write made outside a run (an API batch).",
)
