"""The metric assets through Dagster: year partitions from the data, metrics_job on SQLite and
PostgreSQL (warehouse tables, CSVs, numeric metadata for the Plots tab, the loads that fed
them, checks, dashboard), the checks catching bad stored numbers, declarative automation
requesting the right years after a load, and the tables' blocking checks holding the metrics
back while a table is broken."""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from gdx_pipeline.core import metrics
from gdx_pipeline.core.dashboard import dashboard_path
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.definitions import defs
from gdx_pipeline.defs.ingest.assets import landing_files, table_assets
from gdx_pipeline.defs.ingest.checks import blocking_check_keys, table_checks
from gdx_pipeline.defs.metrics.assets import hiring_year_partitions, hiring_years, metrics_assets
from gdx_pipeline.defs.metrics.checks import ABOVE_MEAN_CHECK, QUARTER_TOTALS_CHECK, check_above_mean, check_quarter_totals
from gdx_pipeline_tests.defs.runs import file_sources, metadata_entries_of, metadata_of, pipeline_definitions, real_files
from gdx_pipeline_tests.published_metrics import REFERENCE_ABOVE_MEAN, REFERENCE_QUARTER_TOTALS

METRIC_KEYS = [dg.AssetKey(name) for name in ("quarterly_hires", "departments_above_mean_hires")]
DASHBOARD = dg.AssetKey("hiring_dashboard")


def check_requested(tick, key: dg.AssetCheckKey) -> bool:
    """Whether an automation tick requested the check (`get_requested_partitions` knows assets only)."""
    return any(r.key == key and r.true_subset.size for r in tick.results)


