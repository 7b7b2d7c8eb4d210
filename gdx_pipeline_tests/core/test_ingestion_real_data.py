"""The challenge's real files, end to end through the core, on SQLite and PostgreSQL."""

import csv
from collections import Counter

import sqlalchemy as sa

from gdx_pipeline.core.ingestion import ingest_landing, reason_kind
from gdx_pipeline.core.warehouse import data_tables, ingestion_ledger, rejected_rows
from gdx_pipeline_tests.paths import GLOBANT_DATA
from gdx_pipeline_tests.warehouse_contents import table_count

EMPLOYEE_COLUMNS = ["id", "name", "datetime", "department_id", "job_id"]


def blank_fields_in_source() -> dict[int, list[str]]:
    """Line number -> the columns left blank, read straight from the real file."""
    blanks = {}
    with (GLOBANT_DATA / "hired_employees.csv").open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            missing = [column for column, value in zip(EMPLOYEE_COLUMNS, row) if not value.strip()]
            if missing:
                blanks[line] = missing
    return blanks


def table_snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        snapshot = {name: conn.execute(sa.select(table).order_by(table.c.id)).all() for name, table in data_tables.items()}
        snapshot["rejected_rows"] = conn.execute(
            sa.select(rejected_rows.c.table_name, rejected_rows.c.line_number, rejected_rows.c.raw_line).order_by(rejected_rows.c.id)
        ).all()
    return snapshot


def test_real_data_loads_every_valid_row_and_rejects_the_rest_with_reasons(engine, globant_landing):
    outcomes = ingest_landing(engine, globant_landing, run_id="run-1")

    assert [(o.file, o.status) for o in outcomes] == [
        ("departments.csv", "applied"),
        ("jobs.csv", "applied"),
        ("hired_employees.csv", "applied"),
    ]
    assert table_count(engine, "departments") == 12
    assert table_count(engine, "jobs") == 183
    assert table_count(engine, "hired_employees") == 1929
    assert table_count(engine, "rejected_rows") == 70

    blanks = blank_fields_in_source()
    assert len(blanks) == 70
    with engine.connect() as conn:
        rejected = conn.execute(
            sa.select(
                rejected_rows.c.line_number,
                rejected_rows.c.reasons,
                rejected_rows.c.raw_line,
                rejected_rows.c.source,
                rejected_rows.c.run_id,
            )
        ).all()
    by_line = {line: (reasons, raw, source, run_id) for line, reasons, raw, source, run_id in rejected}
    assert set(by_line) == set(blanks)
    source_lines = (GLOBANT_DATA / "hired_employees.csv").read_text(encoding="utf-8").splitlines()
    for line, (reasons, raw, source, run_id) in by_line.items():
        assert reasons == [f"{column}: missing" for column in blanks[line]]
        assert raw == source_lines[line - 1]
        assert (source, run_id) == ("hired_employees.csv", "run-1")
    kinds = Counter(reason_kind(r) for reasons, *_ in by_line.values() for r in reasons)
    assert kinds == {"department_id: missing": 21, "name: missing": 19, "job_id: missing": 16, "datetime: missing": 14}

    employees = outcomes[2]
    assert employees.rows_read == 1999
    assert (employees.counts.inserted, employees.counts.updated, employees.rows_rejected) == (1929, 0, 70)
    assert dict(employees.rejects_by_reason) == dict(kinds)

    # Processed files moved, reject file beside them holds exactly the rejected raw lines.
    assert sorted(p.name for p in globant_landing.processed.iterdir()) == ["departments.csv", "hired_employees.csv", "jobs.csv"]
    assert list(globant_landing.landing.iterdir()) == []
    reject_file = globant_landing.rejects / employees.reject_file
    assert reject_file.read_text(encoding="utf-8").splitlines() == [source_lines[line - 1] for line in sorted(blanks)]


def test_hire_times_are_stored_in_utc(engine, globant_landing):
    ingest_landing(engine, globant_landing)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(data_tables["hired_employees"].c.datetime).where(data_tables["hired_employees"].c.id == 1)
        ).scalar_one()
    assert stored.replace(tzinfo=None).isoformat() == "2021-11-07T02:48:42"


def test_running_twice_changes_nothing(engine, globant_landing, folders):
    ingest_landing(engine, globant_landing, run_id="first")
    before = table_snapshot(engine)

    for name in ("departments.csv", "jobs.csv", "hired_employees.csv"):
        (globant_landing.landing / name).write_bytes((GLOBANT_DATA / name).read_bytes())
    outcomes = ingest_landing(engine, globant_landing, run_id="second")

    assert [o.status for o in outcomes] == ["skipped"] * 3
    assert table_snapshot(engine) == before
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ingestion_ledger)).scalar_one() == 3
    assert list(globant_landing.landing.iterdir()) == []
