"""The PostgreSQL bulk path: keys, indexes and foreign keys dropped for a big batch come back,
and nothing of it leaks into the DDL other warehouses get later in the same process."""

import shutil

import pytest
import sqlalchemy as sa

from gdx_pipeline.core import staged_writes
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.sample_data import generate_globant_files
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine, data_tables, indexes_on
from gdx_pipeline_tests.warehouse_contents import table_count


def structures(engine: sa.Engine, table: str) -> tuple[set[str], set[str]]:
    inspector = sa.inspect(engine)
    indexes = {i["name"] for i in inspector.get_indexes(table)}
    constraints = {fk["name"] for fk in inspector.get_foreign_keys(table)} | {inspector.get_pk_constraint(table)["name"]}
    return indexes, constraints


@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")  # SQLite's year index
def test_bulk_loads_rebuild_every_key_and_index_and_leave_the_ddl_alone(postgres_url, folders, tmp_path, monkeypatch):
    monkeypatch.setattr(staged_writes, "BULK_ROWS", 50)  # the bulk path, on a test-sized file
    engine = create_warehouse_engine(postgres_url)
    create_schema(engine)
    expected = structures(engine, "hired_employees")
    table = data_tables["hired_employees"]
    assert expected == (
        {i.name for i in indexes_on(table, "postgresql")},
        {c.name for c in table.foreign_key_constraints} | {"pk_hired_employees"},
    )
    assert "ix_hired_employees_year" not in expected[0]  # SQLite's index only

    summary = generate_globant_files(tmp_path / "first", 3_000, dirty_share=0.02, seed=5)
    for path in (tmp_path / "first").iterdir():
        shutil.copy(path, folders.landing / path.name)
    first = ingest_landing(engine, folders)[-1]  # empty table: straight into the bare table
    assert first.counts.inserted == 3_000 - summary.dirty
    assert structures(engine, "hired_employees") == expected

    generate_globant_files(tmp_path / "second", 3_500, dirty_share=0.02, seed=6, prefix="again_")
    shutil.copy(tmp_path / "second" / "again_hired_employees.csv", folders.landing / "hired_employees_again.csv")
    second = ingest_landing(engine, folders)[-1]  # non-empty table: staged upsert, keys dropped around it
    assert second.counts.inserted + second.counts.updated + second.counts.unchanged == table_count(engine, "hired_employees") - (
        first.counts.inserted - second.counts.updated - second.counts.unchanged
    )
    assert second.counts.updated > 0
    assert structures(engine, "hired_employees") == expected
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(table.insert().values(id=10**6, name="Orphan", datetime=sa.func.now(), department_id=999, job_id=1))

    # A warehouse created afterwards in the same process still gets its keys.
    sqlite = create_warehouse_engine(f"sqlite:///{tmp_path / 'after.sqlite'}")
    create_schema(sqlite)
    assert structures(sqlite, "hired_employees")[1] >= {"pk_hired_employees"} | {c.name for c in table.foreign_key_constraints}