def check_evaluations(result) -> dict:
    return {
        e.event_specific_data.asset_check_key.name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_metrics_job_publishes_both_metrics_for_a_year(database_url, engine, globant_landing):
    ingest_landing(engine, globant_landing, run_id="load")
    defs = pipeline_definitions(database_url, globant_landing)
    with dg.instance_for_test() as instance:
        years = dg.materialize([hiring_years], instance=instance, resources=defs.resources)
        assert metadata_of(years, "hiring_years")["years_added"] == ["2021", "2022"]
        assert instance.get_dynamic_partitions(hiring_year_partitions.name) == ["2021", "2022"]

        result = defs.resolve_job_def("metrics_job").execute_in_process(instance=instance, partition_key="2021")
        assert result.success

    quarterly = metadata_of(result, "quarterly_hires")
    assert quarterly["dagster/row_count"] == 933
    assert [quarterly[q] for q in ("q1", "q2", "q3", "q4")] == REFERENCE_QUARTER_TOTALS
    assert (quarterly["hires"], quarterly["departments_hiring"]) == (1643, 12)
    assert quarterly["chart"].startswith("![hires per quarter by department, 2021](data:image/png;base64,")
    above = metadata_of(result, "departments_above_mean_hires")
    assert (above["dagster/row_count"], above["mean_hired"], above["departments_hiring"]) == (7, 136.9167, 12)
    assert (above["departments_above_mean"], above["hires"]) == (7, 1643)
    assert "| Support" in above["table"]

    # The per-year numbers are numeric metadata, which the asset's Plots tab draws across partitions.
    numbers = {
        "quarterly_hires": (
            "year",
            "dagster/row_count",
            "hires",
            "q1",
            "q2",
            "q3",
            "q4",
            "departments_hiring",
            "jobs_hiring",
            "source_files",
        ),
        "departments_above_mean_hires": (
            "year",
            "dagster/row_count",
            "departments_above_mean",
            "departments_hiring",
            "hires",
            "source_files",
        ),
    }
    for asset, keys in numbers.items():
        entries = metadata_entries_of(result, asset)
        assert all(isinstance(entries[key], dg.IntMetadataValue) for key in keys), {k: type(entries[k]) for k in keys}
    assert isinstance(metadata_entries_of(result, "departments_above_mean_hires")["mean_hired"], dg.FloatMetadataValue)

    # Which loads fed the numbers: the three real files, by name and sha256.
    for asset in ("quarterly_hires", "departments_above_mean_hires", "hiring_dashboard"):
        sources = metadata_entries_of(result, asset)
        assert file_sources(sources) == real_files("departments", "jobs", "hired_employees"), asset
        assert isinstance(sources["data_loaded_at"], dg.TimestampMetadataValue)
        assert (sources["source_files"].value, sources["source_api_batches"].value) == (3, 0)

    checks = check_evaluations(result)
    assert set(checks) == {QUARTER_TOTALS_CHECK, ABOVE_MEAN_CHECK}
    assert all(c.passed for c in checks.values())
    assert checks[QUARTER_TOTALS_CHECK].metadata["hires_in_year"].value == 1643

    reports = globant_landing.reports
    published = pd.read_csv(metrics.quarterly_hires_csv_path(reports, 2021))
    pd.testing.assert_frame_equal(published, metrics.quarterly_hires(engine, 2021), check_dtype=False)
    above_csv = pd.read_csv(metrics.departments_above_mean_csv_path(reports, 2021))
    assert list(above_csv.itertuples(index=False, name=None)) == REFERENCE_ABOVE_MEAN
    assert list(metrics.stored_quarter_totals(engine, 2021).values()) == REFERENCE_QUARTER_TOTALS
    assert "Support" in dashboard_path(reports).read_text()
    board = metadata_of(result, "hiring_dashboard")
    assert (board["rows_rejected_all_loads"], board["years"], board["hires"]) == (70, [2021, 2022], 1929)


def test_a_year_without_hires_materializes_empty_and_passes_its_checks(sqlite_url, folders):
    defs = pipeline_definitions(sqlite_url, folders)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(hiring_year_partitions.name, ["1999"])
        result = defs.resolve_job_def("metrics_job").execute_in_process(instance=instance, partition_key="1999")
    assert result.success
    assert metadata_of(result, "quarterly_hires")["dagster/row_count"] == 0
    assert "mean_hired" not in metadata_of(result, "departments_above_mean_hires")  # no hires, no mean: a gap in the plot
    assert all(c.passed for c in check_evaluations(result).values())
    assert metrics.quarterly_hires_csv_path(folders.reports, 1999).read_text().strip() == "department,job,Q1,Q2,Q3,Q4"
    assert "No hires in any year yet." in dashboard_path(folders.reports).read_text()  # the dashboard covers the years with hires


def test_the_checks_fail_on_numbers_that_do_not_add_up(engine, globant_landing):
    ingest_landing(engine, globant_landing, run_id="load")
    metrics.ensure_metric_tables(engine)
    at = datetime.now(UTC)
    frame = metrics.quarterly_hires_by_id(engine, 2021)
    frame.loc[0, "Q1"] += 5  # five hires that hired_employees does not have
    metrics.store_quarterly_hires(engine, 2021, frame, at)
    result = check_quarter_totals(engine, 2021)
    assert not result.passed and result.metadata["difference"].value == 5

    above, mean = metrics.departments_above_mean(engine, 2021)
    below = pd.DataFrame([{"id": 1, "department": "Product Management", "hired": 48}])
    metrics.store_departments_above_mean(engine, 2021, pd.concat([above, below]), mean, at)
    result = check_above_mean(engine, 2021)
    assert not result.passed
    assert result.metadata["not_above_mean_count"].value == 1
    assert result.metadata["not_above_mean"].value[0]["department"] == "Product Management"


def test_automation_refreshes_every_known_year_after_a_load_and_adds_new_years(sqlite_url, folders):
    defs = pipeline_definitions(sqlite_url, folders)
    (folders.landing / "departments.csv").write_text("1,Alpha\n")
    (folders.landing / "jobs.csv").write_text("1,Analyst\n")
    (folders.landing / "hired_employees.csv").write_text("1,Ana,2021-02-01T00:00:00Z,1,1\n2,Ben,2021-07-01T00:00:00Z,1,1\n")
    with dg.instance_for_test() as instance:
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert tick.total_requested == 0  # nothing loaded yet: the metrics wait for their tables

        assert defs.resolve_job_def("migrate_job").execute_in_process(instance=instance).success
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.get_requested_partitions(dg.AssetKey("hiring_years")) == {None}
        assert not any(check_requested(tick, key) for key in blocking_check_keys)  # the load's run checked them

        dg.materialize([hiring_years], instance=instance, resources=defs.resources)
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        for key in METRIC_KEYS:
            assert tick.get_requested_partitions(key) == {"2021"}, key
        assert not tick.get_requested_partitions(DASHBOARD)  # not while a year is about to be recomputed
        assert defs.resolve_job_def("metrics_job").execute_in_process(instance=instance, partition_key="2021").success
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.total_requested == 0  # up to date: nothing asked twice

        (folders.landing / "hired_employees_more.csv").write_text("3,Cy,2023-01-01T00:00:00Z,1,1\n")
        assert defs.resolve_job_def("migrate_job").execute_in_process(instance=instance).success
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.get_requested_partitions(dg.AssetKey("hiring_years")) == {None}
        assert tick.get_requested_partitions(dg.AssetKey("quarterly_hires")) == {"2021"}  # every known year

        years = dg.materialize([hiring_years], instance=instance, resources=defs.resources)
        assert metadata_of(years, "hiring_years")["years_added"] == ["2023"]
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        for key in METRIC_KEYS:
            assert tick.get_requested_partitions(key) == {"2023"}, key  # the new year only: hiring_years updating is no reason

        metric_assets = [a for a in metrics_assets if a.key in METRIC_KEYS]
        for year in ("2021", "2023"):  # as the automation's runs would
            dg.materialize(metric_assets, partition_key=year, instance=instance, resources=defs.resources)
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.get_requested_partitions(DASHBOARD) == {None}  # once, after every year settled
        assert tick.total_requested == 1


def test_blocking_checks_hold_back_the_metrics_while_a_table_is_broken(sqlite_url, engine, folders):
    """A department without a name (written around the pipeline) fails `matches_dictionary`: in
    the same run nothing downstream of `departments` runs, and automation computes no metric
    until the check passes again; a write from outside a run waits for the checks first."""
    defs = pipeline_definitions(sqlite_url, folders)
    (folders.landing / "departments.csv").write_text("1,Alpha\n")
    (folders.landing / "jobs.csv").write_text("1,Analyst\n")
    (folders.landing / "hired_employees.csv").write_text("1,Ana,2021-02-01T00:00:00Z,1,1\n")
    check_run = dg.define_asset_job("checks", selection=dg.AssetSelection.checks(*blocking_check_keys))
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("migrate_job").execute_in_process(instance=instance).success
        dg.materialize([hiring_years], instance=instance, resources=defs.resources)
        assert defs.resolve_job_def("metrics_job").execute_in_process(instance=instance, partition_key="2021").success
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)

        with sa.create_engine(sqlite_url).begin() as conn:
            conn.execute(sa.text("INSERT INTO departments (id, department) VALUES (2, '')"))
        (folders.landing / "hired_employees_more.csv").write_text("2,Ben,2021-05-01T00:00:00Z,1,1\n")
        everything = dg.materialize(
            [landing_files, *table_assets, *table_checks, hiring_years],
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
        )
        assert not everything.success
        evaluations = [e.event_specific_data for e in everything.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        failed = {e.asset_check_key for e in evaluations if not e.passed}
        assert failed & set(blocking_check_keys) == {dg.AssetCheckKey(dg.AssetKey("departments"), "matches_dictionary")}
        materialized = {e.asset_key.to_user_string() for e in everything.get_asset_materialization_events()}
        assert materialized == {"landing_files", "departments", "jobs"}  # not hired_employees, not hiring_years
        assert (folders.landing / "hired_employees_more.csv").exists()  # left for the run after the fix

        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert not any(tick.get_requested_partitions(key) for key in [*METRIC_KEYS, dg.AssetKey("hiring_years")])

        with sa.create_engine(sqlite_url).begin() as conn:
            conn.execute(sa.text("UPDATE departments SET department = 'Beta' WHERE id = 2"))
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="departments"))  # as an API write reports it
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert check_requested(tick, dg.AssetCheckKey(dg.AssetKey("departments"), "matches_dictionary"))
        assert not any(tick.get_requested_partitions(key) for key in METRIC_KEYS)  # not before the check passed

        checks = dg.Definitions.merge(defs, dg.Definitions(jobs=[check_run])).resolve_job_def("checks")
        assert checks.execute_in_process(instance=instance).success
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        for key in METRIC_KEYS:
            assert tick.get_requested_partitions(key) == {"2021"}, key


