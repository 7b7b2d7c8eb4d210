"""migrate_job through Dagster, on SQLite and PostgreSQL: materializations, checks, failures."""

import dagster as dg

from gdx_pipeline.defs.ingest.assets import landing_files, quarantined_files, rejected_rows, table_assets
from gdx_pipeline.defs.ingest.checks import table_checks
from gdx_pipeline.defs.ingest.jobs import migrate_job
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource
from gdx_pipeline_tests.warehouse_contents import table_count


def run_migrate_job(database_url, folders, instance):
    data = DataFolderResource(data_dir=str(folders.root))
    defs = dg.Definitions(
        assets=[landing_files, *table_assets, rejected_rows, quarantined_files],
        asset_checks=table_checks,
        jobs=[migrate_job],
        resources={"data_folder": data, "warehouse": WarehouseResource(data=data, database_url=database_url)},
    )
    return defs.resolve_job_def("migrate_job").execute_in_process(instance=instance, raise_on_error=False)


def materialization(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def test_migrate_job_loads_the_real_data_and_every_check_passes(database_url, engine, globant_landing):
    with dg.instance_for_test() as instance:
        result = run_migrate_job(database_url, globant_landing, instance)
        assert result.success

        employees = materialization(result, "hired_employees")
        assert (employees["rows_inserted"], employees["rows_rejected"], employees["dagster/row_count"]) == (1929, 70, 1929)
        assert employees["rejects_by_reason"] == {
            "department_id: missing": 21,
            "name: missing": 19,
            "job_id: missing": 16,
            "datetime: missing": 14,
        }
        assert "hired_employees.csv" in employees["files"]
        assert materialization(result, "departments")["dagster/row_count"] == 12
        assert materialization(result, "rejected_rows")["rejected_this_run"] == 70

        evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert len(evaluations) == 3 * 4 + 1  # per table: readable, unique, dictionary, ledger; plus no_orphans
        assert all(e.passed for e in evaluations), [(e.asset_check_key, e.metadata) for e in evaluations if not e.passed]

        second = run_migrate_job(database_url, globant_landing, instance)
        assert second.success
        assert materialization(second, "hired_employees")["files_applied"] == 0
        assert table_count(engine, "hired_employees") == 1929


def test_an_unreadable_file_fails_the_run_after_everything_else_loaded(sqlite_url, folders):
    (folders.landing / "departments.csv").write_text("1,Engineering\n")
    (folders.landing / "jobs_broken.csv").write_bytes(b"\x00\x01garbage")
    (folders.landing / "payroll.csv").write_text("1,2\n")
    with dg.instance_for_test() as instance:
        result = run_migrate_job(sqlite_url, folders, instance)
    assert not result.success
    failed = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failed] == ["quarantined_files"]
    message = failed[0].event_specific_data.error.message
    assert "jobs_broken.csv: binary content" in message and "payroll.csv: unknown file name" in message
    assert materialization(result, "departments")["dagster/row_count"] == 1
    jobs_check = [
        e.event_specific_data for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.asset_check_key.name == "landing_files_readable"
        and e.event_specific_data.asset_check_key.asset_key == dg.AssetKey("jobs")
    ]
    assert [c.passed for c in jobs_check] == [False]
    assert sorted(p.name for p in folders.quarantine.iterdir()) == [
        "jobs_broken.csv", "jobs_broken.csv.reason.txt", "payroll.csv", "payroll.csv.reason.txt"
    ]


def test_the_reject_preview_quotes_an_excerpt_of_a_long_line(database_url, engine, folders):
    """The reject log keeps thousands of characters of a long line; the run's preview in
    Dagster's metadata shows an excerpt of each with its length, never the stored text whole."""
    name = "x" * 5_000
    (folders.landing / "departments.csv").write_text(f"1,Sales\n2,{name}\n", encoding="utf-8")
    with dg.instance_for_test() as instance:
        result = run_migrate_job(database_url, folders, instance)
        assert materialization(result, "rejected_rows")["rejected_this_run"] == 1
        preview = materialization(result, "rejected_rows")["preview_this_run"]
        assert name not in preview
        assert f"2,{'x' * 78}… (5,002 characters)" in preview
        assert len(preview) < 2_000
