"""Declarative automation for the metrics: the sensor that evaluates their `eager()` conditions."""

import dagster as dg

from gdx_pipeline.defs.metrics.assets import METRICS_GROUP

metrics_automation_sensor = dg.AutomationConditionSensorDefinition(
    "metrics_automation_sensor",
    target=dg.AssetSelection.groups(METRICS_GROUP),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Refreshes the hiring metrics after loads: when departments, jobs or hired_employees update, requests "
    "hiring_years and every known year's metrics and dashboard (one run per year); a new year is requested once "
    "hiring_years adds its partition.",
)