def test_a_partition_that_is_not_a_hiring_year_fails_with_a_clear_message(sqlite_url, folders):
    defs = pipeline_definitions(sqlite_url, folders)
    with dg.instance_for_test() as instance:
        for key in ("not-a-year", "1850"):
            instance.add_dynamic_partitions(hiring_year_partitions.name, [key])
            result = defs.resolve_job_def("metrics_job").execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
            assert not result.success
            failures = [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            # Both metrics fail with the reason; the dashboard downstream of them does not run.
            assert len(failures) == 2 and all(f"hiring_year partition {key!r}" in message for message in failures), failures
            assert not result.asset_materializations_for_node("hiring_dashboard")


def test_the_code_location_wires_the_metrics():
    graph = defs.resolve_asset_graph()
    metric_assets = {"hiring_years", "quarterly_hires", "departments_above_mean_hires", "hiring_dashboard"}
    assert {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).group_name == "metrics"} == metric_assets
    for name in ("quarterly_hires", "departments_above_mean_hires"):
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def == hiring_year_partitions
        assert node.automation_condition is not None and node.description
        # Drawn downstream of the tables and of hiring_years, which makes their partitions.
        assert {dg.AssetKey(t) for t in ("departments", "jobs", "hired_employees", "hiring_years")} <= node.parent_keys
    dashboard = graph.get(DASHBOARD)
    assert dashboard.partitions_def is None and set(METRIC_KEYS) <= dashboard.parent_keys
    assert defs.resolve_job_def("metrics_job").partitions_def == hiring_year_partitions
    sensor = defs.resolve_sensor_def("metrics_automation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert {key.to_user_string() for key in sensor.asset_selection.resolve(graph)} == metric_assets
    # It also runs the tables' blocking checks after writes made outside a run.
    assert set(blocking_check_keys) <= sensor.asset_selection.resolve_checks(graph)
