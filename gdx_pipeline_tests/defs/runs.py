"""The code location's pieces on a test's own warehouse, run in process, and what their
materializations say (metadata values, the files a table's `sources` lists)."""

import hashlib

import dagster as dg

from gdx_pipeline.defs.ingest.assets import landing_files, quarantined_files, rejected_rows, table_assets
from gdx_pipeline.defs.ingest.checks import table_checks
from gdx_pipeline.defs.ingest.jobs import migrate_job
from gdx_pipeline.defs.metrics.assets import metrics_assets
from gdx_pipeline.defs.metrics.jobs import metrics_job
from gdx_pipeline.defs.metrics.sensors import metrics_automation_sensor
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource
from gdx_pipeline_tests.paths import GLOBANT_DATA


def pipeline_definitions(database_url, folders) -> dg.Definitions:
    """The code location's ingest and metrics parts, on this test's warehouse and data folder."""
    data = DataFolderResource(data_dir=str(folders.root))
    return dg.Definitions(
        assets=[landing_files, *table_assets, rejected_rows, quarantined_files, *metrics_assets],
        asset_checks=table_checks,
        jobs=[migrate_job, metrics_job],
        sensors=[metrics_automation_sensor],
        resources={"data_folder": data, "warehouse": WarehouseResource(data=data, database_url=database_url)},
    )


def metadata_entries_of(result, asset: str) -> dict[str, dg.MetadataValue]:
    (event,) = result.asset_materializations_for_node(asset)
    return dict(event.metadata)


def metadata_of(result, asset: str) -> dict:
    return {key: value.value for key, value in metadata_entries_of(result, asset).items()}


def file_sources(metadata: dict) -> set[tuple[str, str, str]]:
    """(table, file, sha256 prefix) of each file the `sources` table lists."""
    return {(r.data["table"], r.data["source"], r.data["sha256"]) for r in metadata["sources"].records if r.data["kind"] == "file"}


def real_files(*tables: str) -> set[tuple[str, str, str]]:
    return {(t, f"{t}.csv", hashlib.sha256((GLOBANT_DATA / f"{t}.csv").read_bytes()).hexdigest()[:12]) for t in tables}


def run(defs, job: str, instance, run_config=None):
    return defs.resolve_job_def(job).execute_in_process(instance=instance, run_config=run_config or {}, raise_on_error=False)
