"""backup_job, restore_table_job, restore_snapshot_job and nightly_backup_schedule through
Dagster, on SQLite and PostgreSQL: materializations, checks, refusals, schedule and settings."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from gdx_pipeline.core.backups import BACKUP_TABLES, backup_tables, list_backups
from gdx_pipeline.core.folders import DataFolders
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine, data_tables
from gdx_pipeline.defs.backups.assets import backup_asset_key, backup_assets
from gdx_pipeline.defs.backups.checks import backup_checks, latest_backup_result
from gdx_pipeline.defs.backups.jobs import backup_job, restore_snapshot_job, restore_snapshot_op, restore_table_job, restore_table_op
from gdx_pipeline.defs.backups.resources import BackupSettingsError, BackupSettingsResource, backup_settings_from_environment
from gdx_pipeline.defs.backups.schedules import build_nightly_backup_schedule, nightly_backup_schedule
from gdx_pipeline.defs.ingest.assets import landing_files, quarantined_files, rejected_rows, table_assets
from gdx_pipeline.defs.ingest.checks import table_checks
from gdx_pipeline.defs.resources import DataFolderResource, WarehouseResource
from gdx_pipeline_tests.defs.runs import run
from gdx_pipeline_tests.warehouse_contents import all_tables, table_count

table_checks_job = dg.define_asset_job("table_checks_job", selection=dg.AssetSelection.checks(*table_checks))


def pipeline(database_url, folders, retention: int = 14) -> dg.Definitions:
    data = DataFolderResource(data_dir=str(folders.root))
    return dg.Definitions(
        assets=[landing_files, *table_assets, rejected_rows, quarantined_files, *backup_assets],
        asset_checks=[*table_checks, *backup_checks],
        jobs=[backup_job, restore_table_job, restore_snapshot_job, table_checks_job],
        schedules=[nightly_backup_schedule],
        resources={
            "data_folder": data,
            "warehouse": WarehouseResource(data=data, database_url=database_url),
            "backup_settings": BackupSettingsResource(retention=retention),
        },
    )


def check_results(result) -> dict[tuple[str, str], bool]:
    evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return {(e.asset_check_key.asset_key.to_user_string(), e.asset_check_key.name): e.passed for e in evaluations}


def failure_message(result) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.event_specific_data.error.message


def test_backup_and_restore_jobs(database_url, engine, globant_landing):
    defs = pipeline(database_url, globant_landing, retention=1)
    ingest_landing(engine, globant_landing, run_id="load")
    with dg.instance_for_test() as instance:
        loaded = all_tables(engine)

        backup = run(defs, "backup_job", instance)
        assert backup.success
        for table in BACKUP_TABLES:
            (event,) = [m for m in backup.asset_materializations_for_node("table_backups") if m.asset_key == backup_asset_key(table)]
            metadata = {k: v.value for k, v in event.metadata.items()}
            assert metadata["rows"] == len(loaded[table])
            assert metadata["file"].endswith(list_backups(globant_landing, table)[0].name)
            assert {"bytes", "sha256", "duration_seconds", "snapshot_id"} <= set(metadata)
        checks = check_results(backup)
        assert len(checks) == 2 * len(BACKUP_TABLES) and all(checks.values()), checks

        employees = data_tables["hired_employees"]
        with engine.begin() as conn:
            conn.execute(employees.delete().where(employees.c.id > 100))

        restored = run(
            defs, "restore_table_job", instance, {"ops": {"restore_table": {"config": {"table": "hired_employees", "backup": "latest"}}}}
        )
        assert restored.success
        assert all_tables(engine) == loaded
        (materialization,) = [
            e.event_specific_data.materialization for e in restored.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
        ]
        assert materialization.asset_key == dg.AssetKey("hired_employees")
        assert materialization.metadata["restored_from"].value == list_backups(globant_landing, "hired_employees")[0].name
        assert materialization.metadata["rows"].value == len(loaded["hired_employees"])
        latest = instance.get_latest_materialization_event(dg.AssetKey("hired_employees"))
        assert latest.run_id == restored.run_id, "the asset's history shows the restore"

        # After the restore every table check is green, counts_match_ledger included.
        verified = run(defs, "table_checks_job", instance)
        assert verified.success
        assert all(check_results(verified).values()), check_results(verified)

        snapshot = run(defs, "restore_snapshot_job", instance, {"ops": {"restore_snapshot": {"config": {"snapshot": "latest"}}}})
        assert snapshot.success
        restored_keys = {
            e.event_specific_data.materialization.asset_key for e in snapshot.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
        }
        assert restored_keys == {dg.AssetKey(t) for t in BACKUP_TABLES}

        assert run(defs, "backup_job", instance).success
        assert all(len(list_backups(globant_landing, t)) == 1 for t in BACKUP_TABLES), "retention from the settings resource"


def test_refused_restore_fails_the_run_with_the_reason(sqlite_url, globant_landing):
    """Refusals themselves are tested on both engines in test_restore.py; here, how a run reports them."""
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    ingest_landing(engine, globant_landing, run_id="load")
    backup_tables(engine, globant_landing)
    defs = pipeline(sqlite_url, globant_landing)
    with dg.instance_for_test() as instance:
        before = all_tables(engine)
        result = run(
            defs,
            "restore_table_job",
            instance,
            {"ops": {"restore_table": {"config": {"table": "hired_employees", "backup": "../../etc/passwd"}}}},
        )
        assert not result.success
        assert "not a plain backup file name" in failure_message(result)

        path = list_backups(globant_landing, "jobs")[0].path
        path.write_bytes(path.read_bytes()[:-10])
        result = run(defs, "restore_table_job", instance, {"ops": {"restore_table": {"config": {"table": "jobs"}}}})
        assert not result.success
        assert "the table is unchanged" in failure_message(result)
        assert all_tables(engine) == before
        assert not latest_backup_result(globant_landing, "jobs").passed, "the check sees the damaged backup too"
        assert latest_backup_result(globant_landing, "departments").passed


def test_the_launchpad_offers_the_tables_as_a_list():
    fields = restore_table_op.config_schema.config_type.fields
    table = fields["table"].config_type
    assert isinstance(table, dg.Enum)
    assert [value.config_value for value in table.enum_values] == list(BACKUP_TABLES)
    assert fields["table"].is_required
    assert fields["backup"].default_value == "latest"
    assert restore_snapshot_op.config_schema.config_type.fields["snapshot"].default_value == "latest"
    job = pipeline("sqlite://", DataFolders(Path("unused"))).resolve_job_def("restore_table_job")
    assert dg.validate_run_config(job, {"ops": {"restore_table": {"config": {"table": "jobs"}}}})
    with pytest.raises(dg.DagsterInvalidConfigError, match="not in enum type BackupTableName got employees"):
        dg.validate_run_config(job, {"ops": {"restore_table": {"config": {"table": "employees"}}}})


def _metadata(result, table: str) -> dict[str, object]:
    (event,) = [m for m in result.asset_materializations_for_node("table_backups") if m.asset_key == backup_asset_key(table)]
    return {key: value.value for key, value in event.metadata.items()}


def test_backups_are_listed_with_run_configs_to_paste(sqlite_url, globant_landing):
    """Each backup materialization lists the backups on disk (after retention) and configs that
    restore_table_job and restore_snapshot_job accept as they are."""
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    ingest_landing(engine, globant_landing, run_id="load")
    defs = pipeline(sqlite_url, globant_landing, retention=2)
    with dg.instance_for_test() as instance:
        for _ in range(3):
            backup = run(defs, "backup_job", instance)
            assert backup.success
        for table in BACKUP_TABLES:
            metadata = _metadata(backup, table)
            listed = list_backups(globant_landing, table)
            records = [record.data for record in metadata["backups_on_disk"].records]
            assert [r["file"] for r in records] == [b.name for b in listed] and len(listed) == 2, "as on disk after retention"
            assert records[0] == {
                "file": listed[0].name, "snapshot_id": listed[0].snapshot_id, "snapshot_tables": ", ".join(BACKUP_TABLES),
                "rows": listed[0].rows, "created": listed[0].created.isoformat(),
            }
            assert metadata["restore_this_backup"] == {"ops": {"restore_table": {"config": {"table": table, "backup": listed[0].name}}}}
            assert metadata["restore_this_snapshot"] == {"ops": {"restore_snapshot": {"config": {"snapshot": listed[0].snapshot_id}}}}

        employees = data_tables["hired_employees"]
        with engine.begin() as conn:
            conn.execute(employees.delete().where(employees.c.id > 100))
        older = [record.data["file"] for record in _metadata(backup, "hired_employees")["backups_on_disk"].records][1]
        pasted = {"ops": {"restore_table": {"config": {"table": "hired_employees", "backup": older}}}}
        restored = run(defs, "restore_table_job", instance, pasted)
        assert restored.success
        assert table_count(engine, "hired_employees") == 1929
        assert run(defs, "restore_snapshot_job", instance, _metadata(backup, "jobs")["restore_this_snapshot"]).success


def test_a_refused_restore_leads_with_its_reason(sqlite_url, globant_landing):
    """The failure's description is the refusal, its counts are metadata, and the run's log
    carries the reason on its own line before the failure and its stack."""
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    ingest_landing(engine, globant_landing, run_id="load")
    snapshot_id = backup_tables(engine, globant_landing)[0].snapshot_id
    list_backups(globant_landing, "jobs")[0].path.unlink()
    defs = pipeline(sqlite_url, globant_landing)
    with dg.instance_for_test() as instance:
        result = run(defs, "restore_snapshot_job", instance, {"ops": {"restore_snapshot": {"config": {"snapshot": snapshot_id}}}})
        entries = instance.all_logs(result.run_id)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    reason = failure.step_failure_data.user_failure_data.description
    assert reason.startswith(f"snapshot {snapshot_id} is incomplete") and "the backup of jobs is gone" in reason
    assert failure.step_failure_data.user_failure_data.metadata["missing_tables"].value == "jobs"
    assert failure.step_failure_data.error.message.splitlines()[0].endswith(reason)
    first_error = next(i for i, e in enumerate(entries) if e.level >= 40)
    assert (entries[first_error].is_dagster_event, entries[first_error].user_message) == (False, reason), "the reason comes first, alone"
    assert entries[first_error + 1].dagster_event.is_step_failure


def test_schedule_requests_a_valid_backup_run():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 3, 1, 2, 0, tzinfo=UTC))
    request = nightly_backup_schedule.evaluate_tick(context).run_requests[0]
    assert nightly_backup_schedule.job_name == "backup_job"
    assert nightly_backup_schedule.execution_timezone == "UTC"
    assert request.run_key == "nightly_backup:2024-03-01T02:00:00+00:00"
    assert request.tags["gdx/trigger"] == "nightly_backup_schedule"
    job = pipeline("sqlite://", DataFolders(Path("unused"))).resolve_job_def("backup_job")
    assert dg.validate_run_config(job, request.run_config) is not None


def test_schedule_and_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GDX_BACKUP_CRON", "30 3 * * 1-5")
    monkeypatch.setenv("GDX_BACKUP_RETENTION", "7")
    monkeypatch.setenv("GDX_BACKUP_CODEC", "null")
    settings = backup_settings_from_environment()
    assert (settings.cron, settings.retention, settings.codec) == ("30 3 * * 1-5", 7, "null")
    assert build_nightly_backup_schedule(settings).cron_schedule == "30 3 * * 1-5"
    monkeypatch.delenv("GDX_BACKUP_CRON")
    monkeypatch.delenv("GDX_BACKUP_RETENTION")
    monkeypatch.delenv("GDX_BACKUP_CODEC")
    defaults = backup_settings_from_environment()
    assert (defaults.cron, defaults.retention, defaults.codec) == ("0 2 * * *", 14, "deflate")


@pytest.mark.parametrize(
    "variable, value, match",
    [
        ("GDX_BACKUP_CRON", "every night", "not a cron expression"),
        ("GDX_BACKUP_CRON", "0 2 30 2 *", "not a cron expression"),  # parses as cron, but Dagster refuses 30 February
        ("GDX_BACKUP_CRON", "0 0 2 * * *", "not a cron expression"),  # six fields: seconds, which Dagster does not schedule
        ("GDX_BACKUP_RETENTION", "0", "at least 1"),
        ("GDX_BACKUP_RETENTION", "many", "at least 1"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(monkeypatch, variable, value, match):
    monkeypatch.setenv(variable, value)
    with pytest.raises(BackupSettingsError, match=match):
        backup_settings_from_environment()


def test_unavailable_codec_fails_the_backup_run_with_the_reason(sqlite_url, folders):
    data = DataFolderResource(data_dir=str(folders.root))
    defs = dg.Definitions(
        assets=backup_assets,
        jobs=[backup_job],
        resources={
            "data_folder": data,
            "warehouse": WarehouseResource(data=data, database_url=sqlite_url),
            "backup_settings": BackupSettingsResource(codec="brotli"),
        },
    )
    with dg.instance_for_test() as instance:
        result = run(defs, "backup_job", instance)
    assert not result.success
    assert "codec 'brotli' is not available here" in failure_message(result)
    assert not list(folders.backups.rglob("*.avro"))
