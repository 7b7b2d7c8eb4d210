"""The whole code location loads, and every job, sensor and schedule resolves."""

import dagster as dg

from gdx_pipeline.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_every_job_sensor_and_schedule_resolves():
    repository = defs.get_repository_def()
    assert "migrate_job" in {job.name for job in repository.get_all_jobs()}
    for job in repository.get_all_jobs():
        assert job.name
    for sensor in repository.sensor_defs:
        # An automation sensor targets assets, not a job.
        assert not sensor.has_jobs or repository.has_job(sensor.job_name)
    for schedule in repository.schedule_defs:
        assert repository.has_job(schedule.job_name)
    assert {s.name for s in repository.sensor_defs} >= {"landing_files_sensor"}


def test_table_assets_carry_the_dictionary_and_checks():
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    for name in ("departments", "jobs", "hired_employees"):
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "ingest"
        assert node.description
        schema = node.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns][0] == "id"
    check_names = {key.name for key in graph.asset_check_keys if key.asset_key == dg.AssetKey("hired_employees")}
    assert {"no_orphans", "ids_unique", "matches_dictionary", "counts_match_ledger", "landing_files_readable"} <= check_names
