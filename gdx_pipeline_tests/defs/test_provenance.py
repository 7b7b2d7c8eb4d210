"""Which loads fed the warehouse, read back from the ingestion ledger (SQLite and PostgreSQL):
files by name and sha256, API batches summed per table, restores; and the same in each table
asset's materialization metadata, up to that load."""

import hashlib

import dagster as dg

from gdx_pipeline.core.backups import backup_tables, restore_table
from gdx_pipeline.core.batches import apply_batch, block_from_mappings
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.provenance import read_provenance
from gdx_pipeline.dictionary import TABLES
from gdx_pipeline_tests.defs.runs import file_sources, metadata_of, pipeline_definitions, real_files
from gdx_pipeline_tests.paths import GLOBANT_DATA

EMPLOYEES = TABLES["hired_employees"]


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def api_batch(engine, rows: list[dict], request_id: str):
    return apply_batch(engine, EMPLOYEES, block_from_mappings(EMPLOYEES, rows), request_id=request_id)


def test_the_ledger_says_which_files_batches_and_restores_fed_each_table(engine, globant_landing):
    assert read_provenance(engine, TABLES).is_empty
    ingest_landing(engine, globant_landing, run_id="load")
    provenance = read_provenance(engine, TABLES)
    assert {(f.table, f.file, f.sha256) for f in provenance.files} == {
        (t, f"{t}.csv", sha256_of(GLOBANT_DATA / f"{t}.csv")) for t in TABLES
    }
    employees = next(f for f in provenance.files if f.table == "hired_employees")
    assert (employees.rows_read, employees.rows_inserted, employees.rows_rejected) == (1999, 1929, 70)
    assert employees.sha256_prefix == employees.sha256[:12] and employees.run_id == "load"
    assert provenance.loaded_at == max(f.loaded_at for f in provenance.files) and provenance.loaded_at.tzinfo is not None

    api_batch(engine, [{"id": 5001, "name": "Ann", "datetime": "2021-05-01T00:00:00Z", "department_id": 1, "job_id": 1}], "r1")
    api_batch(engine, [{"id": 5002, "name": "Bo", "datetime": "2021-06-01T00:00:00Z", "department_id": 1, "job_id": 1}, {"id": "x"}], "r2")
    (batches,) = read_provenance(engine, ["hired_employees"]).batches
    assert (batches.table, batches.source, batches.batches, batches.rows_read, batches.rows_inserted, batches.rows_rejected) == (
        "hired_employees", "api", 2, 3, 2, 1
    )
    assert batches.first_at <= batches.last_at
    assert read_provenance(engine, ["departments"]).batches == ()  # scoped to the tables asked for

    (backup,) = backup_tables(engine, globant_landing, ["jobs"])
    restore_table(engine, globant_landing, "jobs", backup.path.name)
    (restore,) = read_provenance(engine, TABLES).restores
    assert (restore.table, restore.backup, restore.rows) == ("jobs", backup.path.name, 183)
    assert read_provenance(engine, TABLES).loaded_at == restore.restored_at


def test_older_files_are_counted_not_listed(engine, folders):
    for index in range(5):
        (folders.landing / f"departments_{index}.csv").write_text(f"{index + 1},Dept {index}\n")
    ingest_landing(engine, folders, run_id="many")
    provenance = read_provenance(engine, ["departments"], newest_files=2)
    assert len(provenance.files) == 2 and provenance.older_files == 3 and provenance.file_count == 5
    assert provenance.older_file_rows == 3
    assert [f.loaded_at for f in provenance.files] == sorted((f.loaded_at for f in provenance.files), reverse=True)


def test_each_table_asset_lists_the_loads_that_fed_it(database_url, engine, globant_landing):
    defs = pipeline_definitions(database_url, globant_landing)
    with dg.instance_for_test() as instance:
        first = defs.resolve_job_def("migrate_job").execute_in_process(instance=instance)
        for table in TABLES:
            assert file_sources(metadata_of(first, table)) == real_files(table), table

        api_batch(engine, [{"id": 5001, "name": "Ann", "datetime": "2021-05-01T00:00:00Z", "department_id": 1, "job_id": 1}], "r1")
        (globant_landing.landing / "hired_employees_more.csv").write_text("5002,Bo,2021-06-01T00:00:00Z,1,1\n")
        second = defs.resolve_job_def("migrate_job").execute_in_process(instance=instance)
    employees = metadata_of(second, "hired_employees")
    more = ("hired_employees", "hired_employees_more.csv", sha256_of(globant_landing.processed / "hired_employees_more.csv")[:12])
    assert file_sources(employees) == real_files("hired_employees") | {more}
    assert employees["sources"].records[0].data["source"] == "hired_employees_more.csv"  # newest first
    assert (employees["source_files"], employees["source_api_batches"]) == (2, 1)
    api = [r.data for r in employees["sources"].records if r.data["kind"] == "api"]
    assert [(r["table"], r["loads"], r["rows_loaded"]) for r in api] == [("hired_employees", 1, 1)]
